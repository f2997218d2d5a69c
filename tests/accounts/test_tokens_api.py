"""Access and refresh tokens: rotation, revocation, reuse."""

from __future__ import annotations

import pytest

from accounts.models import User
from tests.accounts.helpers import bearer, log_in

pytestmark = pytest.mark.django_db

REFRESH = "/api/v1/auth/token/refresh/"
LOGOUT = "/api/v1/auth/logout/"


def test_the_access_token_opens_the_profile(api) -> None:
    tokens = log_in(api)
    response = bearer(api, tokens["access"]).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["phone"] == "138****8000"


def test_without_a_token_the_profile_is_401(api) -> None:
    response = api.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
def test_a_forged_token_is_401(api, token) -> None:
    response = bearer(api, token).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_refresh_rotates_the_pair(api) -> None:
    tokens = log_in(api)
    response = api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 200
    pair = response.json()
    assert set(pair) == {"access", "refresh"}
    assert pair["refresh"] != tokens["refresh"]
    assert bearer(api, pair["access"]).get("/api/v1/me/").status_code == 200


def test_a_used_refresh_token_is_refused(api) -> None:
    tokens = log_in(api)
    api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    again = api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401
    assert again.json()["code"] == "token_invalid"


def test_reusing_a_refresh_token_ends_every_session_of_the_account(api) -> None:
    """A replayed refresh token means it leaked: the thief's and the owner's
    newer tokens stop working alike."""
    tokens = log_in(api)
    newer = api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json").json()
    api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")  # the replay
    response = api.post(REFRESH, {"refresh": newer["refresh"]}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_an_access_token_is_not_a_refresh_token(api) -> None:
    tokens = log_in(api)
    response = api.post(REFRESH, {"refresh": tokens["access"]}, format="json")
    assert response.status_code == 401


def test_logout_revokes_the_refresh_token(api) -> None:
    tokens = log_in(api)
    assert api.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json").status_code == 204
    response = api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_logout_with_a_bad_token_is_401(api) -> None:
    response = api.post(LOGOUT, {"refresh": "nonsense"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_a_closed_account_loses_its_tokens_at_once(api) -> None:
    tokens = log_in(api)
    assert bearer(api, tokens["access"]).delete("/api/v1/me/").status_code == 204
    me = bearer(api, tokens["access"]).get("/api/v1/me/")
    assert me.status_code == 401
    assert me.json()["code"] == "account_inactive"
    api.credentials()
    refresh = api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert refresh.status_code == 401


def test_a_suspended_account_cannot_refresh(api, operator) -> None:
    from accounts.citizens import user_set_active
    from accounts.models import User

    tokens = log_in(api)
    user = User.objects.get(phone="13800138000")
    user_set_active(user=user, active=False, actor=operator)
    assert bearer(api, tokens["access"]).get("/api/v1/me/").status_code == 401
    api.credentials()
    assert api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json").status_code == 401


def test_suspension_and_reinstatement_record_when(operator) -> None:
    from accounts.citizens import account_close, user_set_active
    from accounts.models import User
    from tests.accounts.factories import CitizenFactory

    user = CitizenFactory()
    user_set_active(user=user, active=False, actor=operator)
    assert User.objects.get(pk=user.pk).deactivated_at is not None
    user_set_active(user=user, active=True, actor=operator)
    assert User.objects.get(pk=user.pk).deactivated_at is None
    account_close(user=user)
    closed = User.objects.get(pk=user.pk)
    assert closed.deactivated_at == closed.closed_at


def has_chinese(text: str) -> bool:
    return any("\u4e00" <= char <= "\u9fff" for char in text)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer garbage", "token_invalid"),
        ("Bearer", "authentication_failed"),
        ("Bearer a b", "authentication_failed"),
    ],
)
def test_a_refused_token_is_told_in_chinese_by_default(api, header, code) -> None:
    api.credentials(HTTP_AUTHORIZATION=header)
    response = api.get("/api/v1/me/")
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == code
    assert has_chinese(body["detail"]), body
    assert body["detail"] == body["title"]


def test_a_suspended_accounts_token_is_told_in_chinese_by_default(api, citizen) -> None:
    tokens = log_in(api, citizen.phone)
    User.objects.filter(pk=citizen.pk).update(is_active=False)
    response = bearer(api, tokens["access"]).get("/api/v1/me/")
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "account_inactive"
    assert has_chinese(body["detail"]), body


@pytest.mark.parametrize("header", ["Bearer garbage", "Bearer"])
def test_a_refused_token_is_told_in_english_when_asked(api, header) -> None:
    api.credentials(HTTP_AUTHORIZATION=header)
    body = api.get("/api/v1/me/", HTTP_ACCEPT_LANGUAGE="en").json()
    assert not has_chinese(body["detail"]) and body["detail"] == body["title"]

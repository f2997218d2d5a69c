"""Star-code issuance takes the citizen from the access token, which vouches
for subject and level, unless the account changed since it was made."""

from __future__ import annotations

import json
from typing import Any

import pytest

from accounts import citizens, token_facts
from accounts.models import IdentityLevel, User
from accounts.tokens import CitizenRefreshToken, tokens_issue
from qr import codes
from tests.accounts.factories import make_id_number

pytestmark = pytest.mark.django_db
integration = pytest.mark.integration

URL = "/api/v1/me/star-code/"


def client(user: User, access: str | None = None):
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access or tokens_issue(user=user)['access']}")
    return api


def claims_of(response) -> dict[str, Any]:
    """The code's claims (read without its signature: the star-code tests
    check signatures)."""
    assert response.status_code == 200, response.content
    text = response.json()["code"]
    return json.loads(codes.b64url_decode(text[len(codes.PREFIX) :].split(".")[1]))


@integration
def test_issuance_asks_the_database_nothing(
    citizen, other_citizen, django_assert_num_queries
) -> None:
    client(other_citizen).get(URL)  # the installation's first key is made on first use
    api = client(citizen)
    with django_assert_num_queries(0):
        claims = claims_of(api.get(URL))
    assert claims["sub"] == citizen.subject and claims["lvl"] == IdentityLevel.REAL_NAME


@integration
def test_a_token_without_facts_reads_the_row(citizen, django_assert_num_queries) -> None:
    bare = str(CitizenRefreshToken.for_user(citizen).access_token)
    with django_assert_num_queries(1):
        assert claims_of(client(citizen, bare).get(URL))["sub"] == citizen.subject


@integration
def test_suspension_shows_at_once(citizen, operator, django_capture_on_commit_callbacks) -> None:
    api = client(citizen)
    assert api.get(URL).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        citizens.user_set_active(user=citizen, active=False, actor=operator)
    assert api.get(URL).status_code == 401


@integration
def test_closing_shows_at_once(citizen, django_capture_on_commit_callbacks) -> None:
    api = client(citizen)
    assert api.get(URL).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        citizens.account_close(user=citizen)
    assert api.get(URL).status_code == 401


@integration
def test_a_real_name_check_raises_the_level_at_once(new_citizen) -> None:
    api = client(new_citizen)
    assert claims_of(api.get(URL))["lvl"] == IdentityLevel.PHONE
    citizens.real_name_verify(user=new_citizen, name="李四", id_number=make_id_number(77))
    assert claims_of(api.get(URL))["lvl"] == IdentityLevel.REAL_NAME


@integration
def test_an_operator_cannot_delete_a_citizen_in_the_admin(citizen, operator_client) -> None:
    """Closing is the citizen's (test_closing_shows_at_once); the admin
    refuses to delete the row, which would skip the closing's rules."""
    api = client(citizen)
    assert api.get(URL).status_code == 200
    response = operator_client.post(f"/admin/accounts/user/{citizen.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert User.objects.filter(pk=citizen.pk).exists()
    assert api.get(URL).status_code == 200


@integration
def test_a_token_made_while_a_change_commits_is_not_trusted(
    citizen, django_capture_on_commit_callbacks, django_assert_num_queries
) -> None:
    """It may hold what was read before the change committed; a token made
    after the commit vouches again."""
    client(citizen).get(URL)  # the installation's first key is made on first use
    with django_capture_on_commit_callbacks(execute=True):
        token_facts.citizen_changed(citizen.pk)
        meanwhile = client(citizen)
    with django_assert_num_queries(1):
        assert meanwhile.get(URL).status_code == 200
    after = client(citizen)
    with django_assert_num_queries(0):
        assert after.get(URL).status_code == 200


@integration
def test_a_lost_generation_leaves_no_token_vouching(
    citizen, operator, django_assert_num_queries
) -> None:
    """Redis restarted without its data, or the key evicted: the row is read."""
    from config.redis_client import redis_client

    api = client(citizen)
    client(citizen).get(URL)  # the installation's first key is made on first use
    redis_client().delete(token_facts._key(citizen.pk))
    with django_assert_num_queries(1):
        assert api.get(URL).status_code == 200
    User.objects.filter(pk=citizen.pk).update(is_active=False)
    assert api.get(URL).status_code == 401


@integration
def test_a_change_redis_cannot_record_is_refused(citizen, operator, monkeypatch) -> None:
    """Suspending while Redis is away would leave tokens vouching: refused
    with a 503 instead, and the account stays as it was."""
    from accounts.errors import AccountsError

    class Away:
        def __getattr__(self, name: str) -> Any:
            raise ConnectionError("Redis is away")

    api = client(citizen)
    monkeypatch.setattr(token_facts, "redis_client", lambda: Away())
    with pytest.raises(AccountsError) as refused:
        citizens.user_set_active(user=citizen, active=False, actor=operator)
    assert refused.value.error.status == 503
    assert User.objects.get(pk=citizen.pk).is_active
    monkeypatch.undo()
    assert api.get(URL).status_code == 200


@integration
def test_with_redis_away_the_row_is_read(citizen, monkeypatch, django_assert_num_queries) -> None:
    class Away:
        def __getattr__(self, name: str) -> Any:
            raise ConnectionError("Redis is away")

    api = client(citizen)
    monkeypatch.setattr(token_facts, "redis_client", lambda: Away())
    with django_assert_num_queries(1):
        assert api.get(URL).status_code == 200
    User.objects.filter(pk=citizen.pk).update(is_active=False)
    assert api.get(URL).status_code == 401


def test_without_redis_tokens_vouch_for_nothing(
    citizen, settings, django_assert_num_queries
) -> None:
    settings.REDIS_URL = ""
    client(citizen).get(URL)  # the installation's first key is made on first use
    api = client(citizen)
    with django_assert_num_queries(1):
        assert api.get(URL).status_code == 200
    User.objects.filter(pk=citizen.pk).update(is_active=False)
    assert api.get(URL).status_code == 401


@integration
def test_other_views_always_read_the_row(citizen) -> None:
    api = client(citizen)
    User.objects.filter(pk=citizen.pk).update(is_active=False)
    assert api.get("/api/v1/me/").status_code == 401

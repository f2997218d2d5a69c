"""Star-code issuance in front of Django: the same answer as the view, for
the common case only; everything else takes the full cycle.

These tests call the project's real WSGI application (``config.wsgi``), the
one gunicorn serves; the test client would skip the fast path.
"""

from __future__ import annotations

import json
import re
from typing import Any
from unittest import mock

import pytest

from accounts import citizens, token_facts
from accounts.tokens import CitizenRefreshToken, tokens_issue
from qr import apis, codes, star_codes
from tests.wsgi import environ_for, wsgi_call

pytestmark = pytest.mark.django_db
integration = pytest.mark.integration

PATH = "/api/v1/me/star-code/"
LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$")


def wsgi(token: str | None, **extra: str) -> tuple[int, dict[str, str], bytes]:
    from config.wsgi import application

    if token is not None:
        extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {token}")
    return wsgi_call(
        application, environ_for(PATH, b"", "", REQUEST_METHOD="GET", CONTENT_LENGTH="", **extra)
    )


def vouching(user) -> str:
    """An access token as a login gives it."""
    return tokens_issue(user=user)["access"]


def plain(user) -> str:
    """An access token that vouches for nothing but the user id."""
    return str(CitizenRefreshToken.for_user(user).access_token)


@pytest.fixture
def view_calls():
    """The requests that reached the DRF view (the full cycle)."""
    calls: list[Any] = []
    original = apis.StarCodeView.get

    def spy(self, request):
        calls.append(request)
        return original(self, request)

    with mock.patch.object(apis.StarCodeView, "get", spy):
        yield calls


@pytest.fixture
def keyring(other_citizen) -> None:
    """The installation's first signing key, made by a first issuance."""
    assert wsgi(plain(other_citizen))[0] == 200


def payload(answer: dict[str, Any]) -> dict[str, Any]:
    """A code's claims, read without its signature (the scanner checks it below)."""
    text = answer["code"][len(codes.PREFIX) :]
    return json.loads(codes.b64url_decode(text.split(".")[1]))


def shape(body: bytes) -> dict[str, Any]:
    answer = json.loads(body)
    assert set(answer) == {"code", "expires_at", "refresh_after"}
    assert LOCAL_TIME.match(answer["expires_at"]) and LOCAL_TIME.match(answer["refresh_after"])
    return answer


@integration
def test_the_fast_path_answers_as_the_view(citizen, keyring, view_calls, api) -> None:
    fast = wsgi(vouching(citizen))
    assert view_calls == []
    full = wsgi(plain(citizen))
    assert len(view_calls) == 1
    assert fast[0] == full[0] == 200
    volatile = {"Content-Length"}
    assert {k: v for k, v in fast[1].items() if k not in volatile} == {
        k: v for k, v in full[1].items() if k not in volatile
    }
    fast_claims, full_claims = payload(shape(fast[2])), payload(shape(full[2]))
    volatile_claims = {"iat", "exp", "jti"}
    assert {k: v for k, v in fast_claims.items() if k not in volatile_claims} == {
        k: v for k, v in full_claims.items() if k not in volatile_claims
    }
    assert fast_claims["sub"] == citizen.subject


@integration
def test_the_fast_code_is_the_citizens(citizen, keyring, view_calls, scanner_key) -> None:
    from tests.conftest import client_with_key

    answer = shape(wsgi(vouching(citizen))[2])
    assert view_calls == []
    verdict = client_with_key(scanner_key.raw).post(
        "/api/v1/qr/verify/", {"code": answer["code"]}, format="json"
    )
    assert verdict.status_code == 200, verdict.content
    assert verdict.json()["valid"] is True
    assert verdict.json()["subject"]["id"] == citizen.subject
    assert verdict.json()["subject"]["identity_level"] == citizen.identity_level


@integration
@pytest.mark.parametrize(
    "extra",
    [
        {"QUERY_STRING": "x=1"},
        {"HTTP_ACCEPT_LANGUAGE": "en"},
        {"HTTP_COOKIE": "sessionid=abc"},
        {"HTTP_ACCEPT_LANGUAGE": "zh;q=0.1, en;q=0.9"},
    ],
)
def test_anything_unusual_goes_the_full_way(citizen, keyring, view_calls, extra) -> None:
    status, _, body = wsgi(vouching(citizen), **extra)
    assert status == 200 and len(view_calls) == 1
    shape(body)


@integration
def test_a_host_outside_allowed_hosts_goes_the_full_way(
    citizen, keyring, view_calls, settings
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    status, _, _ = wsgi(vouching(citizen), HTTP_HOST="evil.example")
    assert status == 400 and view_calls == []  # Django's DisallowedHost


@integration
@pytest.mark.parametrize(
    ("token", "code"),
    [(None, "not_authenticated"), ("not-a-token", "token_invalid"), ("a.b.c", "token_invalid")],
)
def test_no_or_a_bad_token_gets_the_views_401(citizen, keyring, view_calls, token, code) -> None:
    status, headers, body = wsgi(token)
    assert status == 401
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["code"] == code


@integration
def test_a_suspended_citizens_token_goes_the_full_way_and_is_refused(
    citizen, operator, keyring, view_calls
) -> None:
    token = vouching(citizen)
    assert wsgi(token)[0] == 200 and view_calls == []
    citizens.user_set_active(user=citizen, active=False, actor=operator)
    status, headers, _ = wsgi(token)
    assert status == 401
    assert headers["Content-Type"] == "application/problem+json"


@integration
def test_the_rate_holds_on_both_paths(citizen, keyring, view_calls, settings) -> None:
    settings.QR_STAR_CODE_RATE = "2/day"
    token = vouching(citizen)
    assert [wsgi(token)[0] for _ in range(2)] == [200, 200]
    assert view_calls == []
    status, headers, body = wsgi(token)
    assert status == 429 and "Retry-After" in headers
    assert json.loads(body)["code"] == "throttled"
    assert len(view_calls) == 0  # DRF refuses before the view's method
    assert wsgi(plain(citizen))[0] == 429  # the full way counts the same window


@integration
def test_with_redis_away_the_full_way_answers(citizen, keyring, view_calls, monkeypatch) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from config import redis_client

    # A client of a Redis that refuses connections, wherever one is asked for.
    away = redis.Redis(port=1, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(token_facts, "redis_client", lambda: away)
    monkeypatch.setattr(redis_client, "redis_client", lambda: away)
    status, _, body = wsgi(vouching(citizen))
    assert status == 200 and len(view_calls) == 1
    shape(body)


@integration
def test_an_unexpected_failure_is_a_problem_not_a_bare_500(
    citizen, keyring, view_calls, monkeypatch
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("signing failed")

    monkeypatch.setattr(star_codes, "star_code_issue", broken)
    status, headers, body = wsgi(vouching(citizen))
    assert status == 500
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["code"] == "server_error"


@integration
def test_an_unexpected_failure_gets_the_views_problem_and_headers(
    citizen, keyring, view_calls, monkeypatch
) -> None:
    """The 500 of a GET endpoint: ``Allow: GET, HEAD, OPTIONS`` and the
    rest of the view's headers, not those of the POST-only verify."""

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("signing failed")

    monkeypatch.setattr(star_codes, "star_code_issue", broken)
    fast = wsgi(vouching(citizen))
    assert len(view_calls) == 0
    full = wsgi(plain(citizen))
    assert len(view_calls) == 1
    assert fast[0] == full[0] == 500
    assert fast[2] == full[2]
    assert fast[1] == full[1] | {"Content-Length": fast[1]["Content-Length"]}


def test_without_redis_every_issuance_takes_the_full_way(
    citizen, keyring, view_calls, settings
) -> None:
    settings.REDIS_URL = ""
    status, _, body = wsgi(vouching(citizen))
    assert status == 200 and len(view_calls) == 1
    shape(body)


@integration
def test_after_a_change_a_new_login_takes_the_fast_path_again(
    citizen, operator, keyring, view_calls, settings
) -> None:
    settings.QR_STAR_CODE_RATE = "3/day"
    old = vouching(citizen)
    citizens.user_set_active(user=citizen, active=False, actor=operator)
    citizens.user_set_active(user=citizen, active=True, actor=operator)
    assert wsgi(old)[0] == 200 and len(view_calls) == 1  # the old token: the full way
    new = vouching(citizen)
    assert wsgi(new)[0] == 200 and len(view_calls) == 1  # the new one: the fast path
    assert wsgi(new)[0] == 429  # the rate counts every way taken


@integration
@pytest.mark.parametrize("switch", [{"SECURE_SSL_REDIRECT": True}, {"SECURE_HSTS_SECONDS": 3600}])
def test_with_https_switches_on_issuance_takes_the_full_cycle(
    citizen, keyring, view_calls, settings, switch
) -> None:
    """SecurityMiddleware's redirect and HSTS header belong to the full
    cycle (which builds its middleware once, so the answer here is the
    view's; that the switch reached the fast path is what is checked)."""
    for name, value in switch.items():
        setattr(settings, name, value)
    status, _, _ = wsgi(vouching(citizen), **{"wsgi.url_scheme": "https"})
    assert status == 200 and len(view_calls) == 1

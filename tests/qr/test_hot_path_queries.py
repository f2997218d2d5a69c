"""The statements of the star-code paths the benchmarks load
(benchmarks/scale.py, benchmarks/load.py, benchmarks/hotpaths.py), counted
where gunicorn serves them: through ``config.wsgi``'s application, fast
paths included (the test client skips them), and through the views.

README's *Performance*: issuance costs 0 statements with a token that
vouches for the citizen (Redis), 1 otherwise; a verification costs the
scan's claim and its event without Redis (2) and none with it. The
revocation feed costs the same whatever it lists.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.citizens import account_close, user_set_active
from accounts.models import User
from accounts.tokens import CitizenRefreshToken, tokens_issue
from qr import apis, caches
from qr.venue_codes import venue_code_create, venue_code_deactivate
from tests.accounts.factories import CitizenFactory
from tests.qr.conftest import citizen_code, issue, verify
from tests.services.factories import ServiceFactory
from tests.wsgi import environ_for, wsgi_call

pytestmark = pytest.mark.django_db
integration = pytest.mark.integration

DATABASE_RECORDER = "qr.recorders.DatabaseScanRecorder"


def statements(request: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What ``request`` answered, and the SQL it ran."""
    with CaptureQueriesContext(connection) as captured:
        answer = request()
    return answer, [q["sql"] for q in captured.captured_queries]


def shown(sql: list[str]) -> str:
    return "\n".join(q[:200] for q in sql)


@pytest.fixture
def steady(settings) -> None:
    """What each process keeps in memory is not due for a refresh during the
    test (the deactivated subjects, QR_ACCOUNT_STATE_REFRESH_SECONDS: 1 s; the
    scanner key and its profile, QR_SCANNER_AUTH_CACHE_SECONDS: 5 s; the
    keys, QR_KEY_CACHE_SECONDS): the count is the request's own."""
    settings.QR_ACCOUNT_STATE_REFRESH_SECONDS = 3600
    settings.QR_SCANNER_AUTH_CACHE_SECONDS = 3600
    settings.QR_KEY_CACHE_SECONDS = 3600


# --- Through config.wsgi's application, as gunicorn serves it -------------------------------


def served(path: str, body: bytes = b"", **extra: str) -> tuple[int, dict[str, str], bytes]:
    from config.wsgi import application

    return wsgi_call(application, environ_for(path, body, extra.pop("CONTENT_TYPE", ""), **extra))


def served_issue(token: str) -> tuple[int, dict[str, str], bytes]:
    return served(
        "/api/v1/me/star-code/",
        REQUEST_METHOD="GET",
        CONTENT_LENGTH="",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def served_verify(code: str, key: str) -> tuple[int, dict[str, str], bytes]:
    return served(
        "/api/v1/qr/verify/",
        json.dumps({"code": code}).encode(),
        CONTENT_TYPE="application/json",
        HTTP_AUTHORIZATION=f"Api-Key {key}",
    )


@pytest.fixture
def full_cycle() -> Iterator[list[str]]:
    """The requests that reached the star-code views (Django's full cycle)."""
    calls: list[str] = []
    issue_view, verify_view = apis.StarCodeView.get, apis.VerifyView.post

    def issuing(self, request):
        calls.append("issue")
        return issue_view(self, request)

    def verifying(self, request):
        calls.append("verify")
        return verify_view(self, request)

    with (
        mock.patch.object(apis.StarCodeView, "get", issuing),
        mock.patch.object(apis.VerifyView, "post", verifying),
    ):
        yield calls


@pytest.fixture
def signing_key(steady, other_citizen) -> None:
    """The installation's signing key, made and loaded by a first issuance."""
    assert served_issue(str(CitizenRefreshToken.for_user(other_citizen).access_token))[0] == 200


@integration
def test_issuance_with_a_vouching_token_costs_no_statement_where_gunicorn_serves_it(
    signing_key, steady, full_cycle
) -> None:
    for n in range(4):
        citizen = CitizenFactory(verified=True, phone=f"1371371370{n}")
        token = tokens_issue(user=citizen)["access"]  # a login's: it vouches
        for _ in range(2):
            (status, _headers, body), sql = statements(lambda: served_issue(token))  # noqa: B023
            assert status == 200, body
            assert sql == [], shown(sql)
    assert full_cycle == []  # every one answered in front of Django


def test_issuance_with_a_token_that_vouches_for_nothing_reads_the_account_once(
    signing_key, steady, full_cycle
) -> None:
    """Without Redis no token vouches; with it, one made otherwise than by a
    login or refresh does not: the full cycle reads the citizen's row."""
    for n in range(4):
        citizen = CitizenFactory(verified=True, phone=f"1371371371{n}")
        token = str(CitizenRefreshToken.for_user(citizen).access_token)
        (status, _headers, body), sql = statements(lambda: served_issue(token))  # noqa: B023
        assert status == 200, body
        assert len(sql) == 1, shown(sql)
    assert full_cycle == ["issue"] * 4


@integration
def test_a_verification_costs_no_statement_where_gunicorn_serves_it(
    citizen, scanner_key, gate_profile, steady, full_cycle
) -> None:
    codes = [citizen_code(citizen) for _ in range(8)]
    served_verify(codes[0], scanner_key.raw)  # the key's first request: the full cycle
    assert full_cycle == ["verify"]
    for code in codes[1:]:
        (status, _headers, body), sql = statements(
            lambda: served_verify(code, scanner_key.raw)  # noqa: B023
        )
        assert status == 200 and json.loads(body)["valid"] is True, body
        assert sql == [], shown(sql)
    assert full_cycle == ["verify"]


def test_a_verification_written_at_once_costs_its_claim_and_its_event_where_gunicorn_serves_it(
    settings, citizen, scanner_key, gate_profile, steady, full_cycle
) -> None:
    """The scan recorded in the database at once (the recorder without
    Redis): the code's claim and the scan event, however many came before."""
    settings.QR_SCAN_RECORDER = DATABASE_RECORDER
    codes = [citizen_code(citizen) for _ in range(8)]
    served_verify(codes[0], scanner_key.raw)
    for code in codes[1:]:
        (status, _headers, body), sql = statements(
            lambda: served_verify(code, scanner_key.raw)  # noqa: B023
        )
        assert status == 200 and json.loads(body)["valid"] is True, body
        assert len(sql) == 2, shown(sql)
    assert full_cycle == ["verify"]


# --- Verify through the view (what tests/qr/test_verify_api.py counts) ----------------------


@integration
def test_a_verification_costs_no_statement_with_redis(
    citizen, citizen_api, scanner_api, gate_profile, steady
) -> None:
    codes = [issue(citizen_api)["code"] for _ in range(8)]
    verify(scanner_api, codes[0])  # the key, its profile, the snapshot: once
    for code in codes[1:]:
        answer, sql = statements(lambda: verify(scanner_api, code))  # noqa: B023
        assert answer["valid"] is True
        assert sql == [], shown(sql)


def test_a_verification_written_at_once_costs_two_statements(
    settings, citizen, citizen_api, scanner_api, gate_profile, steady
) -> None:
    settings.QR_SCAN_RECORDER = DATABASE_RECORDER
    codes = [issue(citizen_api)["code"] for _ in range(8)]
    verify(scanner_api, codes[0])
    for code in codes[1:]:
        answer, sql = statements(lambda: verify(scanner_api, code))  # noqa: B023
        assert answer["valid"] is True
        assert len(sql) == 2, shown(sql)


def test_the_deactivated_subjects_refresh_is_the_one_statement_more(
    citizen, citizen_api, scanner_api, gate_profile, steady
) -> None:
    """What tests/qr/test_verify_api.py allows on top of README's count: the
    process's snapshot of recently deactivated subjects, read again when
    QR_ACCOUNT_STATE_REFRESH_SECONDS (1 s) have passed: one statement then,
    on either recorder, per process and not per request."""
    codes = [issue(citizen_api)["code"] for _ in range(4)]
    verify(scanner_api, codes[0])
    _answer, steady_sql = statements(lambda: verify(scanner_api, codes[1]))
    for code in codes[2:]:
        caches.inactive_subjects.clear()  # as when the refresh falls due
        answer, sql = statements(lambda: verify(scanner_api, code))  # noqa: B023
        assert answer["valid"] is True
        assert len(sql) == len(steady_sql) + 1, shown(sql)
        assert sum("accounts_user" in q for q in sql) == 1, shown(sql)


# --- The revocation feed --------------------------------------------------------------------------


def revoked_venues(count: int) -> None:
    """``count`` venue codes deactivated, each of its own service and department."""
    for n in range(count):
        service = ServiceFactory()
        venue = venue_code_create(
            department=service.department, service=service, label=f"{n}号窗口"
        )
        venue_code_deactivate(venue=venue)


def deactivated_citizens(count: int) -> list[User]:
    """``count`` citizens: suspended and closed in turn."""
    made = []
    for n in range(count):
        citizen = CitizenFactory(verified=True)
        if n % 2:
            account_close(user=citizen)
        else:
            user_set_active(user=citizen, active=False, actor=None)
        made.append(citizen)
    return made


def test_the_revocation_feed_costs_the_same_for_one_entry_and_for_many(
    settings, scanner_api, steady
) -> None:
    """README (*At city scale*): 3 statements at every size on PostgreSQL
    (the database's clock, the revoked codes, the deactivated subjects); 2
    on SQLite, which takes Python's clock."""
    settings.QR_REVOCATIONS_LAG_SECONDS = 0
    since = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
    url = "/api/v1/qr/revocations/"
    assert scanner_api.get(url).status_code == 200  # the key's last use, written once

    def feed() -> tuple[dict[str, Any], list[str]]:
        answer, sql = statements(lambda: scanner_api.get(url, {"since": since}))
        assert answer.status_code == 200, answer.content
        return answer.json(), sql

    revoked_venues(1)
    deactivated_citizens(1)
    small, small_sql = feed()
    assert (len(small["revoked"]), len(small["inactive_subjects"])) == (1, 1)

    revoked_venues(12)
    deactivated_citizens(12)
    big, big_sql = feed()
    assert (len(big["revoked"]), len(big["inactive_subjects"])) == (13, 13)

    listing = shown(["small:", *small_sql, "big:", *big_sql])
    assert len(big_sql) == len(small_sql), listing
    assert len(big_sql) <= (3 if connection.vendor == "postgresql" else 2), listing

"""The verify fast path answers exactly as the view does, and only the common case.

These tests call the project's real WSGI application (``config.wsgi``), the
one gunicorn serves; the test client would skip the fast path.
"""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest

from accounts.models import ApiKeyScope
from qr import apis
from qr.models import ScanEvent
from tests.conftest import _key
from tests.qr.conftest import citizen_code, recorded_scans
from tests.wsgi import environ_for, wsgi_call

pytestmark = pytest.mark.django_db

PATH = "/api/v1/qr/verify/"


def wsgi(
    body: Any, *, key: str, content_type: str = "application/json", **extra: str
) -> tuple[int, dict[str, str], bytes]:
    from config.wsgi import application

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return wsgi_call(
        application,
        environ_for(PATH, raw, content_type, HTTP_AUTHORIZATION=f"Api-Key {key}", **extra),
    )


@pytest.fixture
def view_calls():
    """Counts the requests that reached the DRF view (the full cycle)."""
    calls = []
    original = apis.VerifyView.post

    def spy(self, request):
        calls.append(request)
        return original(self, request)

    with mock.patch.object(apis.VerifyView, "post", spy):
        yield calls


@pytest.fixture
def other_scanner(department):
    return _key(department, ApiKeyScope.SCANNER)


def test_a_keys_first_request_takes_the_full_way_then_the_fast_path_answers(
    citizen, scanner_key, view_calls
) -> None:
    first = wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    assert first[0] == 200 and json.loads(first[2])["valid"] is True
    assert len(view_calls) == 1
    for _ in range(3):
        status, _headers, body = wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
        assert status == 200 and json.loads(body)["valid"] is True
    assert len(view_calls) == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda user: citizen_code(user),
        lambda user: citizen_code(user)[:-4] + "AAAA",  # bad signature
        lambda user: citizen_code(user, exp=1),  # expired
        lambda user: "MCS1:not.a.code",
    ],
    ids=["valid", "bad_signature", "expired", "malformed"],
)
def test_the_fast_path_answers_byte_for_byte_as_the_view(
    citizen, scanner_key, other_scanner, make, view_calls
) -> None:
    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)  # remember the key
    code = make(citizen)
    fast = wsgi({"code": code}, key=scanner_key.raw)
    calls_before = len(view_calls)
    full = wsgi({"code": code}, key=other_scanner.raw)  # a key seen for the first time
    assert len(view_calls) == calls_before + 1
    assert fast[0] == full[0] == 200
    assert fast[2] == full[2]
    volatile = {"Content-Length"}
    assert {k: v for k, v in fast[1].items() if k not in volatile} == {
        k: v for k, v in full[1].items() if k not in volatile
    }


def test_replays_are_caught_on_the_fast_path(citizen, scanner_key) -> None:
    code = citizen_code(citizen)
    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)  # remember the key
    assert json.loads(wsgi({"code": code}, key=scanner_key.raw)[2])["valid"] is True
    assert json.loads(wsgi({"code": code}, key=scanner_key.raw)[2]) == {
        "valid": False,
        "reason": "replayed",
    }


def test_every_fast_verify_is_a_scan_event(citizen, scanner_key) -> None:
    for _ in range(4):
        wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    events = recorded_scans()
    assert len(events) == 4
    assert all(e.source == ScanEvent.Source.ONLINE and e.valid for e in events)


@pytest.mark.parametrize(
    ("body", "content_type", "extra", "status", "code"),
    [
        (b"[1, 2]", "application/json", {}, 400, "invalid"),
        (b'{"code": "x\\u0000"}', "application/json", {}, 400, "malformed_request"),
        (b"code=abc", "application/x-www-form-urlencoded", {}, 400, "malformed_request"),
        (b"{not json", "application/json", {}, 400, "malformed_request"),
        (b'{"code": ""}', "application/json", {}, 400, "invalid"),
        # A byte-order mark: json.loads(bytes) would skip it, the view's parser does not.
        (b'\xef\xbb\xbf{"code": "MCS1:x"}', "application/json", {}, 400, "malformed_request"),
        ('{"code": "MCS1:x"}'.encode("utf-16"), "application/json", {}, 400, "malformed_request"),
        # Another charset named: the view's parser decodes the body by it.
        (b'{"code": "MCS1:x"}', "application/json; charset=utf-16", {}, 400, "malformed_request"),
        # What the view's parser refuses anywhere in a body, beside a plain code.
        (b'{"code": "MCS1:x", "n": NaN}', "application/json", {}, 400, "malformed_request"),
        (b'{"code": "MCS1:x", "n": -Infinity}', "application/json", {}, 400, "malformed_request"),
        (b'{"code": "MCS1:x", "n": "\\ud800"}', "application/json", {}, 400, "malformed_request"),
        (b'{"code": "MCS1:x", "\\udc00": 1}', "application/json", {}, 400, "malformed_request"),
        (
            b'{"code": "MCS1:x", "n": ' + b"[" * 70 + b"]" * 70 + b"}",
            "application/json",
            {},
            400,
            "malformed_request",
        ),
    ],
)
def test_anything_unusual_goes_the_full_way_and_gets_its_problem(
    citizen, scanner_key, view_calls, body, content_type, extra, status, code
) -> None:
    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    answer = wsgi(body, key=scanner_key.raw, content_type=content_type, **extra)
    assert answer[0] == status
    assert answer[1]["Content-Type"] == "application/problem+json"
    assert json.loads(answer[2])["code"] == code


def test_a_code_given_twice_in_one_body_is_refused_on_both_paths(citizen, scanner_key) -> None:
    """Which "code" counts is up to each reader: the view's parser refuses
    a body that names one twice, and so does the fast path (it took the
    last and said valid)."""
    body = b'{"code": "MCS1:not.a.code", "code": "' + citizen_code(citizen).encode() + b'"}'
    first = wsgi(body, key=scanner_key.raw)  # unknown key yet: the full way
    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    second = wsgi(body, key=scanner_key.raw)  # remembered key: the fast path
    assert first[0] == second[0] == 400
    assert json.loads(first[2])["code"] == json.loads(second[2])["code"] == "malformed_request"


def test_english_scanners_get_english_headers_the_full_way(
    citizen, scanner_key, view_calls
) -> None:
    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    status, headers, _body = wsgi(
        {"code": citizen_code(citizen)}, key=scanner_key.raw, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert status == 200 and headers["Content-Language"] == "en"
    assert len(view_calls) == 2


def test_a_throttled_scanner_gets_the_same_429_on_both_paths(
    citizen, scanner_key, settings, view_calls
) -> None:
    from qr.authentication import forget_scanner_keys

    settings.QR_VERIFY_RATE = "2/day"
    answers = [wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert len(view_calls) == 1  # the 429 came from the fast path, without a second run
    forget_scanner_keys()
    full = wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    assert len(view_calls) == 2 and full[0] == 429
    fast = answers[2]
    assert json.loads(fast[2])["code"] == json.loads(full[2])["code"] == "throttled"
    assert int(fast[1]["Retry-After"]) >= 1
    volatile = {"Content-Length", "Retry-After", "Allow"}
    assert {k: v for k, v in fast[1].items() if k not in volatile} == {
        k: v for k, v in full[1].items() if k not in volatile
    }


def test_with_the_scan_state_away_both_paths_give_the_same_503(
    citizen, scanner_key, other_scanner, monkeypatch, view_calls
) -> None:
    from qr.recorders import ScanStateUnavailable, get_recorder

    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)  # remember the key
    monkeypatch.setattr(
        type(get_recorder()), "record", mock.Mock(side_effect=ScanStateUnavailable("down"))
    )
    code = citizen_code(citizen)
    fast = wsgi({"code": code}, key=scanner_key.raw)
    calls_before = len(view_calls)
    full = wsgi({"code": code}, key=other_scanner.raw)
    assert len(view_calls) == calls_before + 1
    assert fast[0] == full[0] == 503
    assert fast[2] == full[2]
    assert json.loads(fast[2])["code"] == "scan_state_unavailable"
    assert fast[1] == full[1] | {"Content-Length": fast[1]["Content-Length"]}


def test_a_fast_problem_is_in_chinese_after_an_english_request_on_the_same_thread(
    citizen, scanner_key, other_scanner, monkeypatch, view_calls
) -> None:
    """A worker thread keeps the language its last full-cycle request
    activated (LocaleMiddleware activates, nothing deactivates): a fast
    answer, whose headers say zh-hans, words its problem in zh-hans as the
    view does, not in the English a previous caller asked for."""
    from qr.recorders import ScanStateUnavailable, get_recorder

    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)  # remember the key
    monkeypatch.setattr(
        type(get_recorder()), "record", mock.Mock(side_effect=ScanStateUnavailable("down"))
    )
    full = wsgi({"code": citizen_code(citizen)}, key=other_scanner.raw)
    english = wsgi({"code": "MCS1:x"}, key=scanner_key.raw, HTTP_ACCEPT_LANGUAGE="en")
    assert english[1]["Content-Language"] == "en"  # the full cycle, in English
    fast = wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    assert fast[0] == full[0] == 503
    assert fast[1]["Content-Language"] == "zh-hans"
    assert fast[2] == full[2]


def test_an_integrator_key_never_takes_the_fast_path(citizen, integrator_key, view_calls) -> None:
    for _ in range(2):
        status, _headers, body = wsgi({"code": citizen_code(citizen)}, key=integrator_key.raw)
        assert status == 403 and json.loads(body)["code"] == "api_key_scope"


def test_a_forgotten_or_revoked_key_goes_the_full_way(citizen, scanner_key, operator) -> None:
    from accounts.api_keys import api_key_revoke
    from qr.authentication import forget_scanner_keys

    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    api_key_revoke(key=scanner_key, actor=operator)
    forget_scanner_keys()  # what the short remembrance window does by itself
    status, _headers, body = wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    assert status == 401 and json.loads(body)["code"] == "api_key_invalid"


def test_a_host_outside_allowed_hosts_goes_the_full_way(citizen, scanner_key, settings) -> None:
    settings.ALLOWED_HOSTS = ["api.example.org"]
    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw, HTTP_HOST="api.example.org")
    status, _headers, _body = wsgi(
        {"code": citizen_code(citizen)}, key=scanner_key.raw, HTTP_HOST="evil.example"
    )
    assert status == 400


def test_deeply_nested_json_is_a_400_on_both_paths(citizen, scanner_key) -> None:
    body = b"[" * 4000
    first = wsgi(body, key=scanner_key.raw)  # unknown key yet: the full way
    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    second = wsgi(body, key=scanner_key.raw)  # remembered key: the fast path declines
    assert first[0] == second[0] == 400
    assert json.loads(second[2])["code"] == "malformed_request"


def test_an_unexpected_failure_is_a_problem_not_a_bare_500(
    citizen, scanner_key, monkeypatch
) -> None:
    from qr import scans

    wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    monkeypatch.setattr(scans, "scan_verify", mock.Mock(side_effect=RuntimeError("cache on fire")))
    status, headers, body = wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)
    assert status == 500
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["code"] == "server_error"


@pytest.mark.parametrize("code", [123, ["MCS1:x"], None, {"a": 1}, True, 1.5])
def test_a_code_that_is_not_a_string_is_a_400_on_every_path(
    citizen, scanner_key, scanner_api, code
) -> None:
    """DESIGN §5 gives 200 to scanned codes only; a request without one is
    invalid. The fast path (warmed up first) and the view say the same."""
    assert wsgi({"code": citizen_code(citizen)}, key=scanner_key.raw)[0] == 200  # warm
    before = ScanEvent.objects.count()
    status, headers, body = wsgi({"code": code}, key=scanner_key.raw)
    assert status == 400, body
    assert headers["Content-Type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 400 and "code" in problem["errors"]
    via_view = scanner_api.post(PATH, {"code": code}, format="json")
    assert via_view.status_code == 400
    assert via_view.json()["code"] == problem["code"]
    assert ScanEvent.objects.count() == before  # not a scan

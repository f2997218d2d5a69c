"""Requests as a real HTTP server hands them to the WSGI application:
environs the test client never builds (a header sent empty, conditional
headers on a kept page), through the fast paths and through Django alone,
answered alike.

These call the project's WSGI application (``config.wsgi``) or the pages
layer over Django's handler; the test client would skip the fast paths."""

from __future__ import annotations

import json

import pytest

from accounts.models import ApiKey, ApiKeyScope, Department
from config.pages import catalog_pages
from tests.conftest import _key
from tests.qr.conftest import citizen_code
from tests.qr.test_fastpath import wsgi as verify
from tests.qr.test_star_code_fastpath import plain, vouching
from tests.qr.test_star_code_fastpath import wsgi as star_code
from tests.services.factories import ServiceFactory
from tests.services.test_catalog_fastpath import Stack, call, environ
from tests.wsgi import environ_for, wsgi_call

pytestmark = pytest.mark.django_db

PAGE = "/api/v1/services/sbk-apply/"


@pytest.fixture
def other_scanner(department: Department) -> ApiKey:
    return _key(department, ApiKeyScope.SCANNER)


@pytest.fixture
def keyring(other_citizen) -> None:
    """The installation's first signing key, made by a first issuance."""
    assert star_code(plain(other_citizen))[0] == 200


@pytest.fixture
def stack(monkeypatch, department, category) -> Stack:
    """The pages layer over Django, the catalog at a version the test holds."""
    monkeypatch.setattr(catalog_pages, "version", lambda: b"v1")
    ServiceFactory(
        code="sbk-apply", name="社会保障卡申领", department=department, category=category
    )
    return Stack()


def _problem_code(body: bytes) -> str:
    code: str = json.loads(body)["code"]
    return code


# --- An empty Host header ---------------------------------------------------------------------
# ``Host:`` with nothing after it reaches the application as HTTP_HOST "";
# Django refuses it (DisallowedHost, 400) whatever SERVER_NAME says, so no
# fast path may answer it in Django's place.


def test_an_empty_host_gets_djangos_400_from_the_verify_fast_path_too(
    citizen, scanner_key, other_scanner, settings
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]  # SERVER_NAME is allowed
    verify({"code": citizen_code(citizen)}, key=scanner_key.raw)  # remember the key
    fast = verify({"code": citizen_code(citizen)}, key=scanner_key.raw, HTTP_HOST="")
    full = verify({"code": citizen_code(citizen)}, key=other_scanner.raw, HTTP_HOST="")
    assert full[0] == fast[0] == 400
    assert fast[1]["Content-Type"] == "application/problem+json"
    assert _problem_code(fast[2]) == _problem_code(full[2])


@pytest.mark.integration
def test_an_empty_host_gets_djangos_400_from_the_star_code_fast_path_too(
    citizen, keyring, settings
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    status, headers, _body = star_code(vouching(citizen), HTTP_HOST="")
    assert status == 400 and headers["Content-Type"] == "application/problem+json"


def test_an_empty_host_is_not_given_the_page_kept_for_no_host(stack, settings) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    no_host = environ(PAGE)
    del no_host["HTTP_HOST"]  # HTTP/1.0: Django names the server by SERVER_NAME
    assert call(stack.app, no_host)[0] == "200 OK"
    assert stack.get(PAGE, HTTP_HOST="")[0] == "400 Bad Request"


# --- What a kept page is given to --------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"HTTP_ACCEPT": ""},  # not "no Accept": DRF answers 406
        {"HTTP_IF_MATCH": '"another"'},  # 412
        # A GET with a body Django's request limits refuse:
        {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": ""},  # 411
        {"CONTENT_LENGTH": "99999999"},  # 413
        {"CONTENT_LENGTH": "-1"},  # 400
        # A charset that is not a text encoding: 415 (config.middleware)
        {"CONTENT_TYPE": "application/json; charset=zlib"},
    ],
    ids=lambda extra: "-".join(f"{k}={v}" for k, v in extra.items()),
)
def test_a_kept_page_is_given_only_where_django_would_give_it(stack, extra) -> None:
    kept = stack.get(PAGE)
    assert kept[0] == "200 OK"
    django = stack.django(environ(PAGE, **extra), lambda status, headers: None)
    django.close()
    assert django.status_code != 200  # what Django alone answers this request
    answered = stack.get(PAGE, **extra)
    assert answered[0].split()[0] == str(django.status_code)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": ""}, 411),
        ({"CONTENT_LENGTH": "99999999"}, 413),
        ({"CONTENT_LENGTH": "x"}, 400),
    ],
    ids=["chunked", "too-long", "not-a-length"],
)
def test_a_star_code_get_with_a_refused_body_gets_djangos_problem(
    citizen, keyring, extra, status
) -> None:
    from config.wsgi import application

    get = environ_for(
        "/api/v1/me/star-code/",
        b"",
        "",
        REQUEST_METHOD="GET",
        HTTP_AUTHORIZATION=f"Bearer {vouching(citizen)}",
    )
    answered, headers, _body = wsgi_call(application, {**get, **extra})
    assert answered == status and headers["Content-Type"] == "application/problem+json"


# --- Refused before any view ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"QUERY_STRING": "q=%00"}, 400),
        ({"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": ""}, 411),
        ({"CONTENT_LENGTH": "-5"}, 400),
    ],
    ids=["nul", "chunked", "negative-length"],
)
def test_a_request_refused_before_its_view_is_kept_out_of_caches_too(extra, status) -> None:
    from config.wsgi import application

    request = {**environ_for("/api/v1/qr/verify/", b"", "application/json"), **extra}
    answered, headers, _body = wsgi_call(application, request)
    assert answered == status and headers["Content-Type"] == "application/problem+json"
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("date", ["Sun, 06 Dec 2020 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_page_has_no_modification_date_so_if_unmodified_since_is_ignored(stack, date) -> None:
    """RFC 9110 13.1.4 (Django alone answers any date 412, with an empty
    text/html body), in front of Django and behind it."""
    kept = stack.get(PAGE)
    for _ in range(2):
        answered = stack.get(PAGE, HTTP_IF_UNMODIFIED_SINCE=date)
        assert answered[0] == "200 OK" and answered[2] == kept[2]
    assert stack.get(PAGE, HTTP_IF_UNMODIFIED_SINCE=date, HTTP_IF_MATCH='"another"')[0] == (
        "412 Precondition Failed"
    )


# --- Under gunicorn --------------------------------------------------------------------------------


def _raw(base: str, request: bytes) -> bytes:
    """The status line gunicorn at ``base`` answers ``request`` (raw bytes)."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_gunicorn_hands_over_what_the_kept_pages_must_not_answer(department, category) -> None:
    """gunicorn passes on a Host header sent empty and a GET with a chunked
    body; Django refuses both, so the page kept for the plain request is
    not given to them."""
    from tests.processes import web_server

    ServiceFactory(
        code="sbk-apply", name="社会保障卡申领", department=department, category=category
    )
    catalog_pages.bump()  # a fresh version, shared with the server through Redis
    with web_server(workers=1, ALLOWED_HOSTS="127.0.0.1") as base:
        plain = b"GET " + PAGE.encode() + b" HTTP/1.0\r\n\r\n"  # no Host: SERVER_NAME
        for _ in range(2):  # rendered, then kept
            assert _raw(base, plain) == b"HTTP/1.0 200 OK"
        with_host = (
            b"GET " + PAGE.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        )
        for _ in range(2):
            assert _raw(base, with_host + b"\r\n") == b"HTTP/1.1 200 OK"
        empty_host = b"GET " + PAGE.encode() + b" HTTP/1.0\r\nHost:\r\n\r\n"
        assert _raw(base, empty_host) == b"HTTP/1.0 400 Bad Request"
        chunked = with_host + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        assert _raw(base, chunked) == b"HTTP/1.1 411 Length Required"


def _whole_answer(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body gunicorn at ``base`` answers ``request``
    with before it closes the connection."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.timeout(120)
def test_what_gunicorn_refuses_before_django_is_a_problem_too(tmp_path) -> None:
    """A request gunicorn cannot parse never reaches Django: its refusal is
    still a problem with a stable code, not gunicorn's HTML page."""
    import os

    from tests.processes import configured_web_server

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    host = b"Host: 127.0.0.1\r\n"
    refused = {
        b"NOT A REQUEST\r\n\r\n": (400, "malformed_request"),
        b"G@T / HTTP/1.1\r\n" + host + b"\r\n": (400, "malformed_request"),
        b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + host + b"\r\n": (414, "uri_too_long"),
        b"GET / HTTP/1.1\r\n" + host + b"X: " + b"a" * 9000 + b"\r\n\r\n": (
            431,
            "header_fields_too_large",
        ),
        b"GET / HTTP/1.1\r\n" + host + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n": (
            431,
            "header_fields_too_large",
        ),
        b"POST / HTTP/1.1\r\n" + host + b"Expect: 200-ok\r\n\r\n": (417, "expectation_failed"),
        b"POST / HTTP/1.1\r\n" + host + b"Transfer-Encoding: br\r\n\r\n": (
            501,
            "transfer_coding_unsupported",
        ),
    }
    with configured_web_server(env, tmp_path / "web.log") as base:
        for request, (status, code) in refused.items():
            answered, headers, body = _whole_answer(base, request)
            assert answered == status, request[:40]
            assert headers["content-type"] == "application/problem+json", request[:40]
            assert int(headers["content-length"]) == len(body)
            problem = json.loads(body)
            assert (problem["status"], problem["code"]) == (status, code), request[:40]
            assert problem["type"] == f"/api/problems/{code}"

"""Kept catalog pages are answered in front of Django's request cycle with
Django's own answer, byte for byte, and only the plain case is.

These tests call a WSGI application as gunicorn does (the test client would
skip the layer). The catalog's version is set by the test, so the layer is
exercised without Redis as well; with Redis it is read from there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler

from config.pages import PagesFastPath, catalog_pages
from services import catalog
from services.models import Service
from tests.services.factories import ServiceFactory
from tests.wsgi import environ_for, wsgi_answer

pytestmark = pytest.mark.django_db

PREFIXES = ("/api/v1/services/", "/api/v1/categories/", "/api/v1/departments/")


def environ(path: str, **extra: Any) -> dict[str, Any]:
    """A GET of ``path`` on the test server."""
    return environ_for(path, b"", "", **{"REQUEST_METHOD": "GET", **extra})


call = wsgi_answer


class Stack:
    """The layer over Django's WSGI handler, counting what reaches Django."""

    def __init__(self) -> None:
        self.django = WSGIHandler()
        self.reached: list[str] = []
        self.app = PagesFastPath(self.counting, catalog_pages, prefixes=PREFIXES)

    def counting(self, env: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self.reached.append(env["PATH_INFO"])
        return self.django(env, start_response)

    def get(self, path: str, **extra: Any) -> tuple[str, list[tuple[str, str]], bytes]:
        return call(self.app, environ(path, **extra))


@pytest.fixture
def version(monkeypatch) -> list[bytes]:
    """The catalog's version as the test sets it (``version[0]``)."""
    current = [b"v1"]
    monkeypatch.setattr(catalog_pages, "version", lambda: current[0])
    return current


@pytest.fixture
def stack(version, department, category) -> Stack:
    ServiceFactory(
        code="sbk-apply", name="社会保障卡申领", department=department, category=category
    )
    return Stack()


def test_the_second_request_gets_djangos_own_answer_without_django(stack) -> None:
    for path in ("/api/v1/services/", "/api/v1/services/sbk-apply/", "/api/v1/categories/"):
        first = stack.get(path)
        again = stack.get(path)
        assert first[0] == "200 OK" and "社会保障卡申领".encode() in stack.get(PREFIXES[0])[2]
        assert again == first  # status line, every header in order, body
        assert stack.reached.count(path) == 1
    headers = dict(first[1])
    assert headers["ETag"] and headers["X-Frame-Options"] == "DENY"  # the middleware's too


def test_a_revalidation_gets_djangos_304_again_without_django(stack) -> None:
    path = "/api/v1/services/sbk-apply/"
    etag = dict(stack.get(path)[1])["ETag"]
    first = stack.get(path, HTTP_IF_NONE_MATCH=etag)
    again = stack.get(path, HTTP_IF_NONE_MATCH=etag)
    assert first[0] == "304 Not Modified" and first[2] == b""
    assert again == first
    stale = stack.get(path, HTTP_IF_NONE_MATCH='"stale"')
    assert stale[0] == "200 OK" and stale[2]
    assert stack.get(path, HTTP_IF_NONE_MATCH='"stale"') == stale
    assert stack.reached.count(path) == 3  # the page, its 304, the stale tag's page


def test_a_changed_catalog_is_answered_anew(stack, version) -> None:
    before = stack.get("/api/v1/services/sbk-apply/")
    service = Service.objects.get(code="sbk-apply")
    catalog.service_update(service=service, actor=None, name="社会保障卡申领（新）")
    version[0] = b"v2"  # what the change's bump does in Redis
    after = stack.get("/api/v1/services/sbk-apply/")
    assert "（新）".encode() in after[2] and after != before
    assert stack.reached.count("/api/v1/services/sbk-apply/") == 2


@pytest.mark.parametrize(
    "extra",
    [
        {"QUERY_STRING": "page_size=5"},
        {"HTTP_COOKIE": "sessionid=x"},
        {"HTTP_AUTHORIZATION": "Bearer x"},
        {"HTTP_IF_MODIFIED_SINCE": "Sun, 06 Dec 2026 00:00:00 GMT"},
        {"REQUEST_METHOD": "HEAD"},
        {"HTTP_ACCEPT_LANGUAGE": "en"},
        {"HTTP_HOST": "evil.example"},
    ],
    ids=lambda extra: next(iter(extra)),
)
def test_anything_but_the_plain_case_goes_to_django_every_time(stack, extra, settings) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    path = "/api/v1/services/sbk-apply/"
    answers = [stack.get(path, **extra) for _ in range(2)]
    assert stack.reached.count(path) == 2
    assert answers[0][0] == answers[1][0]


def test_errors_and_other_paths_are_never_kept(stack) -> None:
    for path in ("/api/v1/services/no-such-service/", "/api/v1/qr/keys/", "/healthz"):
        stack.get(path)
        stack.get(path)
        assert stack.reached.count(path) == 2, path


def test_each_host_and_scheme_has_its_own_answer(stack, settings) -> None:
    """Pages carry absolute links: an answer is only given again to the
    address it was made for."""
    settings.ALLOWED_HOSTS = ["testserver", "api.example.cn"]
    path = "/api/v1/services/"
    one = stack.get(path)
    other = stack.get(path, HTTP_HOST="api.example.cn")
    assert stack.reached.count(path) == 2
    assert stack.get(path, HTTP_HOST="api.example.cn") == other
    assert stack.get(path) == one
    assert stack.reached.count(path) == 2


def test_without_a_version_nothing_is_kept(stack, version) -> None:
    version[0] = None  # type: ignore[call-overload]  # no Redis, or unreachable
    path = "/api/v1/services/"
    stack.get(path)
    stack.get(path)
    assert stack.reached.count(path) == 2


def fake_django(
    headers: list[tuple[str, str]], status: str = "200 OK"
) -> tuple[PagesFastPath, list[int]]:
    """The layer over a stand-in for Django that answers ``status`` with
    ``headers``, and the list of requests that reached the stand-in."""
    reached: list[int] = []

    def app(env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        reached.append(1)
        start_response(status, headers)
        return [b"{}"]

    return PagesFastPath(app, catalog_pages, prefixes=PREFIXES), reached


def test_an_answer_that_sets_a_cookie_is_never_kept(version) -> None:
    app, reached = fake_django(
        [("Content-Type", "application/json"), ("ETag", '"x"'), ("Set-Cookie", "a=b")]
    )
    call(app, environ("/api/v1/services/"))
    call(app, environ("/api/v1/services/"))
    assert len(reached) == 2


def test_answers_are_given_again_for_public_page_seconds_at_most(version, settings) -> None:
    app, reached = fake_django([("Content-Type", "application/json"), ("ETag", '"x"')])
    call(app, environ("/api/v1/services/"))
    call(app, environ("/api/v1/services/"))
    assert len(reached) == 1
    settings.PUBLIC_PAGE_SECONDS = 0
    call(app, environ("/api/v1/services/"))
    assert len(reached) == 2


def test_the_served_application_has_the_layer(settings) -> None:
    from config.wsgi import application

    layers, app = [], application
    while app is not None:
        layers.append(type(app).__name__)
        app = getattr(app, "app", None)
    assert "PagesFastPath" in layers


@pytest.mark.parametrize(
    "variant",
    [
        {"HTTP_X_FORWARDED_PROTO": "https"},
        {"wsgi.url_scheme": "https"},
        {"HTTP_ACCEPT": "application/json; indent=4"},
        {"SERVER_PORT": "8443"},
    ],
    ids=lambda variant: next(iter(variant)),
)
def test_an_answer_is_not_given_to_a_request_that_differs_in_what_it_depends_on(
    stack, settings, variant
) -> None:
    """Links follow the scheme (a proxy's header where trusted), the body
    the media type asked for: each is its own address."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    path = "/api/v1/services/"
    plain = stack.get(path)
    varied = stack.get(path, **variant)
    assert stack.reached.count(path) == 2
    assert stack.get(path) == plain and stack.get(path, **variant) == varied
    assert stack.reached.count(path) == 2
    if "HTTP_ACCEPT" in variant:
        assert varied[2] != plain[2]  # indented: never handed to a plain client
    if "HTTP_X_FORWARDED_PROTO" in variant or "wsgi.url_scheme" in variant:
        assert b"https://" in varied[2] or varied[2] == plain[2]


def test_only_a_page_or_its_304_is_kept(version) -> None:
    app, reached = fake_django(
        [("Content-Type", "application/json"), ("ETag", '"x"')], status="404 Not Found"
    )
    call(app, environ("/api/v1/services/gone/"))
    call(app, environ("/api/v1/services/gone/"))
    assert len(reached) == 2


def test_an_answer_varying_on_what_the_key_leaves_out_is_not_kept(version) -> None:
    app, reached = fake_django(
        [("Content-Type", "application/json"), ("ETag", '"x"'), ("Vary", "Origin")]
    )
    call(app, environ("/api/v1/services/"))
    call(app, environ("/api/v1/services/"))
    assert len(reached) == 2


def test_an_answer_is_never_older_than_public_page_seconds(stack, settings, monkeypatch) -> None:
    """Django's own kept page may already be old when the layer keeps its
    answer: the answer carries the page's age, not the moment it was kept."""
    from config import pages

    path = "/api/v1/services/sbk-apply/"
    clock = [1000.0]
    monkeypatch.setattr(pages.time, "monotonic", lambda: clock[0])
    settings.PUBLIC_PAGE_SECONDS = 60
    stack.get(path, HTTP_IF_NONE_MATCH='"other"')  # Django keeps the page at 1000 s
    clock[0] = 1050.0
    stack.get(path)  # kept in front at 1050 s, from the page of 1000 s
    assert stack.reached.count(path) == 2
    clock[0] = 1061.0  # the page is 61 s old: asked of Django again
    stack.get(path)
    assert stack.reached.count(path) == 3


def test_a_bump_in_this_process_drops_the_answers_kept_in_front(stack) -> None:
    path = "/api/v1/services/"
    stack.get(path)
    catalog_pages._bump_now()  # the version is the test's: only the bump's own clearing counts
    stack.get(path)
    assert stack.reached.count(path) == 2

"""A load balancer probes a web process by its address (``Host:
10.0.1.11:8000``), a name ALLOWED_HOSTS does not list: /healthz and /readyz
answer it as they answer an allowed host, before Django's host check; no
other request gets past that check.

These tests call the project's real WSGI application (``config.wsgi``), the
one gunicorn serves; the test client would skip the layer in front.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core.wsgi import get_wsgi_application

from config import health
from tests.wsgi import environ_for, wsgi_answer

pytestmark = pytest.mark.django_db

PROBER = "10.0.1.11:8000"


@pytest.fixture(autouse=True)
def _production_hosts(settings, monkeypatch) -> None:
    settings.ALLOWED_HOSTS = ["my.changsha.gov.cn"]
    monkeypatch.setattr(health, "_broker_checked", {})
    monkeypatch.setattr(health, "_redis_checked", {})


def request(path: str, *, method: str = "GET", host: str = PROBER, **extra: Any) -> dict[str, Any]:
    values = {"REQUEST_METHOD": method, "CONTENT_LENGTH": "", "HTTP_HOST": host} | extra
    return environ_for(path, b"", values.pop("CONTENT_TYPE", ""), **values)


def served(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    from config.wsgi import application

    return wsgi_answer(application, environ)


def through_django(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """The full request cycle's answer, nothing in front of it."""
    return wsgi_answer(get_wsgi_application(), environ)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_probe_by_address_gets_what_an_allowed_host_gets(path, method, caplog) -> None:
    with caplog.at_level(logging.INFO):
        by_address = served(request(path, method=method))
    assert by_address[0] == "200 OK"
    assert by_address == through_django(request(path, method=method, host="my.changsha.gov.cn"))
    assert not [r for r in caplog.records if r.name.startswith("django.security")]


@pytest.mark.parametrize(
    "extra",
    [{}, {"HTTP_ACCEPT_LANGUAGE": "zh-CN"}, {"HTTP_ACCEPT": "text/html"}],
    ids=["plain", "chinese", "accept"],
)
def test_an_unready_answer_is_the_views_too(extra, monkeypatch) -> None:
    monkeypatch.setattr(health, "_ask_broker", lambda url: "unavailable")
    by_address = served(request("/readyz", **extra))
    assert by_address[0] == "503 Service Unavailable"
    assert by_address == through_django(request("/readyz", host="my.changsha.gov.cn", **extra))


def test_the_answer_in_front_is_the_full_cycles_for_an_allowed_host_too() -> None:
    environ = request("/healthz", host="my.changsha.gov.cn")
    assert served(environ) == through_django(dict(environ))


@pytest.mark.parametrize(
    ("method", "path", "extra"),
    [
        ("GET", "/healthz/", {}),
        ("GET", "/healthzz", {}),
        ("GET", "/readyz/x", {}),
        ("GET", "/api/v1/services/", {}),
        ("GET", "/admin/", {}),
        ("POST", "/healthz", {}),
        ("OPTIONS", "/readyz", {}),
        ("GET", "/healthz", {"QUERY_STRING": "next=/admin/"}),
        ("GET", "/healthz", {"HTTP_COOKIE": "sessionid=abc"}),
        ("GET", "/healthz", {"HTTP_ACCEPT_LANGUAGE": "en"}),
        ("GET", "/healthz", {"CONTENT_LENGTH": "3", "CONTENT_TYPE": "text/plain"}),
        ("GET", "/healthz", {"HTTP_TRANSFER_ENCODING": "chunked"}),
    ],
)
def test_nothing_else_gets_past_the_host_check(method, path, extra) -> None:
    status, _headers, _body = served(request(path, method=method, **extra))
    assert status.startswith("400 ")


def test_over_https_with_hsts_the_full_cycle_answers(settings) -> None:
    """Django adds Strict-Transport-Security to a secure answer; the layer
    in front does not know it, so it leaves such a request alone."""
    settings.SECURE_HSTS_SECONDS = 3600
    # Made now: SecurityMiddleware reads the setting when it is built.
    application = health.ProbesInFront(get_wsgi_application())
    status, _headers, _body = wsgi_answer(
        application, request("/healthz", **{"wsgi.url_scheme": "https"})
    )
    assert status.startswith("400 ")
    environ = request("/healthz", host="my.changsha.gov.cn", **{"wsgi.url_scheme": "https"})
    assert ("Strict-Transport-Security", "max-age=3600") in wsgi_answer(application, environ)[1]
    # Over plain HTTP (how a load balancer probes) there is none to add.
    plain = wsgi_answer(application, request("/healthz"))
    assert plain[0] == "200 OK"
    assert plain == through_django(request("/healthz", host="my.changsha.gov.cn"))

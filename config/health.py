"""Liveness and readiness probes for the load balancer and orchestrator."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.handlers.wsgi import WSGIRequest
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from kombu import Connection
from kombu.exceptions import KombuError

from config.fastpath import _CHINESE as CHINESE  # the fast paths' language test
from config.fastpath import bodiless
from config.redis_client import REDIS_ERRORS, redis_client

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests; checks nothing else."""
    return JsonResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


def _check_database() -> str:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("readiness: database unavailable: %s", exc)
        return "unavailable"
    return "ok"


# The broker's and Redis's answers are kept this long in each process: a
# check opens a connection, and against a service that drops packets it
# holds the web worker for its time-out; probes (anyone may call /readyz)
# then cost one such wait a process every few seconds, not one each.
BROKER_CHECK_SECONDS = 2.0
REDIS_CHECK_SECONDS = 2.0
_broker_checked: dict[str, tuple[float, str]] = {}
_broker_checking = threading.Lock()
_redis_checked: dict[str, tuple[float, str]] = {}
_redis_checking = threading.Lock()


def _kept_answer(
    url: str,
    kept_answers: dict[str, tuple[float, str]],
    asking: threading.Lock,
    seconds: float,
    ask: Callable[[str], str],
) -> str:
    """``ask(url)``'s answer, asked at most every ``seconds``; a probe that
    comes while another asks takes the last answer (or "unavailable" if
    there is none) instead of waiting for it."""
    kept = kept_answers.get(url)
    if kept is not None and time.monotonic() - kept[0] < seconds:
        return kept[1]
    if not asking.acquire(blocking=False):
        return kept[1] if kept is not None else "unavailable"
    try:
        result = ask(url)
        kept_answers.clear()
        kept_answers[url] = (time.monotonic(), result)
        return result
    finally:
        asking.release()


def _check_broker() -> str:
    return _kept_answer(
        settings.CELERY_BROKER_URL,
        _broker_checked,
        _broker_checking,
        BROKER_CHECK_SECONDS,
        _ask_broker,
    )


def _check_redis() -> str:
    return _kept_answer(
        settings.REDIS_URL, _redis_checked, _redis_checking, REDIS_CHECK_SECONDS, _ask_redis
    )


def _ask_broker(url: str) -> str:
    conn = Connection(
        url,
        connect_timeout=2,
        transport_options=dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS),
    )
    # What the transport itself raises besides kombu's own errors: a broker
    # that answers and refuses (RabbitMQ's AccessRefused for a wrong login,
    # NotAllowed for a missing vhost) is not a recoverable error that kombu
    # would wrap, yet it is as unavailable as one that does not answer.
    refusals = (KombuError, OSError, *conn.connection_errors, *conn.channel_errors)
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    except refusals as exc:
        logger.warning("readiness: broker unavailable: %s", exc)
        return "unavailable"
    finally:
        conn.release()
    return "ok"


def _ask_redis(url: str) -> str:
    # The processes' own client (config.redis_client): its time-outs (2 s),
    # no retries, and the URL the rest of the process uses.
    try:
        redis_client().ping()
    except REDIS_ERRORS as exc:
        logger.warning("readiness: redis unavailable: %s", exc)
        return "unavailable"
    return "ok"


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to take traffic: the database and the Celery broker answer, and
    Redis when REDIS_URL is set (the throttles, the cache and the scan
    buffer need it whichever service carries the tasks)."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis()
    ready = all(value == "ok" for value in checks.values())
    response = JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
    # The check that failed said why (a warning, at most once per
    # BROKER_CHECK_SECONDS for the broker and Redis); Django's "Service Unavailable"
    # error line on every probe of an orchestrator would only bury it.
    response._has_been_logged = True  # type: ignore[attr-defined]  # read by django.utils.log.log_response
    return response


# --- In front of Django's request cycle ----------------------------------------------------------

# What Django's middleware adds to a probe's answer, in the order the full
# cycle writes them around the view's own headers (the parity tests of
# tests/test_probes_in_front.py compare them).
_BEFORE_LENGTH = [("X-Frame-Options", "DENY")]
_AFTER_LENGTH = [
    ("Vary", "Accept-Language"),
    ("Content-Language", "zh-hans"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]


class ProbesInFront:
    """/healthz and /readyz answered before Django's request cycle.

    A load balancer or an orchestrator probes each web process by its
    address (``Host: 10.0.1.11:8000``), which ALLOWED_HOSTS need not list:
    through the full cycle that is a 400 page and a DisallowedHost error
    logged on every probe. Here a probe gets what the full cycle gives an
    allowed host, status, headers and body, from the same views, whatever
    its Host says: the answers name no host and carry nothing of anyone's.

    Only a plain ``GET`` or ``HEAD`` of exactly these two paths is answered:
    no query string, cookie or body, Chinese or no language asked for, and
    not a secure request while HSTS is on (Django's answer would carry the
    header). Everything else, any other path or method included, goes to
    Django unchanged and meets its host check."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        view = _PROBES.get(environ.get("PATH_INFO", ""))
        if view is None or not self._plain(environ):
            return self.app(environ, start_response)
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            response = view(WSGIRequest(environ))
        except Exception:  # the full cycle answers it (and logs it) as it would have
            return self.app(environ, start_response)
        finally:
            signals.request_finished.send(sender=self.__class__)
        body = response.content
        headers = [
            *response.items(),
            *_BEFORE_LENGTH,
            ("Content-Length", str(len(body))),
            *_AFTER_LENGTH,
        ]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [body]

    @staticmethod
    def _plain(environ: dict[str, Any]) -> bool:
        if (
            environ.get("REQUEST_METHOD") not in ("GET", "HEAD")
            or environ.get("QUERY_STRING")
            or environ.get("HTTP_COOKIE")
            or environ.get("CONTENT_TYPE")
            or not bodiless(environ)
            or not CHINESE.fullmatch(environ.get("HTTP_ACCEPT_LANGUAGE", "zh"))
        ):
            return False
        # (SecurityMiddleware's HTTPS redirect leaves the probes alone:
        # SECURE_REDIRECT_EXEMPT.) is_secure reads the scheme, not the host.
        return not (settings.SECURE_HSTS_SECONDS and WSGIRequest(environ).is_secure())


_PROBES: dict[str, Callable[[HttpRequest], JsonResponse]] = {"/healthz": healthz, "/readyz": readyz}

"""Liveness and readiness probes for the load balancer and orchestrator."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from kombu import Connection
from kombu.exceptions import KombuError

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

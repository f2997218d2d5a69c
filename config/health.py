"""Liveness and readiness probes for the load balancer and orchestrator."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from kombu import Connection
from kombu.exceptions import KombuError

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


# The broker's answer is kept this long in each process: a check opens a
# connection, and against a broker that drops packets it holds the web
# worker for its time-out; probes (anyone may call /readyz) then cost one
# such wait a process every few seconds, not one each.
BROKER_CHECK_SECONDS = 2.0
_broker_checked: dict[str, tuple[float, str]] = {}
_broker_checking = threading.Lock()


def _check_broker() -> str:
    """The broker's answer, asked at most every BROKER_CHECK_SECONDS; a
    probe that comes while another asks takes the last answer (or
    "unavailable" if there is none) instead of waiting for it."""
    url = settings.CELERY_BROKER_URL
    kept = _broker_checked.get(url)
    if kept is not None and time.monotonic() - kept[0] < BROKER_CHECK_SECONDS:
        return kept[1]
    if not _broker_checking.acquire(blocking=False):
        return kept[1] if kept is not None else "unavailable"
    try:
        result = _ask_broker(url)
        _broker_checked.clear()
        _broker_checked[url] = (time.monotonic(), result)
        return result
    finally:
        _broker_checking.release()


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


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to take traffic: the database and the Celery broker answer."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    ready = all(value == "ok" for value in checks.values())
    response = JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
    # The check that failed said why (a warning, at most once per
    # BROKER_CHECK_SECONDS for a broker); Django's "Service Unavailable"
    # error line on every probe of an orchestrator would only bury it.
    response._has_been_logged = True  # type: ignore[attr-defined]  # read by django.utils.log.log_response
    return response

"""The sandbox channels calling our notify endpoint, as a channel does:
over HTTP, a moment after the payment, sometimes twice, and again on the
channel's own schedule until the merchant acknowledges.

:func:`payment_pay` is the sandbox cashier (the citizen paying in the
wallet); :func:`notify_send` is one try of one callback, run by the
``payments.sandbox_notify`` task; :func:`notifies_due` lists the callbacks a
lost task left behind, for the payments sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable
from typing import Any

import httpx
from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from kombu.exceptions import OperationalError as BrokerError

from payments.models import SandboxTrade
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for

logger = logging.getLogger(__name__)

NOTIFY_TASK = "payments.sandbox_notify"


def _client() -> httpx.Client:
    # A transport named by setting (the tests deliver to their own process);
    # otherwise over the network to PAYMENTS_NOTIFY_BASE_URL, as a channel does.
    if settings.PAYMENTS_SANDBOX_NOTIFY_TRANSPORT:
        make = import_string(settings.PAYMENTS_SANDBOX_NOTIFY_TRANSPORT)
        return httpx.Client(transport=make(), timeout=10.0)
    return httpx.Client(timeout=10.0, follow_redirects=False)


def nudge(trade_id: int, *, countdown: float, duplicate: bool = False) -> bool:
    try:
        current_app.tasks[NOTIFY_TASK].apply_async(
            (trade_id,),
            {"duplicate": duplicate},
            countdown=min(max(countdown, 0.0), settings.CELERY_MAX_COUNTDOWN),
            retry=False,
        )
    except (BrokerError, OSError) as exc:
        logger.warning("broker unavailable, the payments sweep will send the callback: %s", exc)
        return False
    return True


def payment_pay(*, channel: str, order_no: str, succeed: bool) -> SandboxTrade:
    """The citizen pays (or fails to) in the sandbox wallet; the channel's
    callback follows ``PAYMENTS_SANDBOX_NOTIFY_DELAY_SECONDS`` later.
    Raises :class:`payments.sandbox.books.SandboxRefusal`."""
    with transaction.atomic():
        trade = books.trade_pay(channel=channel, order_no=order_no, succeed=succeed)
        trade_id = trade.pk
        transaction.on_commit(
            lambda: nudge(trade_id, countdown=settings.PAYMENTS_SANDBOX_NOTIFY_DELAY_SECONDS),
            robust=True,
        )
    return trade


def notify_send(trade_id: Any, *, duplicate: bool = False) -> float | None:
    """One try of a trade's callback. Returns the seconds until the next
    try is due, or None when nothing more is to be sent (acknowledged, no
    callback for this outcome, or the channel's schedule is spent)."""
    trade = SandboxTrade.objects.filter(pk=trade_id).first()
    if trade is None or (trade.notified_at is not None and not duplicate):
        return None
    channel = sandbox_for(trade.channel)
    built = channel.payment_notify(trade)
    now = timezone.now()
    if built is None:
        SandboxTrade.objects.filter(pk=trade.pk).update(notified_at=now, notify_due_at=None)
        return None
    headers, body = built
    try:
        with _client() as client:
            response = client.post(trade.notify_url, content=body, headers=headers)
        acknowledged = channel.notify_acknowledged(response)
    except httpx.HTTPError as exc:
        logger.info(
            "sandbox %s callback of %s not answered: %s", trade.channel, trade.order_no, exc
        )
        acknowledged = False
    if duplicate:
        return None
    attempts = trade.notify_attempts + 1
    if acknowledged:
        SandboxTrade.objects.filter(pk=trade.pk).update(
            notify_attempts=attempts, notified_at=now, notify_due_at=None
        )
        if random.random() < settings.PAYMENTS_SANDBOX_DUPLICATE_RATE:  # noqa: S311  (a habit, not a secret)
            # Channels do send the same callback twice now and then.
            nudge(trade.pk, countdown=1.0, duplicate=True)
        return None
    schedule = channel.notify_schedule
    if attempts > len(schedule):
        SandboxTrade.objects.filter(pk=trade.pk).update(
            notify_attempts=attempts, notify_due_at=None
        )
        return None
    wait = schedule[attempts - 1] * settings.PAYMENTS_SANDBOX_TIME_SCALE
    SandboxTrade.objects.filter(pk=trade.pk).update(
        notify_attempts=attempts, notify_due_at=now + dt.timedelta(seconds=wait)
    )
    return wait


def notifies_due(*, limit: int = 200) -> list[int]:
    """Callbacks whose next try is due (their task was lost or is late)."""
    return list(
        SandboxTrade.objects.filter(notified_at__isnull=True, notify_due_at__lte=timezone.now())
        .order_by("notify_due_at")
        .values_list("pk", flat=True)[:limit]
    )


def notifies_sweep(*, held: Callable[[], bool] | None = None) -> int:
    """Send the callbacks whose next try is due, each on its own, asking
    the sweep's ``held`` (its lease, see :func:`payments.orders.sweep_line`)
    before each; returns how many were tried."""
    sent = 0
    for trade_id in notifies_due():
        if held is not None and not held():
            logger.warning("payments sweep (callbacks): its lease was lost to another run")
            break
        try:
            wait = notify_send(trade_id)
        except DatabaseError as exc:
            logger.warning("sandbox callback of trade %s left for later: %s", trade_id, exc)
            continue
        sent += 1
        if wait is not None and wait < settings.PAYMENTS_SWEEP_EVERY_SECONDS:
            nudge(trade_id, countdown=wait)
    return sent

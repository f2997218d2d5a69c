"""Celery tasks of the payments app: thin, idempotent, by id. They run on
the ``payments`` queue (CELERY_TASK_ROUTES)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from payments import notifications, orders, reconciliation, refunds, selectors
from payments.sandbox import notify

logger = logging.getLogger(__name__)


@shared_task(
    name=orders.REFUND_SEND_TASK,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=1,
    max_retries=5,
)
def refund_send(refund_id: str) -> None:
    refunds.refund_send(refund_id)


@shared_task(
    name=notifications.NOTIFY_APPLY_TASK,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=1,
    max_retries=5,
)
def notifies_apply() -> None:
    """Apply the callbacks the notify endpoint wrote down."""
    notifications.notifies_drain()


@shared_task(name=notify.NOTIFY_TASK, acks_late=True, ignore_result=True, bind=True)
def sandbox_notify(self: Any, trade_id: int, duplicate: bool = False) -> None:
    wait = notify.notify_send(trade_id, duplicate=duplicate)
    # Run eagerly (tests), a retry is left to the sweep instead of recursing.
    if wait is not None and not self.request.is_eager:
        notify.nudge(trade_id, countdown=wait)


@shared_task(name="payments.sweep", acks_late=True, ignore_result=True)
def payments_sweep() -> dict[str, int]:
    """Received callbacks no worker applied, ended orders closed at their
    channel where that failed before, pending orders queried or closed,
    refunds sent or queried, and, in sandbox mode, the sandbox's
    overdue callbacks."""
    return {
        "applied": _step("applied", lambda: notifications.notifies_apply_waiting()[1]),
        # Orders closed here that their channel could still take a payment
        # for (before the orders step: a close that has just failed there
        # waits for the next sweep).
        "closes": _step("closes", orders.orders_close_owed),
        # The safety net for callbacks lost on the way: it runs whatever
        # became of the steps before.
        "orders": _step("orders", orders.orders_sweep),
        "refunds": _step("refunds", refunds.refunds_sweep),
        "callbacks": _step("callbacks", notify.notifies_sweep) if settings.PAYMENTS_SANDBOX else 0,
    }


def _step(name: str, work: Callable[[], int]) -> int:
    """One part of the sweep; one that fails is logged, not the end of the others."""
    try:
        return work()
    except Exception:  # noqa: BLE001  (the next sweep tries again)
        logger.exception("payments sweep: the %s step failed", name)
        return 0


@shared_task(name="payments.reconcile", acks_late=True, ignore_result=True)
def reconcile_yesterday() -> int:
    """Yesterday's statements (China time) against the ledger; running it
    again replaces the day's open mismatches. Returns the mismatches found."""
    reports = reconciliation.reconcile(date=selectors.china_today() - dt.timedelta(days=1))
    return sum(report.mismatches for report in reports)

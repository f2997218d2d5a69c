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

from config import leases
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


# One run of the sweep at a time (beat sends one every 15 s; a run with a
# channel slow to answer lasts longer): a second would call the same
# channels about the same orders and refunds. A step goes through up to
# 200 orders or refunds a line (500 callbacks), each with up to three
# calls to its channel of ANSWER_SECONDS at most, so the lease is checked
# before each of them and renewed as the step goes (Lease.keep, at least
# every tenth of this): each begins with nine tenths of this left, far
# longer than one takes. A worker killed in a run holds the sweep back
# this long at most.
SWEEP_LEASE = "payments:sweep"
SWEEP_LEASE_SECONDS = 300


@shared_task(name="payments.sweep", acks_late=True, ignore_result=True)
def payments_sweep() -> dict[str, int]:
    """Received callbacks no worker applied, ended orders closed at their
    channel where that failed before, pending orders queried or closed,
    refunds sent or queried, and, in sandbox mode, the sandbox's
    overdue callbacks. Nothing (``{}``) if another run is under way; what
    was done until then if its lease was lost (it ran out and another run
    has it: see :data:`SWEEP_LEASE_SECONDS`)."""
    lease = leases.Lease(SWEEP_LEASE, seconds=SWEEP_LEASE_SECONDS)
    if not lease.take():
        logger.info("payments sweep: another run is under way")
        return {}
    try:
        return _steps(
            lease,
            ("applied", lambda held: notifications.notifies_apply_waiting(held=held)[1]),
            # Orders closed here that their channel could still take a
            # payment for (before the orders step: a close that has just
            # failed there waits for the next sweep).
            ("closes", lambda held: orders.orders_close_owed(held=held)),
            # The safety net for callbacks lost on the way: it runs whatever
            # became of the steps before.
            ("orders", lambda held: orders.orders_sweep(held=held)),
            ("refunds", lambda held: refunds.refunds_sweep(held=held)),
            (
                "callbacks",
                lambda held: notify.notifies_sweep(held=held) if settings.PAYMENTS_SANDBOX else 0,
            ),
        )
    finally:
        lease.give_back()


Step = Callable[[Callable[[], bool]], int]


def _steps(lease: leases.Lease, *steps: tuple[str, Step]) -> dict[str, int]:
    """The steps in turn, each given ``lease.keep`` to ask before each of
    its orders, refunds or callbacks; none after the lease was lost."""
    done: dict[str, int] = {}
    for name, work in steps:
        if not lease.keep():
            # Its time ran out, and another run has it.
            logger.warning("payments sweep: another run took over before the %s step", name)
            return done
        done[name] = _step(name, work, lease.keep)
    return done


def _step(name: str, work: Step, held: Callable[[], bool]) -> int:
    """One part of the sweep; one that fails is logged, not the end of the others."""
    try:
        return work(held)
    except Exception:  # noqa: BLE001  (the next sweep tries again)
        logger.exception("payments sweep: the %s step failed", name)
        return 0


@shared_task(name="payments.reconcile", acks_late=True, ignore_result=True)
def reconcile_yesterday() -> int:
    """Yesterday's statements (China time) against the ledger; running it
    again replaces the day's open mismatches. Returns the mismatches found."""
    reports = reconciliation.reconcile(date=selectors.china_today() - dt.timedelta(days=1))
    return sum(report.mismatches for report in reports)

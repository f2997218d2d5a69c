"""Refunds in conversation with the channels: sending a refund, asking
where it stands, and refunding a cancelled paid application.

The rules (how much may go back, what the ledger records) are in
:mod:`payments.orders`; this module only carries requests to the channel and
its answers back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone

from payments import orders, selectors
from payments.errors import PaymentsError
from payments.models import OrderStatus, PaymentOrder, Refund, RefundStatus
from payments.providers.base import ProviderError, RefundResult

logger = logging.getLogger(__name__)


def refund_send(refund_id: Any) -> bool:
    """Send a pending refund to its channel (again: the channel is
    idempotent on the refund number) and apply the answer. False if the
    channel could not be reached; the payments sweep tries again."""
    return _send(refund_id)[0]


def _send(refund_id: Any) -> tuple[bool, bool]:
    """:func:`refund_send`, and whether the refund's channel is down: its
    last call (the refund, or the query that followed a refusal) could not
    reach it (``ProviderError.unreachable``; see
    :func:`payments.orders.sweep_line`)."""
    refund = Refund.objects.select_related("order").filter(pk=refund_id).first()
    if refund is None or refund.status != RefundStatus.PENDING:
        return True, False
    order = refund.order
    try:
        result = orders.provider(order.channel).refund_create(
            order_no=order.order_no,
            refund_no=refund.refund_no,
            amount_fen=refund.amount_fen,
            total_fen=order.paid_fen,
            reason=refund.reason,
        )
    except ProviderError as exc:
        if exc.retryable:
            # Sent again by the sweep (the same refund number); what holds
            # it is shown to operators (a balance too short, the channel
            # unreachable) until it settles. Only a channel that could not
            # be reached is down: a balance too short is this refund's.
            logger.warning("refund %s not sent: %s", refund.refund_no, exc)
            # By its id (see selectors.pending_as_filter): not along
            # refund_status_due through every pending refund.
            Refund.objects.filter(selectors.pending_as_filter(RefundStatus), pk=refund.pk).update(
                failure_reason=str(exc)[:200]
            )
            return False, exc.unreachable
        # A refusal (the channel's own word; an answer that is not its word
        # was retryable above): the channel's record decides. Only a refund
        # the channel does not know is failed (and its amount free again);
        # one it knows takes its state.
        known = _as_the_channel_knows_it(refund, refused=exc)
        if isinstance(known, ProviderError):
            return False, known.unreachable
        result = known
    Refund.objects.filter(pk=refund.pk, submitted_at__isnull=True).update(
        submitted_at=timezone.now()
    )
    orders.refund_apply_result(refund=refund, result=result)
    return True, False


def _as_the_channel_knows_it(
    refund: Refund, *, refused: ProviderError
) -> RefundResult | ProviderError:
    """The refund as its channel knows it after a refusal, or the query's
    failure if that cannot be told."""
    order = refund.order
    channel = orders.provider(order.channel)
    try:
        return channel.refund_query(order_no=order.order_no, refund_no=refund.refund_no)
    except ProviderError as exc:
        if not channel.refund_unknown(exc):
            # Unreachable, or an answer we cannot read or trust: the money
            # may have gone back, so the refund keeps its amount and is
            # sent again (the channel is idempotent on the refund number).
            logger.warning(
                "refund %s refused (%s) and its state at the channel unknown: %s",
                refund.refund_no,
                refused,
                exc,
            )
            return exc
    return RefundResult(refund_no=refund.refund_no, state="failed", failure_reason=str(refused))


def refund_check(refund: Refund) -> bool:
    """Ask the channel where a submitted refund stands and apply it."""
    return _check(refund)[0]


def _check(refund: Refund) -> tuple[bool, bool]:
    """:func:`refund_check`, and whether the refund's channel is down: the
    query could not reach it (see :func:`payments.orders.sweep_line`)."""
    order = refund.order
    try:
        result = orders.provider(order.channel).refund_query(
            order_no=order.order_no, refund_no=refund.refund_no
        )
    except ProviderError as exc:
        logger.info("query of refund %s failed: %s", refund.refund_no, exc)
        return False, exc.unreachable
    return orders.refund_apply_result(refund=refund, result=result), False


def refunds_sweep(*, limit: int = 200, held: Callable[[], bool] | None = None) -> int:
    """Pending refunds: send those no worker sent, query those sent. Least
    recently tried first: one whose channel is off or keeps failing goes to
    the back of the line instead of holding up the rest. A channel that
    cannot be reached is tried once in the step, sends and queries
    together (:func:`payments.orders.sweep_line`, which asks ``held``
    before each refund). Returns the refunds sent or settled."""
    now = timezone.now()
    quiet = now - dt.timedelta(seconds=settings.PAYMENTS_QUERY_AFTER_SECONDS)
    least_recently_tried = (F("last_queried_at").asc(nulls_first=True), "created_at", "pk")
    handled = 0
    down: set[str] = set()

    def each(step: Callable[[Refund], tuple[bool, bool]]) -> Callable[[Refund], orders.Tried]:
        def attempt(refund: Refund) -> orders.Tried:
            nonlocal handled
            # Marked tried, whatever comes of it.
            Refund.objects.filter(pk=refund.pk).update(last_queried_at=timezone.now())
            try:
                done, channel_down = step(refund)
            except (PaymentsError, ProviderError, DatabaseError) as exc:
                logger.warning("payments sweep: refund %s left for later: %s", refund.pk, exc)
                return "left"
            handled += done
            return "down" if channel_down else "done"

        return attempt

    # Their orders looked up by key afterwards, a batch at a time: joined,
    # PostgreSQL read every order there is into a hash once about one order
    # in 160 had a sent refund (100,000 orders and 1,000 sent: 59 ms a
    # sweep instead of 1 ms). Only a run that found a channel down leaves
    # that channel's out by a join.
    unsent = (
        Refund.objects.filter(
            status=RefundStatus.PENDING,
            submitted_at__isnull=True,
            created_at__lte=now - dt.timedelta(seconds=10),
        )
        .prefetch_related("order")
        .order_by(*least_recently_tried)
    )
    sent = (
        Refund.objects.filter(status=RefundStatus.PENDING, submitted_at__isnull=False)
        .exclude(last_queried_at__gt=quiet)
        .prefetch_related("order")
        .order_by(*least_recently_tried)
    )
    lines = (
        ("refund sends", unsent, lambda refund: _send(refund.pk)),
        ("refund queries", sent, _check),
    )
    for step, line, work in lines:
        orders.sweep_line(
            line,
            limit=limit,
            step=step,
            attempt=each(work),
            channel="order__channel",
            down=down,
            what="refunds",
            held=held,
        )
    return handled


def application_cancelled(event: Any) -> None:
    """Subscriber of ``application.cancelled``: its open orders close, so
    the withdrawn application can no longer be paid, and what was paid for
    it and not yet refunded goes back in full. Idempotent: a second run
    finds nothing left to close or refund."""
    if event.application_id is None:
        return
    orders.orders_close_open(application_id=event.application_id, reason="application_cancelled")
    paid = PaymentOrder.objects.filter(
        application_id=event.application_id,
        status__in=(OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED),
    )
    for order in paid:
        orders.refund_what_is_left(order)

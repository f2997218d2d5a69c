"""Callbacks from the channels (支付结果通知): authenticate, check, apply once.

Whatever arrives is logged (:class:`payments.models.NotifyLog`). A callback
that is not authentic, names an order we do not have, or disagrees with the
order (channel, merchant, amount) changes nothing, is answered with a 4xx in
the channel's own failure format and goes to the audit trail. A genuine one
is written down (in the Redis inbox, :mod:`payments.inbox`, or as a row)
and acknowledged at once; a worker then applies it under the order's row
lock, once per channel transaction id. A repeat of a recorded payment is
acknowledged like the first, so the channel stops sending it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from accounts.audit import audit_record
from config.api import ThrottleWindow
from config.queries import equal_unindexed
from config.redis_client import REDIS_ERRORS, redis_enabled
from payments import inbox, orders
from payments.errors import PAYMENT_RESULT_MISMATCH, PaymentsError
from payments.models import NotifyLog, NotifyOutcome, PaymentOrder
from payments.providers.base import (
    NotifyNotAPayment,
    NotifyRejected,
    NotifyReply,
    PaymentResult,
    storable,
)

logger = logging.getLogger(__name__)

# The HTTP status we refuse with, by reason (the body is the channel's).
REFUSAL_STATUS = {
    "bad_signature": 401,
    "unknown_key": 401,
    "stale_timestamp": 401,
    "unknown_order": 404,
}
EXCERPT_CHARS = 2000
NOTIFY_APPLY_TASK = "payments.notifies_apply"
DRAIN_BATCH = 500
APPLY_ATTEMPTS = 10
# Set while a drain of the received callbacks is on its way to a worker;
# callbacks that arrive meanwhile need no nudge of their own.
NUDGED_KEY = "payments:notifies-nudged"
NUDGED_SECONDS = 2


def _log(
    *,
    channel: str,
    outcome: str,
    reason: str = "",
    body: bytes,
    client_ip: str | None,
    result: PaymentResult | None = None,
) -> NotifyLog:
    return NotifyLog.objects.create(
        channel=channel,
        outcome=outcome,
        reason=reason,
        order_no=storable(result.order_no if result else "", 64),
        transaction_id=storable(result.transaction_id if result else "", 64),
        client_ip=client_ip,
        body_excerpt=storable(body[:EXCERPT_CHARS].decode("utf-8", "replace"), EXCERPT_CHARS),
        result=_stored(result)
        if result is not None and outcome != NotifyOutcome.REJECTED
        else None,
    )


def _stored(result: PaymentResult) -> dict[str, Any]:
    """What a callback said, fit for a JSON column (the channel's strings
    pass :func:`~payments.providers.base.storable`: PostgreSQL's jsonb refuses NUL)."""
    return {
        "order_no": storable(result.order_no, 64),
        "state": result.state,
        "transaction_id": storable(result.transaction_id, 64),
        "amount_fen": result.amount_fen,
        "merchant_id": storable(result.merchant_id, 64),
        "app_id": storable(result.app_id, 64),
        "paid_at": result.paid_at.isoformat() if result.paid_at else None,
        "raw_state": storable(result.raw_state, 64),
    }


def _refuse(
    channel: str,
    reason: str,
    *,
    body: bytes,
    client_ip: str | None,
    result: PaymentResult | None = None,
) -> NotifyReply:
    logger.warning("%s callback refused: %s", channel, reason)
    _log(
        channel=channel,
        outcome=NotifyOutcome.REJECTED,
        reason=reason,
        body=body,
        client_ip=client_ip,
        result=result,
    )
    audit_record(
        actor=None,
        action="payment.notify_rejected",
        data={
            "channel": channel,
            "reason": reason,
            "order_no": storable(result.order_no if result else "", 64),
        },
        ip=client_ip,
    )
    reply = orders.provider(channel).notify_reply(accepted=False, message=reason)
    return NotifyReply(
        status=REFUSAL_STATUS.get(reason, 400),
        body=reply.body,
        content_type=reply.content_type,
        headers=reply.headers,
    )


class Throttled(Exception):
    """The caller is over its rate (see ``window`` of :func:`notify_receive`)."""


def notify_receive(
    *,
    channel: str,
    headers: Mapping[str, str],
    body: bytes,
    client_ip: str | None,
    window: ThrottleWindow | None = None,
) -> NotifyReply:
    """Handle one callback of ``channel`` and say what to answer.

    An authentic callback that fits its order is written down (the inbox
    entry or row is committed: the view runs outside any transaction) and
    acknowledged; a worker applies it under the order's lock
    (:func:`notify_apply`), woken at once and, should that nudge be lost,
    found by the payments sweep. The channel's retries stop as soon as the
    payment is safe with us, not when everything that follows it is done.

    ``window``: the caller's throttle window, counted here (raising
    :class:`Throttled` when over) before anything is written, in the same
    round trip as the order's facts when it can; the view's throttle has
    counted already and passes none."""
    provider = orders.provider(channel)
    try:
        result = provider.notify_parse(headers=headers, body=body)
    except NotifyRejected as exc:
        _admit(window)
        return _refuse(channel, exc.reason, body=body, client_ip=client_ip)
    except NotifyNotAPayment as exc:
        _admit(window)
        logger.info("%s callback about something else acknowledged: %s", channel, exc)
        _log(
            channel=channel,
            outcome=NotifyOutcome.IGNORED,
            reason="not_a_payment",
            body=body,
            client_ip=client_ip,
        )
        return provider.notify_reply(accepted=True)
    credentials = provider.credentials
    if result.merchant_id and result.merchant_id != credentials.merchant_id:
        _admit(window)
        return _refuse(channel, "wrong_merchant", body=body, client_ip=client_ip, result=result)
    order_no = storable(result.order_no, 64)
    entry = _entry(channel, body, client_ip, result) if inbox.enabled() else None
    order, written, entry = _facts_or_written(order_no, window, channel, result, entry)
    if written:
        return provider.notify_reply(accepted=True)
    accepted, verdict = _verdict(channel, result, order)
    if not accepted or order is None:
        return _refuse(channel, verdict, body=body, client_ip=client_ip, result=result)
    if not _may_wait_in_redis(order, verdict):
        entry = None
    _record(
        channel=channel, outcome=verdict, body=body, client_ip=client_ip, result=result, entry=entry
    )
    return provider.notify_reply(accepted=True)


def _verdict(
    channel: str, result: PaymentResult, order: inbox.OrderFacts | None
) -> tuple[bool, str]:
    """A callback against its order's facts: (True, the outcome it is
    written down with) or (False, why it is refused)."""
    if order is None:
        return False, "unknown_order"
    if order.channel != channel:
        return False, "wrong_channel"
    if result.state == "paid" and result.amount_fen != order.amount_fen:
        return False, "amount_mismatch"
    if result.state == "paid" and order.transaction_id == result.transaction_id:
        # On the books already (the transaction id is set with its charge,
        # in one transaction): a repeat, answered as the first was.
        return True, NotifyOutcome.DUPLICATE
    if result.state == "pending":
        return True, NotifyOutcome.IGNORED
    return True, NotifyOutcome.RECEIVED


def _may_wait_in_redis(order: inbox.OrderFacts, outcome: str) -> bool:
    """Whether an accepted callback may be acknowledged from the Redis
    inbox. A received one for an order no longer pending (a success after
    a failure or a close) is the only word of that payment, as the sweep
    queries pending orders only: it is written to the database first."""
    return order.pending or outcome != NotifyOutcome.RECEIVED


def _accepted_under(channel: str, result: PaymentResult) -> dict[inbox.OrderFacts, str]:
    """The order facts under which this callback is accepted at once and
    may wait in Redis (the order pending and unpaid, or paid by this very
    transaction), each with the outcome :func:`_verdict` gives: what the
    door's one Redis round trip compares with."""
    candidates = (
        inbox.OrderFacts(channel, result.amount_fen, "", pending=True),
        inbox.OrderFacts(channel, result.amount_fen, result.transaction_id, pending=False),
    )
    found = {}
    for facts in candidates:
        accepted, outcome = _verdict(channel, result, facts)
        if accepted and _may_wait_in_redis(facts, outcome):
            found[facts] = outcome
    return found


def _admit(window: ThrottleWindow | None) -> None:
    if window is not None and not window.admit():
        raise Throttled


def _facts_or_written(
    order_no: str,
    window: ThrottleWindow | None,
    channel: str,
    result: PaymentResult,
    entry: dict[str, str] | None,
) -> tuple[inbox.OrderFacts | None, bool, dict[str, str] | None]:
    """(the order's facts the callback is checked against, whether it is
    written down already, the inbox entry or None if Redis is not to be
    used for it).

    With the Redis inbox, one round trip counts the caller, reads the
    facts and, when they are ones the callback is accepted under, appends
    it (:func:`payments.inbox.inbox_offer`); facts missing there are read
    from the order (and copied for the next). Without it, or with Redis
    failing (it is not asked again for this callback: a Redis that hangs
    would cost its timeout each time), the caller is counted, then the
    order read."""
    if entry is not None:
        try:
            offer = inbox.inbox_offer(
                order_no,
                window=window,
                accepted_under=_accepted_under(channel, result),
                entry=entry,
                nudge_key=NUDGED_KEY,
                nudge_seconds=NUDGED_SECONDS,
            )
        except REDIS_ERRORS as exc:
            logger.warning(
                "Redis inbox unavailable (the throttle does not count this callback), "
                "the callback goes to the database: %s",
                exc,
            )
            entry = None
        else:
            if window is not None and offer.count is not None and not window.admits(offer.count):
                raise Throttled
            if offer.appended:
                if offer.marked:  # every entry is moved by a drain, not only received ones
                    transaction.on_commit(_publish_drain, robust=True)
                return None, True, entry
            if offer.facts is not None:
                return offer.facts, False, entry
    else:
        _admit(window)
    order = (
        PaymentOrder.objects.filter(order_no=order_no)
        .only(
            "order_no", "channel", "amount_fen", "provider_transaction_id", "status", "expires_at"
        )
        .first()
    )
    if order is None:
        return None, False, entry
    if entry is not None:
        inbox.facts_remember(order, unless_there=True)
    return inbox.OrderFacts.of(order), False, entry


def _entry(
    channel: str, body: bytes, client_ip: str | None, result: PaymentResult
) -> dict[str, str]:
    """The callback as a Redis inbox entry (its outcome is added when it is
    appended)."""
    return inbox.entry(
        channel=channel,
        order_no=storable(result.order_no, 64),
        transaction_id=storable(result.transaction_id, 64),
        client_ip=client_ip,
        body_excerpt=storable(body[:EXCERPT_CHARS].decode("utf-8", "replace"), EXCERPT_CHARS),
        result=_stored(result),
    )


def _record(
    *,
    channel: str,
    outcome: str,
    body: bytes,
    client_ip: str | None,
    result: PaymentResult,
    entry: dict[str, str] | None,
) -> None:
    """Write an accepted callback down: in the Redis inbox (with the
    worker's nudge in the same round trip), or, without it or with Redis
    away, as a NotifyLog row."""
    if entry is not None:
        try:
            due = inbox.inbox_add(
                {"outcome": outcome, **entry}, nudge_key=NUDGED_KEY, nudge_seconds=NUDGED_SECONDS
            )
        except REDIS_ERRORS as exc:
            logger.warning("Redis inbox unavailable, the callback goes to the database: %s", exc)
        else:
            if due:  # every entry is moved by a drain, not only received ones
                transaction.on_commit(_publish_drain, robust=True)
            return
    _log(channel=channel, outcome=outcome, body=body, client_ip=client_ip, result=result)
    if outcome == NotifyOutcome.RECEIVED:
        transaction.on_commit(notifies_nudge, robust=True)


def notifies_nudge() -> bool:
    """Wake a worker to apply the received callbacks now rather than at the
    next sweep (the rows are the truth; a lost nudge loses nothing).

    With a cache the web and the workers share (Redis), one nudge serves
    every callback that arrives before its drain starts: the drain clears
    the mark first and then reads every waiting row, so a callback either
    finds the mark cleared and nudges, or is read by the drain the mark
    stands for. Publishing a task costs more than handling the callback;
    this pays it about once per drain instead of once per callback."""
    shared = settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    try:
        if shared and not cache.add(NUDGED_KEY, 1, timeout=NUDGED_SECONDS):
            return True
    except REDIS_ERRORS as exc:  # cache down: nudge anyway, it is only a shortcut
        logger.warning("cache unavailable; nudging without the mark: %s", exc)
    return _publish_drain()


def _publish_drain() -> bool:
    try:
        current_app.tasks[NOTIFY_APPLY_TASK].apply_async(retry=False)
    except (BrokerError, OSError) as exc:
        logger.warning("broker unavailable, the payments sweep will apply the callbacks: %s", exc)
        return False
    return True


def notifies_drain() -> int:
    """What a nudge starts: clear the mark, then apply the received
    callbacks, one batch (see :func:`notifies_nudge`). A full batch nudges
    again rather than holding the worker: other payments work waits on the
    same queue."""
    try:
        cache.delete(NUDGED_KEY)
    except REDIS_ERRORS as exc:  # the mark expires by itself
        logger.warning("cache unavailable; the nudge mark expires by itself: %s", exc)
    seen, applied = notifies_apply_waiting(limit=DRAIN_BATCH)
    if seen == DRAIN_BATCH:
        _publish_drain()
    return applied


def notify_apply(*, log_id: int) -> str | None:
    """Apply one received callback to its order, once: the row is claimed
    (rows another worker holds are skipped), applied and marked in one
    transaction, and the ledger keeps one charge per channel transaction id
    whoever applies first. Returns the outcome, or None if there was nothing
    to do.

    The channel was told "success" already, so what goes wrong here stays
    with us. The channel's word not fitting the order (another amount or
    merchant) is final: the row is rejected and audited. Anything else
    (the channel not configured on this worker, a bug) may pass: the row
    stays received, its attempts counted, for the next drain or sweep; after
    APPLY_ATTEMPTS it is parked as rejected (``apply_failed``) and audited,
    for an operator. The order's query (主动查单) brings the money in
    regardless."""
    with transaction.atomic():
        # Looked up by its id alone: "received" said as none of the other
        # outcomes (no index takes that as a condition), and no order
        # (NotifyLog's, received_at, is what notify_to_apply gives). With
        # statistics older than a burst of callbacks, PostgreSQL walked
        # notify_to_apply back through every received one for each
        # callback it applied (10,000 waiting: 7.1 ms a callback, not 0.14 ms).
        log = (
            NotifyLog.objects.select_for_update(skip_locked=True)
            .filter(equal_unindexed("outcome", NotifyOutcome.RECEIVED), pk=log_id)
            .order_by("pk")
            .first()
        )
        if log is None or not log.result:
            return None
        result = _result(log.result)
        order = PaymentOrder.objects.filter(order_no=result.order_no).first()
        reason = ""
        outcome: str
        try:
            if order is None:
                raise PaymentsError(PAYMENT_RESULT_MISMATCH, extra={"reason": "unknown_order"})
            with transaction.atomic():
                outcome = orders.order_apply_result(order=order, result=result, source="notify")
        except PaymentsError as exc:
            if exc.code != PAYMENT_RESULT_MISMATCH.code:
                return _apply_failed(log, result, exc.code)
            outcome, reason = NotifyOutcome.REJECTED, str(exc.extra.get("reason", exc.code))
            _audit_after_acknowledging(log, result, reason)
        except Exception:  # noqa: BLE001  (one row must not stop the others; counted, then parked)
            logger.exception("callback %s for %s could not be applied", log_id, result.order_no)
            return _apply_failed(log, result, "error")
        log.outcome, log.reason, log.handled_at = outcome, reason, timezone.now()
        log.save(update_fields=["outcome", "reason", "handled_at"])
    return outcome


def _apply_failed(log: NotifyLog, result: PaymentResult, reason: str) -> str | None:
    log.apply_attempts += 1
    log.reason = reason[:64]
    fields = ["apply_attempts", "reason"]
    if log.apply_attempts >= APPLY_ATTEMPTS:
        log.outcome, log.handled_at = NotifyOutcome.REJECTED, timezone.now()
        fields += ["outcome", "handled_at"]
        _audit_after_acknowledging(log, result, f"apply_failed:{reason}")
    log.save(update_fields=fields)
    return None


def _audit_after_acknowledging(log: NotifyLog, result: PaymentResult, reason: str) -> None:
    audit_record(
        actor=None,
        action="payment.notify_not_applied",
        data={
            "channel": log.channel,
            "order_no": result.order_no,
            "transaction_id": result.transaction_id,
            "amount_fen": result.amount_fen,
            "reason": reason,
            "notify_log": log.pk,
        },
    )


def notifies_collect(*, limit: int = DRAIN_BATCH) -> int:
    """Move callbacks waiting in the Redis inbox into NotifyLog rows (see
    :mod:`payments.inbox`); with Redis, whatever PAYMENTS_NOTIFY_INBOX says
    now, so that nothing written there earlier stays behind. Returns how
    many entries were moved."""
    if not redis_enabled():
        return 0
    try:
        return inbox.inbox_move(limit=limit)
    except (*REDIS_ERRORS, DatabaseError) as exc:  # type: ignore[misc]  # a tuple of exception classes
        logger.warning("the Redis inbox cannot be moved now, its callbacks wait: %s", exc)
        return 0


def notifies_apply_waiting(
    *, limit: int = DRAIN_BATCH, held: Callable[[], bool] | None = None
) -> tuple[int, int]:
    """Apply the received callbacks, oldest first, each on its own (the
    drain, and the sweep for those whose nudge was lost), after moving
    those in the Redis inbox into rows. The sweep's ``held`` (its lease,
    see :func:`payments.orders.sweep_line`) is asked before each row: a
    callback applied may close its order at the channel. Returns (entries
    or rows looked at, rows applied)."""
    moved = notifies_collect(limit=limit)
    waiting = list(
        NotifyLog.objects.filter(outcome=NotifyOutcome.RECEIVED)
        .order_by("received_at")
        .values_list("pk", flat=True)[:limit]
    )
    applied = 0
    for log_id in waiting:
        if held is not None and not held():
            logger.warning("payments sweep (applied): its lease was lost to another run")
            break
        try:
            applied += notify_apply(log_id=log_id) is not None
        except DatabaseError as exc:
            logger.warning("callback %s left for later: %s", log_id, exc)
    return max(moved, len(waiting)), applied


def _result(stored: dict[str, Any]) -> PaymentResult:
    paid_at = stored.get("paid_at")
    return PaymentResult(
        order_no=stored["order_no"],
        state=stored["state"],
        transaction_id=stored.get("transaction_id", ""),
        amount_fen=stored.get("amount_fen", 0),
        merchant_id=stored.get("merchant_id", ""),
        app_id=stored.get("app_id", ""),
        paid_at=dt.datetime.fromisoformat(paid_at) if paid_at else None,
        raw_state=stored.get("raw_state", ""),
    )

"""Callbacks from the channels (支付结果通知): authenticate, check, apply once.

Whatever arrives is logged (:class:`payments.models.NotifyLog`). A callback
that is not authentic, names an order we do not have, or disagrees with the
order (channel, merchant, amount) changes nothing, is answered with a 4xx in
the channel's own failure format and goes to the audit trail. A genuine one
is written down (the row is the inbox) and acknowledged at once; a worker
then applies it under the order's row lock, once per channel transaction
id. A repeat of a recorded payment is acknowledged like the first, so the
channel stops sending it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from redis import RedisError

from accounts.audit import audit_record
from payments import orders
from payments.errors import PaymentsError
from payments.models import NotifyLog, NotifyOutcome, PaymentOrder
from payments.providers.base import NotifyRejected, NotifyReply, PaymentResult

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
# Set while a drain of the received callbacks is on its way to a worker;
# callbacks that arrive meanwhile need no nudge of their own.
NUDGED_KEY = "payments:notifies-nudged"
NUDGED_SECONDS = 2


def _storable(text: str, limit: int) -> str:
    """Text from a caller we do not trust, fit for a text column and JSON:
    no NUL (PostgreSQL refuses it), no lone surrogates, bounded."""
    return text[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


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
        order_no=_storable(result.order_no if result else "", 64),
        transaction_id=_storable(result.transaction_id if result else "", 64),
        client_ip=client_ip,
        body_excerpt=_storable(body[:EXCERPT_CHARS].decode("utf-8", "replace"), EXCERPT_CHARS),
        result=_stored(result)
        if result is not None and outcome != NotifyOutcome.REJECTED
        else None,
    )


def _stored(result: PaymentResult) -> dict[str, Any]:
    return {
        "order_no": result.order_no,
        "state": result.state,
        "transaction_id": result.transaction_id,
        "amount_fen": result.amount_fen,
        "merchant_id": result.merchant_id,
        "app_id": result.app_id,
        "paid_at": result.paid_at.isoformat() if result.paid_at else None,
        "raw_state": result.raw_state,
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
            "order_no": _storable(result.order_no if result else "", 64),
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


def notify_receive(
    *, channel: str, headers: Mapping[str, str], body: bytes, client_ip: str | None
) -> NotifyReply:
    """Handle one callback of ``channel`` and say what to answer.

    An authentic callback that fits its order is written down (the inbox
    row is committed: the view runs outside any transaction) and
    acknowledged; a worker applies it under the order's lock
    (:func:`notify_apply`), woken at once and, should that nudge be lost,
    found by the payments sweep. The channel's retries stop as soon as the
    payment is safe with us, not when everything that follows it is done."""
    provider = orders.provider(channel)
    try:
        result = provider.notify_parse(headers=headers, body=body)
    except NotifyRejected as exc:
        return _refuse(channel, exc.reason, body=body, client_ip=client_ip)
    credentials = provider.credentials
    if result.merchant_id and result.merchant_id != credentials.merchant_id:
        return _refuse(channel, "wrong_merchant", body=body, client_ip=client_ip, result=result)
    order = (
        PaymentOrder.objects.filter(order_no=_storable(result.order_no, 64))
        .only("id", "channel", "amount_fen", "provider_transaction_id")
        .first()
    )
    if order is None:
        return _refuse(channel, "unknown_order", body=body, client_ip=client_ip, result=result)
    if order.channel != channel:
        return _refuse(channel, "wrong_channel", body=body, client_ip=client_ip, result=result)
    if result.state == "paid" and result.amount_fen != order.amount_fen:
        return _refuse(channel, "amount_mismatch", body=body, client_ip=client_ip, result=result)
    if result.state == "paid" and order.provider_transaction_id == result.transaction_id:
        # On the books already (the transaction id is set with its charge,
        # in one transaction): a repeat, answered as the first was.
        outcome = NotifyOutcome.DUPLICATE
    elif result.state == "pending":
        outcome = NotifyOutcome.IGNORED
    else:
        outcome = NotifyOutcome.RECEIVED
    _log(channel=channel, outcome=outcome, body=body, client_ip=client_ip, result=result)
    if outcome == NotifyOutcome.RECEIVED:
        transaction.on_commit(notifies_nudge, robust=True)
    return provider.notify_reply(accepted=True)


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
    except (RedisError, OSError) as exc:  # cache down: nudge anyway, it is only a shortcut
        logger.warning("cache unavailable; nudging without the mark: %s", exc)
    try:
        current_app.tasks[NOTIFY_APPLY_TASK].apply_async(retry=False)
    except (BrokerError, OSError) as exc:
        logger.warning("broker unavailable, the payments sweep will apply the callbacks: %s", exc)
        return False
    return True


def notifies_drain() -> int:
    """What a nudge starts: clear the mark, then apply every received
    callback (see :func:`notifies_nudge`)."""
    try:
        cache.delete(NUDGED_KEY)
    except (RedisError, OSError) as exc:  # the mark expires by itself
        logger.warning("cache unavailable; the nudge mark expires by itself: %s", exc)
    applied = 0
    while True:
        done = notifies_apply_waiting(older_than=-1)
        applied += done
        if not done:
            return applied


def notify_apply(log_id: int) -> str | None:
    """Apply one received callback to its order, once (the ledger keeps one
    charge per channel transaction id, whoever applies it first). Returns
    the outcome, or None if it was applied already. A refusal of the rules
    (the channel's word does not fit the order any more) is recorded on the
    row and audited; a database failure leaves it for the sweep."""
    log = NotifyLog.objects.filter(pk=log_id, outcome=NotifyOutcome.RECEIVED).first()
    if log is None or not log.result:
        return None
    result = _result(log.result)
    order = PaymentOrder.objects.filter(order_no=result.order_no).first()
    reason = ""
    outcome: str
    if order is None:
        outcome, reason = NotifyOutcome.REJECTED, "unknown_order"
    else:
        try:
            outcome = orders.order_apply_result(order=order, result=result, source="notify")
        except PaymentsError as exc:
            logger.warning("callback %s for %s not applied: %s", log_id, result.order_no, exc)
            outcome, reason = NotifyOutcome.REJECTED, exc.code
    NotifyLog.objects.filter(pk=log_id, outcome=NotifyOutcome.RECEIVED).update(
        outcome=outcome, reason=reason, handled_at=timezone.now()
    )
    return outcome


def notifies_apply_waiting(*, older_than: float = 5.0, limit: int = 500) -> int:
    """Apply the received callbacks no worker applied (a lost nudge, a
    worker killed), each on its own. Returns how many were applied."""
    cutoff = timezone.now() - dt.timedelta(seconds=older_than)
    waiting = NotifyLog.objects.filter(
        outcome=NotifyOutcome.RECEIVED, received_at__lte=cutoff
    ).order_by("received_at")
    applied = 0
    for log_id in waiting.values_list("pk", flat=True)[:limit]:
        try:
            notify_apply(log_id)
        except DatabaseError as exc:
            logger.warning("callback %s left for later: %s", log_id, exc)
            continue
        applied += 1
    return applied


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

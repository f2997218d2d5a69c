"""Callbacks from the channels (支付结果通知): authenticate, check, apply once.

Whatever arrives is logged (:class:`payments.models.NotifyLog`). A callback
that is not authentic, names an order we do not have, or disagrees with the
order (channel, merchant, amount) changes nothing, is answered with a 4xx in
the channel's own failure format and goes to the audit trail. A genuine one
is applied under the order's row lock, once per channel transaction id; a
repeat is acknowledged like the first, so the channel stops sending it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

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
) -> None:
    NotifyLog.objects.create(
        channel=channel,
        outcome=outcome,
        reason=reason,
        order_no=_storable(result.order_no if result else "", 64),
        transaction_id=_storable(result.transaction_id if result else "", 64),
        client_ip=client_ip,
        body_excerpt=_storable(body[:EXCERPT_CHARS].decode("utf-8", "replace"), EXCERPT_CHARS),
    )


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
    """Handle one callback of ``channel`` and say what to answer."""
    provider = orders.provider(channel)
    try:
        result = provider.notify_parse(headers=headers, body=body)
    except NotifyRejected as exc:
        return _refuse(channel, exc.reason, body=body, client_ip=client_ip)
    credentials = provider.credentials
    if result.merchant_id and result.merchant_id != credentials.merchant_id:
        return _refuse(channel, "wrong_merchant", body=body, client_ip=client_ip, result=result)
    order = PaymentOrder.objects.filter(order_no=_storable(result.order_no, 64)).first()
    if order is None:
        return _refuse(channel, "unknown_order", body=body, client_ip=client_ip, result=result)
    if order.channel != channel:
        return _refuse(channel, "wrong_channel", body=body, client_ip=client_ip, result=result)
    if result.state == "paid" and result.amount_fen != order.amount_fen:
        return _refuse(channel, "amount_mismatch", body=body, client_ip=client_ip, result=result)
    if result.state == "paid" and order.provider_transaction_id == result.transaction_id:
        # This payment is on the books already (the transaction id is set
        # with its charge, in one transaction): a repeat, answered without
        # taking the order's lock.
        outcome = "duplicate"
        _log(channel=channel, outcome=outcome, body=body, client_ip=client_ip, result=result)
        return provider.notify_reply(accepted=True)
    try:
        outcome = orders.order_apply_result(order=order, result=result, source="notify")
    except PaymentsError as exc:
        # The payment is recorded only with everything that follows from it;
        # if that cannot happen now the channel sends it again.
        logger.warning("%s callback for %s not applied: %s", channel, order.order_no, exc)
        return _refuse(channel, exc.code, body=body, client_ip=client_ip, result=result)
    _log(channel=channel, outcome=outcome, body=body, client_ip=client_ip, result=result)
    return provider.notify_reply(accepted=True)

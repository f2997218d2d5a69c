"""A sandbox channel's own books: its trades and refunds, kept the way a
real channel keeps them (one trade per merchant order number, refunds
idempotent on the merchant's refund number and never above what was paid).
The channel modules (:mod:`payments.sandbox.wechat` …) turn these into each
channel's wire format; nothing outside the sandbox touches these rows."""

from __future__ import annotations

import datetime as dt
import secrets

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from payments.models import SandboxRefund, SandboxTrade, SandboxTradeState
from payments.selectors import day_bounds

T = SandboxTradeState


class SandboxRefusal(Exception):
    """The channel refuses a call; ``code`` is a neutral word the channel
    module maps onto its own error code (``order_no_used``, ``not_found``,
    ``trade_paid``, ``trade_closed``, ``not_paid``, ``refund_exceeds``)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code


def _transaction_id(channel: str, now: dt.datetime) -> str:
    stamp = timezone.localtime(now).strftime("%Y%m%d")
    return f"{channel[:2].upper()}{stamp}{secrets.randbelow(10**18):018d}"


def trade_open(
    *,
    channel: str,
    merchant_id: str,
    app_id: str,
    order_no: str,
    amount_fen: int,
    description: str,
    notify_url: str,
    expires_at: dt.datetime,
) -> SandboxTrade:
    """Open a trade; the same order number again with the same amount is
    the same trade (a merchant retrying), with another amount a refusal."""
    # A new order number is the common case: insert at once, and read only
    # when the merchant tries the same number again.
    try:
        with transaction.atomic():
            return SandboxTrade.objects.create(
                channel=channel,
                merchant_id=merchant_id,
                app_id=app_id,
                order_no=order_no,
                transaction_id=_transaction_id(channel, timezone.now()),
                amount_fen=amount_fen,
                description=description[:127],
                notify_url=notify_url,
                expires_at=expires_at,
            )
    except IntegrityError:
        existing = trade_get(channel=channel, merchant_id=merchant_id, order_no=order_no)
        if existing is None:
            raise
    if existing.amount_fen != amount_fen:
        raise SandboxRefusal("order_no_used", "商户订单号重复")
    return existing


def trade_get(*, channel: str, merchant_id: str, order_no: str) -> SandboxTrade | None:
    return SandboxTrade.objects.filter(
        channel=channel, merchant_id=merchant_id, order_no=order_no
    ).first()


# Where a failed payment leaves the trade open to another try: WeChat Pay,
# until the merchant closes the order (which is why a merchant closes one
# whose payment failed: a second payment). Alipay shows such a trade closed
# (TRADE_CLOSED, final) and UnionPay the transaction failed for good.
PAYABLE_AFTER_FAILURE = frozenset({"wechat"})


def _payable(trade: SandboxTrade) -> bool:
    return trade.state == T.NOTPAY or (
        trade.state == T.PAYERROR and trade.channel in PAYABLE_AFTER_FAILURE
    )


def trade_close(trade: SandboxTrade) -> SandboxTrade:
    """Close a trade not paid (one whose payment failed too): it cannot be
    paid any more. A closed one stays as it is; a paid one is refused."""
    with transaction.atomic():
        trade = SandboxTrade.objects.select_for_update().get(pk=trade.pk)
        if trade.state == T.SUCCESS:
            raise SandboxRefusal("trade_paid", "订单已支付")
        if trade.state in (T.NOTPAY, T.PAYERROR):
            trade.state = T.CLOSED
            trade.closed_at = timezone.now()
            trade.save(update_fields=["state", "closed_at"])
    return trade


def trade_pay(*, channel: str, order_no: str, succeed: bool) -> SandboxTrade:
    """The citizen pays in the sandbox wallet (or the payment fails), if
    the trade can still be paid (:data:`PAYABLE_AFTER_FAILURE`). The
    channel's callback is then due at once; :mod:`payments.sandbox.notify`
    sends it."""
    with transaction.atomic():
        trade = (
            SandboxTrade.objects.select_for_update()
            .filter(channel=channel, order_no=order_no)
            .first()
        )
        if trade is None:
            raise SandboxRefusal("not_found", "订单不存在")
        now = timezone.now()
        if _payable(trade) and now >= trade.expires_at:
            trade.state, trade.closed_at = T.CLOSED, now
            trade.save(update_fields=["state", "closed_at"])
        if trade.state == T.SUCCESS:
            raise SandboxRefusal("trade_paid", "订单已支付")
        if not _payable(trade):
            raise SandboxRefusal("trade_closed", "订单已关闭")
        trade.state = T.SUCCESS if succeed else T.PAYERROR
        trade.paid_at = now if succeed else None
        trade.notify_attempts = 0
        trade.notify_due_at = now
        trade.notified_at = None
        trade.save(
            update_fields=["state", "paid_at", "notify_attempts", "notify_due_at", "notified_at"]
        )
    return trade


def refund_open(*, trade: SandboxTrade, refund_no: str, amount_fen: int) -> SandboxRefund:
    """Take a refund request: idempotent on ``refund_no``; the refunds of a
    trade never add up to more than was paid. It settles
    ``PAYMENTS_SANDBOX_REFUND_SECONDS`` later."""
    with transaction.atomic():
        trade = SandboxTrade.objects.select_for_update().get(pk=trade.pk)
        existing = trade.refunds.filter(refund_no=refund_no).first()
        if existing is not None:
            if existing.amount_fen != amount_fen:
                raise SandboxRefusal("refund_no_used", "退款单号重复")
            return existing
        if trade.state != T.SUCCESS:
            raise SandboxRefusal("not_paid", "订单未支付")
        # A closed refund gave nothing back: its amount may be refunded again.
        taken = (
            trade.refunds.exclude(state="CLOSED").aggregate(total=Sum("amount_fen"))["total"] or 0
        )
        if amount_fen <= 0 or taken + amount_fen > trade.amount_fen:
            raise SandboxRefusal("refund_exceeds", "退款金额超过可退金额")
        now = timezone.now()
        return SandboxRefund.objects.create(
            trade=trade,
            refund_no=refund_no,
            refund_id=_transaction_id(f"{trade.channel}r", now),
            amount_fen=amount_fen,
            settles_at=now + dt.timedelta(seconds=settings.PAYMENTS_SANDBOX_REFUND_SECONDS),
        )


def refund_get(*, trade: SandboxTrade, refund_no: str) -> SandboxRefund | None:
    """A refund as it stands now: one whose time has come has settled."""
    refund = trade.refunds.filter(refund_no=refund_no).first()
    if refund is not None and refund.state == "PROCESSING" and timezone.now() >= refund.settles_at:
        SandboxRefund.objects.filter(pk=refund.pk, state="PROCESSING").update(
            state="SUCCESS", succeeded_at=refund.settles_at
        )
        refund.refresh_from_db()
    return refund


def statement(
    *, channel: str, merchant_id: str, date: dt.date
) -> tuple[list[SandboxTrade], list[SandboxRefund]]:
    """What the channel settled on ``date``: trades paid and refunds that
    succeeded that day."""
    start, end = day_bounds(date)
    for refund in SandboxRefund.objects.filter(
        trade__channel=channel, trade__merchant_id=merchant_id, state="PROCESSING"
    ).select_related("trade"):
        refund_get(trade=refund.trade, refund_no=refund.refund_no)
    trades = list(
        SandboxTrade.objects.filter(
            channel=channel,
            merchant_id=merchant_id,
            state=T.SUCCESS,
            paid_at__gte=start,
            paid_at__lt=end,
        ).order_by("paid_at")
    )
    refunds = list(
        SandboxRefund.objects.filter(
            trade__channel=channel,
            trade__merchant_id=merchant_id,
            state="SUCCESS",
            succeeded_at__gte=start,
            succeeded_at__lt=end,
        )
        .select_related("trade")
        .order_by("succeeded_at")
    )
    return trades, refunds

"""Unified payments (统一支付): orders, the ledger of money movements, refunds,
the notify log, reconciliation reports, and the sandbox providers' own books.

Amounts are integer fen. An order's ``paid_fen`` and ``refunded_fen`` are
what its ledger entries add up to; :mod:`payments.orders` keeps the two in
step in one transaction, and the property tests check it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Department
from config.ids import uuid7
from config.queries import other_values
from services.models import Application, Service


class Channel(models.TextChoices):
    WECHAT = "wechat", _("微信支付")
    ALIPAY = "alipay", _("支付宝")
    UNIONPAY = "unionpay", _("云闪付（银联）")


class OrderStatus(models.TextChoices):
    PENDING = "pending", _("待支付")
    PAID = "paid", _("已支付")
    CLOSED = "closed", _("已关闭")
    FAILED = "failed", _("支付失败")
    PARTIALLY_REFUNDED = "partially_refunded", _("部分退款")
    REFUNDED = "refunded", _("已全额退款")

    @classmethod
    def not_pending(cls) -> list[str]:
        """Every status but pending (see :func:`payments.selectors.pending_as_filter`)."""
        return other_values(cls.PENDING)


class PaymentOrder(models.Model):
    """One attempt to pay for one application through one channel."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    order_no = models.CharField(_("订单号"), max_length=32, unique=True)
    application = models.ForeignKey(
        Application, verbose_name=_("办件"), on_delete=models.PROTECT, related_name="payments"
    )
    payer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("付款人"),
        on_delete=models.PROTECT,
        related_name="payment_orders",
    )
    department = models.ForeignKey(
        Department, verbose_name=_("收款部门"), on_delete=models.PROTECT, related_name="payments"
    )
    service = models.ForeignKey(
        Service, verbose_name=_("服务事项"), on_delete=models.PROTECT, related_name="payments"
    )
    description = models.CharField(_("商品描述"), max_length=127)
    # The payee as it was named when the order was opened: what its receipt
    # prints, whatever the department is called later. (Empty on orders
    # opened before it was kept: the department's name then.)
    payee_name = models.CharField(_("收款部门名称"), max_length=100, blank=True, db_default="")
    payee_name_en = models.CharField(
        _("收款部门英文名称"), max_length=200, blank=True, db_default=""
    )
    amount_fen = models.PositiveIntegerField(_("金额（分）"))
    currency = models.CharField(_("币种"), max_length=3, default="CNY")
    channel = models.CharField(_("支付渠道"), max_length=16, choices=Channel.choices)
    status = models.CharField(
        _("状态"), max_length=20, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    # What the client needs to open the wallet (code_url, order string, tn).
    checkout = models.JSONField(_("收银台参数"), default=dict, editable=False)
    provider_transaction_id = models.CharField(_("渠道交易号"), max_length=64, blank=True)
    paid_fen = models.PositiveIntegerField(_("已收（分）"), default=0)
    refunded_fen = models.PositiveIntegerField(_("已退（分）"), default=0)
    expires_at = models.DateTimeField(_("支付截止"))
    paid_at = models.DateTimeField(_("支付时间"), null=True, blank=True)
    closed_at = models.DateTimeField(_("关闭时间"), null=True, blank=True)
    last_queried_at = models.DateTimeField(_("最近查单"), null=True, blank=True)
    # Closed here, and still to be closed at its channel (the call after
    # commit failed): the sweep tries again while the channel could still
    # take a payment for it (payments.orders.orders_close_owed).
    channel_close_owed = models.BooleanField(
        _("待渠道关单"), default=False, db_default=False, editable=False
    )
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("支付订单")
        verbose_name_plural = _("支付订单")
        ordering = ["-created_at"]
        constraints = [
            # One open order per application: a second one closes the first.
            models.UniqueConstraint(
                fields=["application"],
                condition=Q(status="pending"),
                name="payment_one_open_order",
            ),
            models.CheckConstraint(
                condition=Q(refunded_fen__lte=models.F("paid_fen")),
                name="payment_refunds_within_paid",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="payment_status_due"),
            models.Index(fields=["department", "-created_at"], name="payment_department_feed"),
            models.Index(fields=["payer", "-created_at"], name="payment_payer_feed"),
            models.Index(
                fields=["expires_at"],
                condition=Q(channel_close_owed=True),
                name="payment_channel_close_owed",
            ),
        ]

    def __str__(self) -> str:
        return self.order_no

    @property
    def refundable_fen(self) -> int:
        return self.paid_fen - self.refunded_fen


class EntryKind(models.TextChoices):
    CHARGE = "charge", _("收款")
    REFUND = "refund", _("退款")


class LedgerEntry(models.Model):
    """One movement of money, written once: a charge (by the provider's
    transaction id) or a refund (by our refund number). Never updated."""

    order = models.ForeignKey(
        PaymentOrder, verbose_name=_("订单"), on_delete=models.PROTECT, related_name="entries"
    )
    kind = models.CharField(_("类型"), max_length=8, choices=EntryKind.choices)
    amount_fen = models.PositiveIntegerField(_("金额（分）"))
    channel = models.CharField(_("渠道"), max_length=16, choices=Channel.choices)
    # Charge: the provider's transaction id; refund: our refund number.
    reference = models.CharField(_("流水号"), max_length=64)
    at = models.DateTimeField(_("发生时间"), default=timezone.now)
    created_at = models.DateTimeField(_("记账时间"), default=timezone.now)

    class Meta:
        verbose_name = _("资金流水")
        verbose_name_plural = _("资金流水")
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "kind", "reference"], name="ledger_once_per_reference"
            )
        ]
        indexes = [models.Index(fields=["at"], name="ledger_by_time")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_fen} {self.reference}"


class RefundStatus(models.TextChoices):
    PENDING = "pending", _("退款中")
    SUCCEEDED = "succeeded", _("退款成功")
    FAILED = "failed", _("退款失败")

    @classmethod
    def not_pending(cls) -> list[str]:
        """Every status but pending (see :func:`payments.selectors.pending_as_filter`)."""
        return other_values(cls.PENDING)


class Refund(models.Model):
    """Money going back to the payer, partly or in full."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    refund_no = models.CharField(_("退款单号"), max_length=32, unique=True)
    order = models.ForeignKey(
        PaymentOrder, verbose_name=_("订单"), on_delete=models.PROTECT, related_name="refunds"
    )
    amount_fen = models.PositiveIntegerField(_("金额（分）"))
    reason = models.CharField(_("退款原因"), max_length=200, blank=True)
    status = models.CharField(
        _("状态"), max_length=16, choices=RefundStatus.choices, default=RefundStatus.PENDING
    )
    provider_refund_id = models.CharField(_("渠道退款号"), max_length=64, blank=True)
    requested_by = models.CharField(_("发起方"), max_length=100, blank=True)
    # Asked for by the platform itself (a withdrawn application's money, a
    # payment nothing needs any more), not by a department or an operator.
    automatic = models.BooleanField(_("平台自动发起"), default=False, db_default=False)
    failure_reason = models.CharField(_("失败原因"), max_length=200, blank=True)
    # Set once the provider took the request (it answers asynchronously).
    submitted_at = models.DateTimeField(_("提交渠道时间"), null=True, blank=True)
    last_queried_at = models.DateTimeField(_("最近查询"), null=True, blank=True)
    succeeded_at = models.DateTimeField(_("退款成功时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now)

    class Meta:
        verbose_name = _("退款")
        verbose_name_plural = _("退款")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="refund_status_due")]

    def __str__(self) -> str:
        return self.refund_no


class NotifyOutcome(models.TextChoices):
    # Authentic and fits its order: acknowledged to the channel, waiting for
    # a worker to apply it (see payments.notifications).
    RECEIVED = "received", _("待入账")
    ACCEPTED = "accepted", _("已入账")
    DUPLICATE = "duplicate", _("重复通知")
    IGNORED = "ignored", _("无需处理")
    REJECTED = "rejected", _("已拒绝")

    @classmethod
    def not_received(cls) -> list[str]:
        """Every outcome but received: a callback waits to be applied until
        it has one of these (see :func:`payments.notifications.notify_apply`)."""
        return other_values(cls.RECEIVED)


class NotifyLog(models.Model):
    """Every callback a provider made, whatever became of it."""

    channel = models.CharField(_("渠道"), max_length=16)
    received_at = models.DateTimeField(_("接收时间"), default=timezone.now)
    outcome = models.CharField(_("结果"), max_length=16, choices=NotifyOutcome.choices)
    reason = models.CharField(_("原因"), max_length=64, blank=True)
    order_no = models.CharField(_("订单号"), max_length=64, blank=True)
    transaction_id = models.CharField(_("渠道交易号"), max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(_("来源地址"), null=True, blank=True)
    # The first bytes of the body as received, for an operator to read.
    body_excerpt = models.TextField(_("报文（截断）"), blank=True)
    # What the authenticated callback said (a PaymentResult): what a worker
    # applies, and what an operator reads; empty for refused ones.
    result = models.JSONField(_("通知内容"), null=True, blank=True, editable=False)
    handled_at = models.DateTimeField(_("入账时间"), null=True, blank=True)
    # Tries to apply it that failed for a reason that may pass (the last
    # one in ``reason``); after APPLY_ATTEMPTS it is parked as rejected.
    apply_attempts = models.PositiveSmallIntegerField(_("入账失败次数"), default=0)
    # The Redis inbox entry it was moved from (payments.inbox), once per entry.
    inbox_id = models.CharField(
        _("收件箱条目"), max_length=32, null=True, blank=True, unique=True, editable=False
    )

    class Meta:
        verbose_name = _("支付通知")
        verbose_name_plural = _("支付通知")
        ordering = ["-received_at"]
        indexes = [
            models.Index(fields=["order_no"], name="notify_by_order"),
            models.Index(fields=["outcome", "received_at"], name="notify_to_apply"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.outcome} {self.order_no}"


# --- Reconciliation -----------------------------------------------------------------------


class ReconciliationReport(models.Model):
    """One channel's statement for one day, compared with the ledger."""

    date = models.DateField(_("对账日期"))
    channel = models.CharField(_("渠道"), max_length=16, choices=Channel.choices)
    ran_at = models.DateTimeField(_("对账时间"), default=timezone.now)
    statement_lines = models.PositiveIntegerField(_("渠道账单笔数"), default=0)
    ledger_entries = models.PositiveIntegerField(_("本方流水笔数"), default=0)
    matched = models.PositiveIntegerField(_("一致笔数"), default=0)
    mismatches = models.PositiveIntegerField(_("差错笔数"), default=0)

    class Meta:
        verbose_name = _("对账报告")
        verbose_name_plural = _("对账报告")
        ordering = ["-date", "channel"]
        constraints = [
            models.UniqueConstraint(fields=["date", "channel"], name="reconciliation_once_a_day")
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.channel}"


class MismatchKind(models.TextChoices):
    MISSING_IN_LEDGER = "missing_in_ledger", _("渠道有、本方无")
    MISSING_IN_STATEMENT = "missing_in_statement", _("本方有、渠道无")
    AMOUNT_DIFFERS = "amount_differs", _("金额不一致")
    STATUS_DIFFERS = "status_differs", _("状态不一致")
    LISTED_MORE_THAN_ONCE = "listed_more_than_once", _("渠道重复列出")


class ReconciliationMismatch(models.Model):
    report = models.ForeignKey(
        ReconciliationReport,
        verbose_name=_("对账报告"),
        on_delete=models.CASCADE,
        related_name="items",
    )
    kind = models.CharField(_("差错类型"), max_length=24, choices=MismatchKind.choices)
    entry_kind = models.CharField(_("流水类型"), max_length=8, choices=EntryKind.choices)
    order_no = models.CharField(_("订单号"), max_length=64)
    reference = models.CharField(_("流水号"), max_length=64)
    ours = models.JSONField(_("本方记录"), null=True, blank=True)
    theirs = models.JSONField(_("渠道记录"), null=True, blank=True)
    resolved_at = models.DateTimeField(_("处理时间"), null=True, blank=True)
    resolved_by = models.CharField(_("处理人"), max_length=150, blank=True)
    resolution_note = models.TextField(_("处理说明"), blank=True)

    class Meta:
        verbose_name = _("对账差错")
        verbose_name_plural = _("对账差错")
        ordering = ["report", "id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.order_no}"


# --- The sandbox providers' own books -------------------------------------------------------
# What a real provider keeps on its side: its trades and its refunds (its
# keys are files under var/, see payments/sandbox/keys.py).
# Only the sandbox (payments/sandbox/) reads or writes these.


class SandboxTradeState(models.TextChoices):
    NOTPAY = "NOTPAY", "NOTPAY"
    SUCCESS = "SUCCESS", "SUCCESS"
    PAYERROR = "PAYERROR", "PAYERROR"
    CLOSED = "CLOSED", "CLOSED"


class SandboxTrade(models.Model):
    channel = models.CharField(_("渠道"), max_length=16)
    merchant_id = models.CharField(_("商户号"), max_length=64)
    app_id = models.CharField(_("应用号"), max_length=64)
    order_no = models.CharField(_("订单号"), max_length=64)
    transaction_id = models.CharField(_("渠道交易号"), max_length=64, unique=True)
    amount_fen = models.PositiveIntegerField(_("金额（分）"))
    description = models.CharField(_("商品描述"), max_length=127, blank=True)
    notify_url = models.CharField(_("通知地址"), max_length=500)
    state = models.CharField(
        _("交易状态"),
        max_length=16,
        choices=SandboxTradeState.choices,
        default=SandboxTradeState.NOTPAY,
    )
    expires_at = models.DateTimeField(_("支付截止"))
    paid_at = models.DateTimeField(_("支付时间"), null=True, blank=True)
    closed_at = models.DateTimeField(_("关闭时间"), null=True, blank=True)
    # The provider's notify: tries so far, when the next one is due, when
    # the merchant acknowledged it.
    notify_attempts = models.PositiveIntegerField(_("通知次数"), default=0)
    notify_due_at = models.DateTimeField(_("下次通知"), null=True, blank=True)
    notified_at = models.DateTimeField(_("通知成功时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now)

    class Meta:
        verbose_name = _("沙箱交易")
        verbose_name_plural = _("沙箱交易")
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "merchant_id", "order_no"], name="sandbox_trade_once"
            )
        ]
        indexes = [
            models.Index(fields=["notify_due_at"], name="sandbox_notify_due"),
            # The cashier's address names the channel and the order, not the
            # merchant, which the unique index has between them.
            models.Index(fields=["channel", "order_no"], name="sandbox_trade_order"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.order_no} {self.state}"


class SandboxRefund(models.Model):
    trade = models.ForeignKey(
        SandboxTrade, verbose_name=_("沙箱交易"), on_delete=models.CASCADE, related_name="refunds"
    )
    refund_no = models.CharField(_("退款单号"), max_length=64)
    refund_id = models.CharField(_("渠道退款号"), max_length=64, unique=True)
    amount_fen = models.PositiveIntegerField(_("金额（分）"))
    # PROCESSING until settles_at, then SUCCESS (or ABNORMAL, never here).
    state = models.CharField(_("退款状态"), max_length=16, default="PROCESSING")
    settles_at = models.DateTimeField(_("到账时间"))
    succeeded_at = models.DateTimeField(_("退款成功时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now)

    class Meta:
        verbose_name = _("沙箱退款")
        verbose_name_plural = _("沙箱退款")
        constraints = [
            models.UniqueConstraint(fields=["trade", "refund_no"], name="sandbox_refund_once")
        ]

    def __str__(self) -> str:
        return f"{self.refund_no} {self.state}"

"""Stable error codes of payments and refunds."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from config.errors import DomainError, error_code

APPLICATION_NOT_PAYABLE = error_code(
    "application_not_payable", 409, _("该办件无需缴费或已不在待支付状态")
)
PAYMENT_CHANNEL_UNAVAILABLE = error_code(
    "payment_channel_unavailable", 503, _("该支付渠道暂不可用，请换一种支付方式")
)
PAYMENT_PROVIDER_ERROR = error_code(
    "payment_provider_error", 502, _("支付渠道暂时无法处理，请稍后再试")
)
# The channel's word on an order does not fit it (another amount, merchant
# or order): nothing changes, and it is audited for an operator.
PAYMENT_RESULT_MISMATCH = error_code(
    "payment_result_mismatch", 409, _("支付渠道的结果与订单不符，已拒绝并记录")
)
REFUND_NOT_ALLOWED = error_code("refund_not_allowed", 409, _("该订单当前不能退款"))
REFUND_EXCEEDS_PAID = error_code("refund_exceeds_paid", 422, _("退款金额超过可退金额"))
RECEIPT_NOT_AVAILABLE = error_code("receipt_not_available", 409, _("订单支付后才有电子票据"))
SANDBOX_DISABLED = error_code("sandbox_disabled", 404, _("沙箱支付未开启"))
SANDBOX_PAYMENT_REFUSED = error_code(
    "sandbox_payment_refused", 409, _("沙箱收银台拒绝了这笔支付（订单已支付或已关闭）")
)


class PaymentsError(DomainError):
    """A rule of payments or refunds refused the request."""

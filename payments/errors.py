"""Stable error codes of payments and refunds."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from config.errors import DomainError, error_code

APPLICATION_NOT_PAYABLE = error_code(
    "application_not_payable",
    409,
    _("该办件无需缴费或已不在待支付状态"),
    when=_("办件不需要缴费，或已不在待支付状态（已支付、已撤回等）。"),
    what_to_do=_("重新读取办件状态；只有 `awaiting_payment` 的办件可以下单支付。"),
)
PAYMENT_CHANNEL_UNAVAILABLE = error_code(
    "payment_channel_unavailable",
    503,
    _("该支付渠道暂不可用，请换一种支付方式"),
    when=_("所选的支付渠道没有开通或暂时停用。"),
    what_to_do=_("请用户换一种支付方式。"),
)
PAYMENT_PROVIDER_ERROR = error_code(
    "payment_provider_error",
    502,
    _("支付渠道暂时无法处理，请稍后再试"),
    when=_("支付渠道暂时无法处理下单或关单请求；没有扣款。"),
    what_to_do=_("稍后重试，或请用户换一种支付方式。"),
)
# The channel's word on an order does not fit it (another amount, merchant
# or order): nothing changes, and it is audited for an operator.
PAYMENT_RESULT_MISMATCH = error_code(
    "payment_result_mismatch",
    409,
    _("支付渠道的结果与订单不符，已拒绝并记录"),
    when=_(
        "支付渠道通知或查询到的结果与订单不符（金额、商户或订单号不同）；订单不变，已记录供运营方核查。"
    ),
    what_to_do=_("不要重试；这是渠道与平台之间的问题，由运营方处理。"),
)
REFUND_NOT_ALLOWED = error_code(
    "refund_not_allowed",
    409,
    _("该订单当前不能退款"),
    when=_("订单当前的状态不能退款（未支付、已关闭或已全额退款）；`order_status` 给出当前状态。"),
    what_to_do=_("重新读取订单；只有已支付或部分退款的订单可以退款。"),
)
REFUND_EXCEEDS_PAID = error_code(
    "refund_exceeds_paid",
    422,
    _("退款金额超过可退金额"),
    when=_("退款金额不大于零，或加上已退和正在退的金额后超过了订单的实付金额。"),
    what_to_do=_("查询订单的可退金额，按不超过它的金额重新申请。"),
)
RECEIPT_NOT_AVAILABLE = error_code(
    "receipt_not_available",
    409,
    _("订单支付后才有电子票据"),
    when=_("订单尚未支付，还没有电子票据。"),
    what_to_do=_("支付成功后再获取票据。"),
)
SANDBOX_DISABLED = error_code(
    "sandbox_disabled",
    404,
    _("沙箱支付未开启"),
    when=_("本环境没有开启沙箱支付（`PAYMENTS_SANDBOX`），沙箱收银台不存在。"),
    what_to_do=_(
        "在真实环境中使用渠道返回的 `checkout` 完成支付；测试环境请开启 `PAYMENTS_SANDBOX`。"
    ),
)
SANDBOX_PAYMENT_REFUSED = error_code(
    "sandbox_payment_refused",
    409,
    _("沙箱收银台拒绝了这笔支付（订单已支付或已关闭）"),
    when=_("沙箱收银台拒绝了这笔支付：订单已支付或已关闭（例如已过期）。"),
    what_to_do=_("重新读取订单状态；需要时为办件新建一个订单。"),
)


class PaymentsError(DomainError):
    """A rule of payments or refunds refused the request."""

"""Stable error codes of the accounts app."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from config.errors import DomainError, error_code

PHONE_INVALID = error_code("phone_invalid", 400, _("请输入有效的中国大陆手机号"))
OTP_INVALID = error_code("otp_invalid", 400, _("验证码错误"))
OTP_EXPIRED = error_code("otp_expired", 400, _("验证码已失效，请重新获取"))
OTP_ATTEMPTS_EXCEEDED = error_code(
    "otp_attempts_exceeded", 400, _("验证码错误次数过多，请重新获取")
)
SMS_UNAVAILABLE = error_code("sms_unavailable", 503, _("短信暂时无法发送，请稍后再试"))
ACCOUNT_SUSPENDED = error_code("account_suspended", 403, _("账户已被停用，请联系客服"))
ID_NUMBER_INVALID = error_code("id_number_invalid", 400, _("身份证号无效"))
NAME_INVALID = error_code("name_invalid", 400, _("姓名格式不正确"))
ID_NUMBER_TAKEN = error_code("id_number_taken", 409, _("该身份证号已被其他账户认证"))
ALREADY_VERIFIED = error_code("already_verified", 409, _("账户已完成实名认证"))
IDENTITY_MISMATCH = error_code("identity_mismatch", 422, _("姓名与身份证号不一致"))
IDENTITY_PROVIDER_UNAVAILABLE = error_code(
    "identity_provider_unavailable", 503, _("实名核验服务暂不可用，请稍后再试")
)
IDENTITY_LEVEL_TOO_LOW = error_code("identity_level_too_low", 403, _("请先完成实名认证"))
API_KEY_INVALID = error_code("api_key_invalid", 401, _("API 密钥无效或已吊销"))
API_KEY_SCOPE = error_code("api_key_scope", 403, _("API 密钥的权限范围不允许此操作"))
CITIZEN_REQUIRED = error_code("citizen_required", 403, _("此接口仅供市民账户使用"))
IDEMPOTENCY_KEY_REUSED = error_code(
    "idempotency_key_reused", 422, _("该幂等键已用于另一个不同的请求")
)
IDEMPOTENCY_KEY_INVALID = error_code("idempotency_key_invalid", 400, _("幂等键格式无效"))


class AccountsError(DomainError):
    """A rule of the accounts app refused the request."""

"""Stable error codes of the accounts app."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from config.errors import DomainError, error_code

PHONE_INVALID = error_code(
    "phone_invalid",
    400,
    _("请输入有效的中国大陆手机号"),
    when=_("手机号不是中国大陆手机号（11 位数字，以 1 开头，可带 +86）。"),
    what_to_do=_("请用户检查手机号后重新输入。"),
)
OTP_INVALID = error_code(
    "otp_invalid",
    400,
    _("验证码错误"),
    when=_("验证码与最近一次发出的不符，或不是 6 位数字；`attempts_left` 给出还可尝试的次数。"),
    what_to_do=_("请用户重新输入短信中的验证码；连续 5 次错误后这条验证码作废，需要重新获取。"),
)
OTP_EXPIRED = error_code(
    "otp_expired",
    400,
    _("验证码已失效，请重新获取"),
    when=_(
        "该手机号没有有效的验证码：已过有效期（默认 5 分钟）、已经使用过、被更新的验证码取代，或从未获取过。"
    ),
    what_to_do=_("重新获取验证码（`POST /api/v1/auth/otp/`），用新收到的登录。"),
)
OTP_ATTEMPTS_EXCEEDED = error_code(
    "otp_attempts_exceeded",
    400,
    _("验证码错误次数过多，请重新获取"),
    when=_(
        "验证码输错的次数达到上限（默认共 5 次），这条验证码已作废；或从申请验证码以外的网络输错已达 2 次，"
        "这条验证码对这些网络作废，申请它的网络仍可使用。"
    ),
    what_to_do=_("重新获取验证码；发送间隔和每日次数限制仍然有效。"),
)
SMS_UNAVAILABLE = error_code(
    "sms_unavailable",
    503,
    _("短信暂时无法发送，请稍后再试"),
    when=_("短信网关暂时无法发送验证码；这次请求不计入发送次数限制。"),
    what_to_do=_("稍后再获取验证码。"),
)
ACCOUNT_SUSPENDED = error_code(
    "account_suspended",
    403,
    _("账户已被停用，请联系客服"),
    when=_("账户已被运营方停用（或已注销），不能登录，也不能出示星码。"),
    what_to_do=_("不要重试；请用户联系客服。"),
)
ID_NUMBER_INVALID = error_code(
    "id_number_invalid",
    400,
    _("身份证号无效"),
    when=_("身份证号不是 18 位、校验码不符（GB 11643），或出生日期不存在。"),
    what_to_do=_("请用户核对身份证号后重新输入（末位可以是 X）。"),
)
NAME_INVALID = error_code(
    "name_invalid",
    400,
    _("姓名格式不正确"),
    when=_("姓名不是 2 至 30 个汉字（少数民族姓名可含间隔号 ·）。"),
    what_to_do=_("请用户按身份证上的姓名重新输入。"),
)
ID_NUMBER_TAKEN = error_code(
    "id_number_taken",
    409,
    _("该身份证号已被其他账户认证"),
    when=_("这个身份证号已经在另一个账户上完成了实名认证。"),
    what_to_do=_("不要重试；请用户登录原来的账户，或先注销那个账户。"),
)
ALREADY_VERIFIED = error_code(
    "already_verified",
    409,
    _("账户已完成实名认证"),
    when=_("账户已完成实名认证，不能再次认证。"),
    what_to_do=_("不需要再做任何事；`GET /api/v1/me/` 显示当前的认证状态。"),
)
IDENTITY_MISMATCH = error_code(
    "identity_mismatch",
    422,
    _("姓名与身份证号不一致"),
    when=_("身份核验机构答复姓名与身份证号不一致。"),
    what_to_do=_("请用户核对姓名和身份证号后重新提交；多次失败会被限流。"),
)
IDENTITY_PROVIDER_UNAVAILABLE = error_code(
    "identity_provider_unavailable",
    503,
    _("实名核验服务暂不可用，请稍后再试"),
    when=_("实名核验机构暂时无法访问；认证没有进行。"),
    what_to_do=_("稍后重新提交。"),
)
IDENTITY_LEVEL_TOO_LOW = error_code(
    "identity_level_too_low",
    403,
    _("请先完成实名认证"),
    when=_("该事项需要实名认证（身份等级 2），而账户还没有完成实名认证。"),
    what_to_do=_("引导用户完成实名认证（`POST /api/v1/me/real-name/`）后再申请。"),
)
API_KEY_INVALID = error_code(
    "api_key_invalid",
    401,
    _("API 密钥无效或已吊销"),
    when=_("API 密钥不存在、已被吊销，或所属部门已停用。"),
    what_to_do=_("不要重试；向运营方或本部门管理员申请新的密钥。"),
)
API_KEY_SCOPE = error_code(
    "api_key_scope",
    403,
    _("API 密钥的权限范围不允许此操作"),
    when=_(
        "密钥的权限范围不允许此接口：部门接口需要 `integrator` 密钥，扫码接口需要 `scanner` 密钥。"
    ),
    what_to_do=_("使用权限范围相符的密钥。"),
)
CITIZEN_REQUIRED = error_code(
    "citizen_required",
    403,
    _("此接口仅供市民账户使用"),
    when=_("该接口只供市民使用，请求却带的是部门或扫码终端的 API 密钥。"),
    what_to_do=_("以市民身份登录，带上 `Authorization: Bearer <访问令牌>`。"),
)
IDEMPOTENCY_KEY_REUSED = error_code(
    "idempotency_key_reused",
    422,
    _("该幂等键已用于另一个不同的请求"),
    when=_(
        "同一个 `Idempotency-Key` 已用于另一个不同的请求（请求体或路径不同）；相同的请求会得到第一次的答复。"
    ),
    what_to_do=_("每个新的创建请求使用新的键（例如 UUID）；只在原样重试时复用旧键。"),
)
IDEMPOTENCY_KEY_INVALID = error_code(
    "idempotency_key_invalid",
    400,
    _("幂等键格式无效"),
    when=_("`Idempotency-Key` 头为空、过长，或含有可见 ASCII 以外的字符。"),
    what_to_do=_("使用 1 至 255 个可见 ASCII 字符的键，例如 UUID。"),
)
ACCOUNT_PRIVILEGED = error_code(
    "account_privileged",
    403,
    _("管理账户不能在此注销"),
    when=_(
        "账户是运营方的管理账户（工作人员、超级用户或持有权限），不能通过市民接口注销；账户没有变化。"
    ),
    what_to_do=_("不要重试；管理账户由超级用户在管理后台停用或删除。"),
)


class AccountsError(DomainError):
    """A rule of the accounts app refused the request."""

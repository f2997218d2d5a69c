"""Stable error codes and RFC 9457 problem details, with no DRF in sight.

Every app declares its codes with :func:`error_code` in its own ``errors.py``
and raises its own subclass of :class:`DomainError`; ``config.api`` renders
them (and DRF's and Django's errors) as ``application/problem+json``::

    {"type": "/api/problems/otp_invalid", "title": "...", "status": 400,
     "detail": "...", "code": "otp_invalid", "errors": {"code": ["..."]}}

The apps' error modules import this one only, so loading an error code never
loads DRF (whose settings load the apps' authentication classes, which load
the error codes again).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.http import HttpResponse
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ErrorCode:
    """A stable error ``code`` that clients switch on, with its HTTP status.

    ``when`` (when it happens) and ``what_to_do`` (what the client should do)
    are the problem's page at ``/api/problems/<code>``: the ``type`` of every
    problem points there."""

    code: str
    status: int
    title: StrOrPromise
    when: StrOrPromise = ""
    what_to_do: StrOrPromise = ""


ERROR_CODES: dict[str, ErrorCode] = {}


def error_code(
    code: str,
    status: int,
    title: StrOrPromise,
    *,
    when: StrOrPromise = "",
    what_to_do: StrOrPromise = "",
) -> ErrorCode:
    """Declare (once) a stable error code. Codes are global across apps."""
    existing = ERROR_CODES.get(code)
    if existing is not None and existing.status != status:
        raise ValueError(f"error code {code!r} declared twice with different statuses")
    error = ErrorCode(code=code, status=status, title=title, when=when, what_to_do=what_to_do)
    ERROR_CODES[code] = error
    return error


# The members RFC 9457 and DESIGN §4 give a meaning; no extra member may reuse one.
PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "code", "errors"})

# The members a problem may carry beyond the six (RFC 9457 extension
# members): name → (JSON type, meaning). The schema's Problem documents each,
# so a generated client reads them; tests/test_platform.py finds every
# ``extra={...}`` in the code and fails on a member not listed here.
PROBLEM_EXTENSIONS: dict[str, tuple[str, str]] = {
    "current_status": ("string", "The object's status that refused the change"),
    "application_status": ("string", "The application's status (application_not_payable)"),
    "order_status": ("string", "The order's status (receipt or refund not available)"),
    "refundable_fen": ("integer", "What may still be refunded, in fen (refund_exceeds_paid)"),
    "retry_after": ("integer", "Seconds to wait before trying again (throttled)"),
    "attempts_left": ("integer", "Wrong codes left before the login code is burnt"),
    "reason": ("string", "Why a payment result was refused (payment_result_mismatch)"),
}

logger = logging.getLogger(__name__)


def _declared(extra: dict[str, Any] | None) -> dict[str, Any]:
    """The extension members the schema documents. Another one (a standard
    member's name, or one not in PROBLEM_EXTENSIONS) is a mistake in our
    code: it is logged and left out, and the client still gets its problem
    rather than a 500."""
    if not extra:
        return {}
    kept = {k: v for k, v in extra.items() if k in PROBLEM_EXTENSIONS}
    if len(kept) != len(extra):
        logger.error(
            "problem members %s left out: not in PROBLEM_EXTENSIONS",
            sorted(set(extra) - kept.keys()),
        )
    return kept


class DomainError(Exception):
    """Base of each app's error type: a business rule refused the request."""

    def __init__(
        self,
        error: ErrorCode,
        detail: StrOrPromise | None = None,
        *,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{error.code}: {detail or error.title}")
        self.error = error
        self.detail = detail
        self.errors = errors or {}
        self.headers = headers or {}
        self.extra = _declared(extra)

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def status(self) -> int:
        return self.error.status


# Platform-wide codes. App-specific ones live in each app's errors.py.
INVALID = error_code(
    "invalid",
    400,
    _("请求参数有误"),
    when=_("请求的字段缺失、类型不对或取值不合规则；`errors` 按字段列出原因。"),
    what_to_do=_("按 `errors` 改正所列字段后再发送；原样重试只会得到同样的答复。"),
)
MALFORMED_REQUEST = error_code(
    "malformed_request",
    400,
    _("请求无法解析"),
    when=_("请求体不是合法的 JSON，或嵌套超过 64 层；或者路径、查询参数、请求体中含有 NUL 字符。"),
    what_to_do=_("检查客户端的序列化，发送 UTF-8 编码的合法 JSON。"),
)
PAGINATION_INVALID = error_code(
    "pagination_invalid",
    400,
    _("分页参数无效"),
    when=_("页码超出范围或不是数字，或者游标（cursor）被改动过。"),
    what_to_do=_("从第一页重新开始，翻页时只使用上一次答复中 `next` 和 `previous` 给出的地址。"),
)
NOT_AUTHENTICATED = error_code(
    "not_authenticated",
    401,
    _("需要身份凭据"),
    when=_("接口需要登录或 API 密钥，但请求没有 `Authorization` 头。"),
    what_to_do=_(
        "市民带上 `Authorization: Bearer <访问令牌>`；部门和扫码终端带上 `Authorization: Api-Key <密钥>`。"
    ),
)
AUTHENTICATION_FAILED = error_code(
    "authentication_failed",
    401,
    _("身份凭据无效"),
    when=_("`Authorization` 头的格式不对，或其中的凭据无法识别。"),
    what_to_do=_(
        "检查头的格式（`Bearer` 或 `Api-Key`，一个空格，再接凭据）；仍然失败时重新登录，或向运营方申请新的密钥。"
    ),
)
TOKEN_INVALID = error_code(
    "token_invalid",
    401,
    _("令牌无效、已过期或已注销"),
    when=_(
        "访问令牌已过期或签名不对；或者刷新令牌已用过、已注销（退出登录、换发之后）。同一个刷新令牌被第二次使用时，为安全起见该账户的全部令牌都会注销。"
    ),
    what_to_do=_(
        "访问令牌过期时，用刷新令牌换一对新令牌（`POST /api/v1/auth/token/refresh/`），并保存新的刷新令牌；刷新令牌也无效时，请用户用短信验证码重新登录。"
    ),
)
ACCOUNT_INACTIVE = error_code(
    "account_inactive",
    401,
    _("账户已停用或已注销"),
    when=_("凭据属于已停用或已注销的账户。"),
    what_to_do=_(
        "不要重试。已注销的账户不能恢复，同一手机号可以重新登录，开立新账户；被停用的账户请联系客服。"
    ),
)
PERMISSION_DENIED = error_code(
    "permission_denied",
    403,
    _("无权执行此操作"),
    when=_("凭据有效，但这个账户或密钥无权执行该操作。"),
    what_to_do=_("不要重试；确认使用的是正确的账户或密钥，需要权限时联系运营方。"),
)
NOT_FOUND = error_code(
    "not_found",
    404,
    _("资源不存在"),
    when=_("路径不存在，或者对象不存在、不属于调用方（为不泄露他人数据，两种情况答复相同）。"),
    what_to_do=_("检查路径和编号；对象应当属于你时，确认用的是正确的账户或部门密钥。"),
)
METHOD_NOT_ALLOWED = error_code(
    "method_not_allowed",
    405,
    _("不支持该请求方法"),
    when=_("该路径不接受这个 HTTP 方法；`Allow` 头列出它接受的方法。"),
    what_to_do=_("改用 `Allow` 头中列出的方法。"),
)
NOT_ACCEPTABLE = error_code(
    "not_acceptable",
    406,
    _("无法提供请求的响应格式"),
    when=_("`Accept` 头排除了该接口能提供的所有格式（接口答复 JSON，图片接口答复 PNG 或 SVG）。"),
    what_to_do=_("发送 `Accept: application/json`（或 `*/*`），或者不带 `Accept` 头。"),
)
PRECONDITION_FAILED = error_code(
    "precondition_failed",
    412,
    _("资源已经变化"),
    when=_("`If-Match` 头给出的 `ETag` 不是资源当前的 `ETag`：读取之后资源已经变化。"),
    what_to_do=_("重新读取资源（不带 `If-Match`），以新的内容和 `ETag` 为准。"),
)
LENGTH_REQUIRED = error_code(
    "length_required",
    411,
    _("请求体需要 Content-Length"),
    when=_(
        "请求体以分块传输（`Transfer-Encoding: chunked`）发送、没有 `Content-Length`：服务器不读取这样的请求体。"
    ),
    what_to_do=_("带 `Content-Length` 发送完整的请求体（常见 HTTP 客户端发送 JSON 时默认如此）。"),
)
PAYLOAD_TOO_LARGE = error_code(
    "payload_too_large",
    413,
    _("请求体过大"),
    when=_(
        "请求体超过了上限（`API_MAX_BODY_BYTES`，默认 256 KiB；扫码终端的离线扫码批量上传为 `QR_SCAN_UPLOAD_MAX_BYTES`，默认 1 MiB）。"
    ),
    what_to_do=_("缩小请求体，例如把离线扫码记录分成几批上传。"),
)
URI_TOO_LONG = error_code(
    "uri_too_long",
    414,
    _("请求地址过长"),
    when=_("请求行（方法、路径和查询参数）超过 4094 字节，服务器没有读取这个请求。"),
    what_to_do=_("缩短路径或查询参数；大量数据放在请求体里发送。"),
)
HEADER_FIELDS_TOO_LARGE = error_code(
    "header_fields_too_large",
    431,
    _("请求头过大"),
    when=_("某个请求头超过 8190 字节，或者请求头超过 100 个，服务器没有读取这个请求。"),
    what_to_do=_("去掉不需要的请求头（例如过多的 Cookie）后重试。"),
)
EXPECTATION_FAILED = error_code(
    "expectation_failed",
    417,
    _("不支持该 Expect 请求头"),
    when=_("请求带有 `Expect` 头，其值不是服务器唯一支持的 `100-continue`。"),
    what_to_do=_("去掉 `Expect` 头，或改为 `Expect: 100-continue`。"),
)
TRANSFER_CODING_UNSUPPORTED = error_code(
    "transfer_coding_unsupported",
    501,
    _("不支持该传输编码"),
    when=_(
        "请求的 `Transfer-Encoding` 不是服务器认识的编码（`chunked`、`gzip`、`deflate`、`compress`）。"
    ),
    what_to_do=_("带 `Content-Length` 发送未经传输编码的请求体。"),
)
UNSUPPORTED_MEDIA_TYPE = error_code(
    "unsupported_media_type",
    415,
    _("不支持的请求体类型"),
    when=_(
        "请求体的 `Content-Type` 不是 `application/json`，或其 `charset` 不是文本编码（例如 `bz2`、`base64`）。"
    ),
    what_to_do=_("以 `Content-Type: application/json` 发送 UTF-8 编码的 JSON 请求体。"),
)
THROTTLED = error_code(
    "throttled",
    429,
    _("请求过于频繁，请稍后再试"),
    when=_(
        "短时间内请求过多：例如同一手机号 60 秒内再次获取验证码或当天超过 10 次，或同一地址请求过于频繁。`Retry-After` 头给出需要等待的秒数。"
    ),
    what_to_do=_("等待 `Retry-After` 秒后再试，不要立即自动重试；获取验证码时向用户显示倒计时。"),
)
SERVER_ERROR = error_code(
    "server_error",
    500,
    _("服务器内部错误"),
    when=_("服务器出现了意外故障（不是请求的问题）；已记录日志，请求的更改未生效。"),
    what_to_do=_(
        "稍后重试；带 `Idempotency-Key` 的创建请求用同一个键重试是安全的。问题持续时请联系运营方。"
    ),
)
SERVICE_UNAVAILABLE = error_code(
    "service_unavailable",
    503,
    _("服务暂不可用"),
    when=_("服务依赖的组件（数据库、Redis 等）暂时无法访问。"),
    what_to_do=_("稍后重试，按 `Retry-After`（如有）等待，否则逐次加长间隔。"),
)


def problem_body(
    error: ErrorCode,
    detail: StrOrPromise | None = None,
    *,
    errors: dict[str, list[str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"/api/problems/{error.code}",
        "title": str(error.title),
        "status": error.status,
        "detail": str(detail) if detail else str(error.title),
        "code": error.code,
        "errors": errors or {},
    }
    body.update(_declared(extra))
    return body


def problem_http_response(
    error: ErrorCode,
    detail: StrOrPromise | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """The same body for plain Django views and middleware (no DRF request)."""
    response = HttpResponse(
        json.dumps(problem_body(error, detail), ensure_ascii=False),
        status=error.status,
        content_type=PROBLEM_CONTENT_TYPE,
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response

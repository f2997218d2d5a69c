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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.http import HttpResponse
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ErrorCode:
    """A stable error ``code`` that clients switch on, with its HTTP status."""

    code: str
    status: int
    title: StrOrPromise


ERROR_CODES: dict[str, ErrorCode] = {}


def error_code(code: str, status: int, title: StrOrPromise) -> ErrorCode:
    """Declare (once) a stable error code. Codes are global across apps."""
    existing = ERROR_CODES.get(code)
    if existing is not None and existing.status != status:
        raise ValueError(f"error code {code!r} declared twice with different statuses")
    error = ErrorCode(code=code, status=status, title=title)
    ERROR_CODES[code] = error
    return error


# The members RFC 9457 and DESIGN §4 give a meaning; no extra member may reuse one.
PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "code", "errors"})


def _refuse_shadowing(extra: dict[str, Any] | None) -> None:
    clash = PROBLEM_MEMBERS.intersection(extra or ())
    if clash:
        raise ValueError(f"extra problem members {sorted(clash)} would shadow the standard ones")


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
        _refuse_shadowing(extra)
        self.error = error
        self.detail = detail
        self.errors = errors or {}
        self.headers = headers or {}
        self.extra = extra or {}

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def status(self) -> int:
        return self.error.status


# Platform-wide codes. App-specific ones live in each app's errors.py.
INVALID = error_code("invalid", 400, _("请求参数有误"))
MALFORMED_REQUEST = error_code("malformed_request", 400, _("请求体不是合法的 JSON"))
PAGINATION_INVALID = error_code("pagination_invalid", 400, _("分页参数无效"))
NOT_AUTHENTICATED = error_code("not_authenticated", 401, _("需要身份凭据"))
AUTHENTICATION_FAILED = error_code("authentication_failed", 401, _("身份凭据无效"))
TOKEN_INVALID = error_code("token_invalid", 401, _("令牌无效、已过期或已注销"))
ACCOUNT_INACTIVE = error_code("account_inactive", 401, _("账户已停用或已注销"))
PERMISSION_DENIED = error_code("permission_denied", 403, _("无权执行此操作"))
NOT_FOUND = error_code("not_found", 404, _("资源不存在"))
METHOD_NOT_ALLOWED = error_code("method_not_allowed", 405, _("不支持该请求方法"))
NOT_ACCEPTABLE = error_code("not_acceptable", 406, _("无法提供请求的响应格式"))
PAYLOAD_TOO_LARGE = error_code("payload_too_large", 413, _("请求体过大"))
UNSUPPORTED_MEDIA_TYPE = error_code("unsupported_media_type", 415, _("不支持的请求体类型"))
THROTTLED = error_code("throttled", 429, _("请求过于频繁，请稍后再试"))
SERVER_ERROR = error_code("server_error", 500, _("服务器内部错误"))
SERVICE_UNAVAILABLE = error_code("service_unavailable", 503, _("服务暂不可用"))


def problem_body(
    error: ErrorCode,
    detail: StrOrPromise | None = None,
    *,
    errors: dict[str, list[str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    _refuse_shadowing(extra)
    body: dict[str, Any] = {
        "type": f"/api/problems/{error.code}",
        "title": str(error.title),
        "status": error.status,
        "detail": str(detail) if detail else str(error.title),
        "code": error.code,
        "errors": errors or {},
    }
    if extra:
        body.update(extra)
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

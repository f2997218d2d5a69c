"""Stable error codes of the star-code app."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from config.errors import DomainError, error_code

CODE_INVALID = error_code(
    "code_invalid",
    400,
    _("无法识别的码"),
    when=_("提交的码无法识别：格式不对、签名无效、已过期，或不是本平台的场所码。"),
    what_to_do=_("请用户重新扫描；仍然失败时，这不是本平台签发的码。"),
)
CODE_REVOKED = error_code(
    "code_revoked",
    410,
    _("该码已停用"),
    when=_("该场所码已被部门停用。"),
    what_to_do=_("告知用户该码已停用，请使用现场的新码。"),
)
SCAN_STATE_UNAVAILABLE = error_code(
    "scan_state_unavailable",
    503,
    _("核验服务暂不可用，请改用离线核验"),
    when=_("在线核验需要的防重放记录暂时无法访问，核验没有进行。"),
    what_to_do=_(
        "改用离线核验（用 JWKS 验签和检查有效期），稍后把扫码记录上传到 `POST /api/v1/qr/scans/`。"
    ),
)
SINCE_INVALID = error_code(
    "since_invalid",
    400,
    _("since 须为带时区的 ISO 8601 时间"),
    when=_("`since` 参数不是带时区的 ISO 8601 时间。"),
    what_to_do=_(
        "使用上一次答复中的 `until` 作为 `since`；首次同步时使用带时区偏移的时间，例如 `2026-01-01T00:00:00+08:00`。"
    ),
)


class QrError(DomainError):
    """A rule of the star-code app refused the request."""

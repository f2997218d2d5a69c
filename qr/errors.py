"""Stable error codes of the star-code app."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from config.errors import DomainError, error_code

CODE_INVALID = error_code("code_invalid", 400, _("无法识别的码"))
CODE_REVOKED = error_code("code_revoked", 410, _("该码已停用"))
SCAN_STATE_UNAVAILABLE = error_code(
    "scan_state_unavailable", 503, _("核验服务暂不可用，请改用离线核验")
)
SINCE_INVALID = error_code("since_invalid", 400, _("since 须为带时区的 ISO 8601 时间"))


class QrError(DomainError):
    """A rule of the star-code app refused the request."""

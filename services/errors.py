"""Stable error codes of the catalog, applications and routing."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from config.errors import DomainError, error_code

FORM_INVALID = error_code("form_invalid", 400, _("申请表填写有误"))
FORM_SCHEMA_INVALID = error_code("form_schema_invalid", 400, _("申请表定义不是有效的 JSON Schema"))
# A stored form schema that breaks today's rules (saved before them): the
# department has to fix it; the citizen's request was fine.
FORM_SCHEMA_UNUSABLE = error_code(
    "form_schema_unusable", 409, _("申请表定义不是有效的 JSON Schema")
)
GUIDE_INVALID = error_code("guide_invalid", 400, _("办事指南内容有误"))
SERVICE_CODE_TAKEN = error_code("service_code_taken", 409, _("事项编码已被使用"))
INVALID_TRANSITION = error_code("invalid_transition", 409, _("当前状态下不能进行此操作"))
RATING_NOT_ALLOWED = error_code("rating_not_allowed", 409, _("办件办结后才能评价，且只能评价一次"))
ENDPOINT_URL_INVALID = error_code("endpoint_url_invalid", 400, _("回调地址无效"))
ENDPOINT_URL_NOT_ALLOWED = error_code(
    "endpoint_url_not_allowed", 400, _("回调地址不能指向内网、本机或保留地址")
)
DELIVERY_NOT_RETRYABLE = error_code(
    "delivery_not_retryable", 409, _("该投递正在进行或已成功，无需重试")
)


class ServicesError(DomainError):
    """A rule of the catalog, applications or routing refused the request."""

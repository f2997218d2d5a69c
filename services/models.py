"""The service catalog (办事指南)."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from accounts.models import Department, IdentityLevel


class Channel(models.TextChoices):
    ONLINE = "online", _("网上办")
    HALL = "hall", _("窗口办")
    MAIL = "mail", _("邮寄办")


class Category(models.Model):
    """A theme citizens browse by (社保, 医保, 公积金, 户籍 …)."""

    code = models.SlugField(_("代码"), max_length=32, unique=True)
    name = models.CharField(_("名称"), max_length=50)
    name_en = models.CharField(_("英文名称"), max_length=100, blank=True)
    description = models.TextField(_("简介"), blank=True)
    sort_order = models.PositiveIntegerField(_("排序"), default=0)
    is_active = models.BooleanField(_("启用"), default=True)

    class Meta:
        ordering = ["sort_order", "code"]
        verbose_name = _("主题分类")
        verbose_name_plural = _("主题分类")

    def __str__(self) -> str:
        return self.name


class Service(models.Model):
    """One government service and its guide: who may apply, what to bring,
    what it costs, how long it takes, and the application form (JSON Schema)."""

    code = models.SlugField(_("事项编码"), max_length=64, unique=True)
    name = models.CharField(_("事项名称"), max_length=100)
    department = models.ForeignKey(
        Department, verbose_name=_("实施部门"), on_delete=models.PROTECT, related_name="services"
    )
    category = models.ForeignKey(
        Category, verbose_name=_("主题分类"), on_delete=models.PROTECT, related_name="services"
    )
    summary = models.TextField(_("事项简介"), blank=True)
    eligibility = models.TextField(_("申请条件"), blank=True)
    materials = models.JSONField(_("申请材料"), default=list, blank=True)
    fee_fen = models.PositiveIntegerField(_("收费（分）"), default=0)
    time_limit_days = models.PositiveSmallIntegerField(_("承诺时限（工作日）"), default=0)
    legal_basis = models.TextField(_("设定依据"), blank=True)
    channels = models.JSONField(_("办理渠道"), default=list)
    identity_level = models.PositiveSmallIntegerField(
        _("所需身份等级"), choices=IdentityLevel.choices, default=IdentityLevel.REAL_NAME
    )
    form_schema = models.JSONField(_("申请表（JSON Schema）"), default=dict)
    keywords = models.JSONField(_("关键词"), default=list, blank=True)
    is_active = models.BooleanField(_("上线"), default=True)
    # Name and keywords with their pinyin (full and initials), lower case:
    # what ``?q=`` searches. Kept by the catalog services on every write.
    search_text = models.TextField(editable=False, default="")
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        ordering = ["code"]
        verbose_name = _("服务事项")
        verbose_name_plural = _("服务事项")
        indexes = [
            models.Index(fields=["is_active", "category"], name="service_browse"),
            models.Index(fields=["department", "code"], name="service_department"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def is_free(self) -> bool:
        return self.fee_fen == 0

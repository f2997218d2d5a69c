"""Citizens, staff, departments, API keys, the message inbox and the audit trail."""

from __future__ import annotations

import secrets
from typing import ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from accounts.fields import EncryptedJSONField, EncryptedTextField
from config import masking
from config.ids import uuid7


class Department(models.Model):
    """A government department or public body that owns services."""

    code = models.SlugField(_("代码"), max_length=32, unique=True)
    name = models.CharField(_("名称"), max_length=100)
    name_en = models.CharField(_("英文名称"), max_length=200, blank=True)
    description = models.TextField(_("简介"), blank=True)
    contact_phone = models.CharField(_("咨询电话"), max_length=32, blank=True)
    is_active = models.BooleanField(_("启用"), default=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)

    class Meta:
        ordering = ["code"]
        verbose_name = _("部门")
        verbose_name_plural = _("部门")

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class IdentityLevel(models.IntegerChoices):
    PHONE = 1, _("手机号已验证")
    REAL_NAME = 2, _("已实名认证")


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, username: str, password: str | None = None, **extra) -> User:
        if not username:
            raise ValueError("staff accounts need a username")
        user = self.model(username=username, **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, username: str, password: str | None = None, **extra) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(username, password, **extra)


def new_subject() -> str:
    """The pseudonymous subject id carried in star-codes and events."""
    return "s_" + secrets.token_hex(12)


class User(AbstractBaseUser, PermissionsMixin):
    """One account: a citizen (phone + OTP) or a staff member (username + password).

    Citizens have a phone and no usable password; operators and department
    staff log into the admin with a username and password. ``real_name`` and
    ``id_number`` are encrypted at rest; ``id_number_index`` is their blind
    index, unique among live accounts.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    username = models.CharField(_("用户名"), max_length=150, unique=True, null=True, blank=True)
    phone = models.CharField(_("手机号"), max_length=11, unique=True, null=True, blank=True)
    nickname = models.CharField(_("昵称"), max_length=40, blank=True)
    email = models.EmailField(_("电子邮箱"), blank=True)
    identity_level = models.PositiveSmallIntegerField(
        _("身份等级"), choices=IdentityLevel.choices, default=IdentityLevel.PHONE
    )
    real_name = EncryptedTextField(_("真实姓名"), blank=True, default="")
    id_number = EncryptedTextField(_("身份证号"), blank=True, default="")
    id_number_index = models.CharField(
        max_length=64, unique=True, null=True, blank=True, editable=False
    )
    real_name_verified_at = models.DateTimeField(_("实名认证时间"), null=True, blank=True)
    subject = models.CharField(
        _("匿名主体标识"), max_length=32, unique=True, default=new_subject, editable=False
    )
    department = models.ForeignKey(
        Department,
        verbose_name=_("所属部门"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="staff",
        help_text=_("部门工作人员所属的部门；市民为空。"),
    )
    is_active = models.BooleanField(_("有效"), default=True)
    is_staff = models.BooleanField(_("可登录管理后台"), default=False)
    date_joined = models.DateTimeField(_("注册时间"), default=timezone.now)
    closed_at = models.DateTimeField(_("注销时间"), null=True, blank=True)
    # When the account last stopped being usable (suspended or closed), so
    # offline scanners can learn which subjects to refuse since a given time.
    deactivated_at = models.DateTimeField(_("停用时间"), null=True, blank=True, db_index=True)

    objects = UserManager()

    USERNAME_FIELD = "username"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        verbose_name = _("用户")
        verbose_name_plural = _("用户")
        permissions = [("view_pii", _("查看完整个人信息（留痕）"))]

    def __str__(self) -> str:
        if self.username:
            return self.username
        if self.phone:
            return masking.mask_phone(self.phone)
        return f"user-{str(self.id)[-8:]}"

    @property
    def phone_masked(self) -> str:
        return masking.mask_phone(self.phone)

    @property
    def real_name_masked(self) -> str:
        return masking.mask_name(self.real_name)

    @property
    def id_number_masked(self) -> str:
        return masking.mask_id_number(self.id_number)


class OtpChallenge(models.Model):
    """One SMS code sent to one phone. Only its HMAC is stored."""

    class CloseReason(models.TextChoices):
        USED = "used", _("已使用")
        BURNED = "burned", _("错误次数过多")
        SUPERSEDED = "superseded", _("已被新验证码取代")

    phone = models.CharField(_("手机号"), max_length=11)
    code_hash = models.CharField(_("验证码摘要"), max_length=64)
    ip = models.GenericIPAddressField(_("请求地址"), null=True, blank=True)
    # What the per-address send caps count (config.api.client_block): the
    # address, or an IPv6 client's /64, as the throttles count it; "" without one.
    ip_block = models.CharField(
        max_length=64, blank=True, default="", db_default="", editable=False
    )
    created_at = models.DateTimeField(_("发送时间"), default=timezone.now)
    expires_at = models.DateTimeField(_("过期时间"))
    # Wrong codes, in all and from networks other than ip_block (the one
    # that asked for the code); accounts.otp.otp_login keeps the most of a
    # code's tries for that network.
    attempts = models.PositiveSmallIntegerField(_("核对次数"), default=0)
    # No CHECK (>= 0) as on attempts: adding one reads the whole table
    # while holding it; the count only ever goes up from 0.
    attempts_elsewhere = models.SmallIntegerField(_("其他网络的核对次数"), default=0, db_default=0)
    closed_at = models.DateTimeField(_("关闭时间"), null=True, blank=True)
    close_reason = models.CharField(
        _("关闭原因"), max_length=16, choices=CloseReason.choices, blank=True
    )

    class Meta:
        verbose_name = _("短信验证码")
        verbose_name_plural = _("短信验证码")
        indexes = [
            models.Index(fields=["phone", "-created_at"], name="otp_phone_recent"),
            models.Index(fields=["ip_block", "-created_at"], name="otp_ip_block_recent"),
        ]

    def __str__(self) -> str:
        return f"{masking.mask_phone(self.phone)} @ {timezone.localtime(self.created_at):%Y-%m-%d %H:%M:%S}"


class ApiKeyScope(models.TextChoices):
    INTEGRATOR = "integrator", _("部门系统对接")
    SCANNER = "scanner", _("扫码终端")


class ApiKey(models.Model):
    """A department's credential for the department or scanner API.

    The key is ``mcs_<prefix>_<secret>``; only its SHA-256 is stored, and it
    is shown once, when created. The prefix identifies it in lists and logs.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    department = models.ForeignKey(
        Department, verbose_name=_("部门"), on_delete=models.PROTECT, related_name="api_keys"
    )
    name = models.CharField(_("名称"), max_length=100, blank=True)
    scope = models.CharField(_("权限范围"), max_length=16, choices=ApiKeyScope.choices)
    prefix = models.CharField(_("前缀"), max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("创建人"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    last_used_at = models.DateTimeField(_("最近使用"), null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(_("吊销时间"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("API 密钥")
        verbose_name_plural = _("API 密钥")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"mcs_{self.prefix}_… ({self.department.code}, {self.scope})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Message(models.Model):
    """An inbox message to one citizen. Title and body are kept per language."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("收件人"),
        on_delete=models.CASCADE,
        related_name="messages",
    )
    kind = models.CharField(_("类型"), max_length=64)
    title = models.JSONField(_("标题"))
    body = models.JSONField(_("正文"))
    data = models.JSONField(_("附加数据"), default=dict, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(_("时间"), default=timezone.now)
    read_at = models.DateTimeField(_("已读时间"), null=True, blank=True)

    class Meta:
        verbose_name = _("站内消息")
        verbose_name_plural = _("站内消息")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"], name="message_inbox")]

    def __str__(self) -> str:
        return self.localized_title()

    def localized_title(self, language: str | None = None) -> str:
        return _pick(self.title, language)

    def localized_body(self, language: str | None = None) -> str:
        return _pick(self.body, language)


def _pick(texts: dict[str, str], language: str | None) -> str:
    language = language or get_language() or settings.LANGUAGE_CODE
    if language in texts:
        return texts[language]
    base = language.split("-")[0]
    for key, value in texts.items():
        if key.split("-")[0] == base:
            return value
    return texts.get(settings.LANGUAGE_CODE) or next(iter(texts.values()), "")


class AuditEntry(models.Model):
    """Who changed what, when: admin, department and payment state changes."""

    class ActorKind(models.TextChoices):
        OPERATOR = "operator", _("运营人员")
        CITIZEN = "citizen", _("市民")
        API_KEY = "api_key", _("部门 API 密钥")
        SYSTEM = "system", _("系统")

    at = models.DateTimeField(_("时间"), default=timezone.now, db_index=True)
    actor_kind = models.CharField(_("操作者类型"), max_length=16, choices=ActorKind.choices)
    actor_id = models.CharField(_("操作者"), max_length=64, blank=True)
    actor_label = models.CharField(_("操作者名称"), max_length=200, blank=True)
    action = models.CharField(_("动作"), max_length=100, db_index=True)
    target_type = models.CharField(_("对象类型"), max_length=100, blank=True)
    target_id = models.CharField(_("对象"), max_length=64, blank=True)
    data = models.JSONField(_("内容"), default=dict, blank=True, encoder=DjangoJSONEncoder)
    ip = models.GenericIPAddressField(_("IP"), null=True, blank=True)

    class Meta:
        verbose_name = _("审计记录")
        verbose_name_plural = _("审计记录")
        ordering = ["-at"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
            models.Index(fields=["actor_kind", "actor_id"], name="audit_actor"),
        ]

    def __str__(self) -> str:
        return f"{timezone.localtime(self.at):%Y-%m-%d %H:%M:%S} {self.action} {self.target_type}:{self.target_id}"


class IdempotencyRecord(models.Model):
    """The first answer to a POST sent with an ``Idempotency-Key``, kept 24 h
    per caller so a retry gets the same answer instead of a second effect."""

    owner = models.CharField(max_length=80)  # "user:<id>" or "key:<id>"
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)  # of method, path and body
    status_code = models.PositiveSmallIntegerField(default=0)
    body = EncryptedJSONField(null=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The citizen whose data the answer holds when it was kept under another
    # caller's key (a department's status report answers with the applicant's
    # identity): it goes when that citizen's account closes. No constraint in
    # the database: writing a record takes no lock on the citizen's row.
    concerns = models.ForeignKey(
        User,
        null=True,
        on_delete=models.CASCADE,
        db_constraint=False,
        db_index=False,
        editable=False,
        related_name="+",
    )

    class Meta:
        verbose_name = _("幂等记录")
        verbose_name_plural = _("幂等记录")
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="idempotency_owner_key")
        ]
        indexes = [
            models.Index(
                fields=["concerns"],
                name="idempotency_concerns",
                condition=models.Q(concerns__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.key}"

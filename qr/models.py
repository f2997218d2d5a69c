"""Signing keys, venue codes, scanner disclosure profiles and scan events."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.fields import EncryptedTextField
from accounts.models import ApiKey, ApiKeyScope, Department
from config.ids import uuid7
from qr.codes import Kind, Reason


class SigningKey(models.Model):
    """An Ed25519 key that signs star-codes and venue codes.

    Its life: published in the JWKS when created; signing from
    ``activates_at`` (the newest key that has activated is the one active
    key); superseded when a newer key activates, still published while
    codes it signed can be valid; withdrawn from the JWKS after that, when
    its private part is erased.
    """

    kid = models.CharField(_("密钥标识"), max_length=32, unique=True)
    public_key = models.CharField(
        _("公钥"), max_length=64, help_text=_("Ed25519 公钥（base64url）")
    )
    # The 32-byte private key, base64url; encrypted at rest under
    # FIELD_ENCRYPTION_KEY like all personal data. Blank once withdrawn.
    private_key = EncryptedTextField(blank=True, editable=False)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now)
    activates_at = models.DateTimeField(_("启用时间"), db_index=True)
    withdrawn_at = models.DateTimeField(_("撤下时间"), null=True, blank=True)
    # It signed a document that does not expire (a payment receipt): it
    # stays published so that printed receipts can be checked offline.
    signed_documents = models.BooleanField(_("签过票据"), default=False, editable=False)

    class Meta:
        ordering = ["-activates_at"]
        verbose_name = _("签名密钥")
        verbose_name_plural = _("签名密钥")

    def __str__(self) -> str:
        return self.kid


class VenueCode(models.Model):
    """A printed code at a counter or a hall that opens one service in the app."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    department = models.ForeignKey(
        Department, verbose_name=_("部门"), on_delete=models.PROTECT, related_name="venue_codes"
    )
    service = models.ForeignKey(
        "services.Service",
        verbose_name=_("服务事项"),
        on_delete=models.PROTECT,
        related_name="venue_codes",
    )
    label = models.CharField(_("名称"), max_length=100)
    location = models.CharField(_("地点"), max_length=200, blank=True)
    # The code's ``jti``: the id as text, what scans and revocations name.
    jti = models.CharField(_("码标识"), max_length=64, unique=True, editable=False)
    kid = models.CharField(_("签名密钥"), max_length=32, db_index=True, editable=False)
    code = models.TextField(_("码内容"), editable=False)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now, editable=False)
    deactivated_at = models.DateTimeField(_("停用时间"), null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("场所码")
        verbose_name_plural = _("场所码")
        indexes = [
            models.Index(fields=["department", "-created_at"], name="venue_code_department"),
            models.Index(fields=["deactivated_at"], name="venue_code_deactivated"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.service_id})"

    @property
    def is_active(self) -> bool:
        return self.deactivated_at is None


class Disclosure(models.TextChoices):
    """What a verification answer tells the scanner beyond ``valid``."""

    LEVEL = "level", _("仅有效性与身份等级")
    MASKED_NAME = "masked_name", _("另含脱敏姓名")


class ScannerProfile(models.Model):
    """How much a scanner key learns, and where it stands (set by operators).

    A key without a profile learns the least: valid or not, and the identity
    level (a metro gate). ``place`` is what citizens see in their scan list.
    """

    api_key = models.OneToOneField(
        ApiKey,
        verbose_name=_("扫码终端密钥"),
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="scanner_profile",
        limit_choices_to={"scope": ApiKeyScope.SCANNER},
    )
    place = models.CharField(
        _("扫码地点"), max_length=100, blank=True, help_text=_("市民在扫码记录中看到的地点")
    )
    disclosure = models.CharField(
        _("披露范围"), max_length=16, choices=Disclosure.choices, default=Disclosure.LEVEL
    )
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("扫码终端配置")
        verbose_name_plural = _("扫码终端配置")

    def __str__(self) -> str:
        return self.place or str(self.api_key_id)


class ScanEvent(models.Model):
    """One verification of a scanned code: online, uploaded by an offline
    terminal, or a venue code opened in the app. No personal data: the
    citizen appears only as the code's pseudonymous subject, and only when
    the signature held (a forged code cannot write into anyone's history)."""

    class Source(models.TextChoices):
        ONLINE = "online", _("在线核验")
        OFFLINE = "offline", _("离线上传")
        APP = "app", _("应用扫码")

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    source = models.CharField(_("来源"), max_length=8, choices=Source.choices)
    scanned_at = models.DateTimeField(_("扫码时间"))
    recorded_at = models.DateTimeField(_("入库时间"), default=timezone.now)
    scanner = models.ForeignKey(
        ApiKey,
        verbose_name=_("扫码终端"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    department = models.ForeignKey(
        Department,
        verbose_name=_("部门"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    place = models.CharField(_("扫码地点"), max_length=100, blank=True)
    kind = models.CharField(
        _("码类型"), max_length=8, choices=[(k.value, k.value) for k in Kind], blank=True
    )
    valid = models.BooleanField(_("有效"))
    reason = models.CharField(
        _("无效原因"), max_length=20, choices=[(r.value, r.value) for r in Reason], blank=True
    )
    subject = models.CharField(_("匿名主体标识"), max_length=64, blank=True)
    jti = models.CharField(_("码标识"), max_length=64, blank=True)
    kid = models.CharField(_("签名密钥"), max_length=32, blank=True)
    terminal_event_id = models.CharField(_("终端事件号"), max_length=64, blank=True)

    class Meta:
        ordering = ["-scanned_at"]
        verbose_name = _("扫码记录")
        verbose_name_plural = _("扫码记录")
        indexes = [
            models.Index(fields=["subject", "-scanned_at"], name="scan_subject_recent"),
            models.Index(fields=["jti"], name="scan_jti"),
            models.Index(fields=["scanned_at"], name="scan_time"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["scanner", "terminal_event_id"],
                condition=~Q(terminal_event_id=""),
                name="scan_terminal_event_once",
            )
        ]

    def __str__(self) -> str:
        return f"{timezone.localtime(self.scanned_at):%Y-%m-%d %H:%M:%S} {self.kind or '?'} {self.reason or 'valid'}"


class ScanClaim(models.Model):
    """Without Redis: the first valid verification of a code by a scanner
    key. The unique index makes a second one a replay in every process."""

    holder = models.CharField(max_length=64)
    jti = models.CharField(max_length=64)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["holder", "jti"], name="scan_claim_once")]

    def __str__(self) -> str:
        return f"{self.holder} {self.jti}"

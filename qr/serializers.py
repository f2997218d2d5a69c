"""Shapes of star-code data in and out of the API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from config.api import ModelSerializer, StrictCharField
from qr.codes import MAX_LENGTH, Kind, Reason
from qr.models import ScanEvent, VenueCode
from services.models import Service
from services.selectors import department_services

_CODE_HELP = "The scanned text: `MCS1:` + compact JWS"
# Longer than any code (which the verifier calls malformed) but bounded.
CODE_FIELD_MAX_LENGTH = MAX_LENGTH * 2


class CodeInSerializer(serializers.Serializer):
    code = StrictCharField(max_length=CODE_FIELD_MAX_LENGTH, help_text=_CODE_HELP)


class StarCodeSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="QR text: `MCS1:` + compact JWS (EdDSA)")
    expires_at = serializers.DateTimeField()
    refresh_after = serializers.DateTimeField(
        help_text="Fetch the next code from this time on (before expires_at)"
    )


class JwkSerializer(serializers.Serializer):
    kty = serializers.ChoiceField(choices=["OKP"])
    crv = serializers.ChoiceField(choices=["Ed25519"])
    x = serializers.CharField(help_text="Public key, base64url")
    kid = serializers.CharField()
    alg = serializers.ChoiceField(choices=["EdDSA"])
    use = serializers.ChoiceField(choices=["sig"])


class JwksSerializer(serializers.Serializer):
    keys = JwkSerializer(many=True)


class VerifiedSubjectSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The code's pseudonymous `sub`")
    identity_level = serializers.IntegerField()
    name_masked = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="Only where the scanner's profile discloses it, e.g. `张*`",
    )


class VerifyResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    kind = serializers.ChoiceField(choices=[k.value for k in Kind], required=False)
    subject = VerifiedSubjectSerializer(required=False)
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="null for venue codes (no expiry)"
    )
    reason = serializers.ChoiceField(
        choices=[r.value for r in Reason], required=False, help_text="Only when valid is false"
    )


class RevokedCodeSerializer(serializers.Serializer):
    jti = serializers.CharField()
    at = serializers.DateTimeField()


class InactiveSubjectSerializer(serializers.Serializer):
    sub = serializers.CharField()
    at = serializers.DateTimeField()


class RevocationsSerializer(serializers.Serializer):
    revoked = RevokedCodeSerializer(many=True)
    inactive_subjects = InactiveSubjectSerializer(many=True)
    until = serializers.DateTimeField(help_text="Pass as `since` next time")


class ScanTimeField(serializers.DateTimeField):
    """A date-time as DRF reads it, with its offset: one without would be
    taken as Beijing time, and a terminal whose clock keeps UTC without
    saying so would file its scans eight hours off. A time at the calendar's
    ends is invalid input, not a 500."""

    default_error_messages = {
        "offset": _("扫码时间须带时区偏移，如 2026-12-07T09:30:00+08:00"),
    }

    def to_internal_value(self, value: Any) -> dt.datetime:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("offset")
        try:
            return super().to_internal_value(value)
        except OverflowError:
            self.fail("invalid", format="an ISO 8601 date-time")


class OfflineScanSerializer(serializers.Serializer):
    event_id = serializers.CharField(
        max_length=64, help_text="The terminal's own id for this scan (unique per key)"
    )
    code = StrictCharField(max_length=MAX_LENGTH * 2, help_text=_CODE_HELP)
    scanned_at = ScanTimeField()
    valid = serializers.BooleanField(help_text="The terminal's verdict")
    reason = serializers.ChoiceField(
        choices=[r.value for r in Reason],
        required=False,
        allow_null=True,
        default=None,
        help_text="Why not valid (required when valid is false)",
    )

    def validate_scanned_at(self, value: dt.datetime) -> dt.datetime:
        now = timezone.now()
        if value > now + dt.timedelta(hours=1):
            raise serializers.ValidationError(_("扫码时间晚于当前时间，请校准终端时钟"))
        if value < now - dt.timedelta(days=settings.QR_SCAN_RETENTION_DAYS):
            raise serializers.ValidationError(_("扫码时间超出保存期限"))
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs["valid"] and attrs.get("reason"):
            raise serializers.ValidationError({"reason": [_("有效的扫码不能带无效原因")]})
        if not attrs["valid"] and not attrs.get("reason"):
            raise serializers.ValidationError({"reason": [_("无效的扫码须注明原因")]})
        return attrs


class ScanUploadSerializer(serializers.Serializer):
    scans = OfflineScanSerializer(many=True, min_length=1)  # type: ignore[call-arg]  # many=True hands it to the ListSerializer; not in the stubs

    def validate_scans(self, value: list) -> list:
        if len(value) > settings.QR_OFFLINE_BATCH_MAX:
            raise serializers.ValidationError(
                _("每批最多 %(n)s 条") % {"n": settings.QR_OFFLINE_BATCH_MAX}
            )
        return value


class ScanUploadResultItemSerializer(serializers.Serializer):
    event_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["recorded", "duplicate"])


class ScanUploadResultSerializer(serializers.Serializer):
    recorded = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    scans = ScanUploadResultItemSerializer(many=True)


class ServiceRefSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()


class ResolvedSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["venue"])
    service = ServiceRefSerializer()
    label = serializers.CharField()  # type: ignore[assignment]  # the metaclass takes declared fields off the class
    location = serializers.CharField()


class DepartmentRefSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()


class MyScanSerializer(ModelSerializer):
    department = DepartmentRefSerializer(allow_null=True)

    class Meta:
        model = ScanEvent
        fields = ["id", "scanned_at", "department", "place", "source", "valid", "reason"]


class VenueCodeSerializer(ModelSerializer):
    service: serializers.SlugRelatedField[Service] = serializers.SlugRelatedField(
        slug_field="code", read_only=True
    )
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = VenueCode
        fields = [
            "id",
            "code",
            "service",
            "label",
            "location",
            "is_active",
            "created_at",
            "deactivated_at",
        ]


class VenueCodeCreateSerializer(serializers.Serializer):
    service = serializers.CharField(
        max_length=64, help_text="Code of one of your department's services"
    )
    label = serializers.CharField(max_length=100, help_text="e.g. 芙蓉区政务服务中心 3 号窗口")  # type: ignore[assignment]  # the metaclass takes declared fields off the class
    location = serializers.CharField(max_length=200, allow_blank=True, default="")

    def validate_service(self, value: str) -> Service:
        department = self.context["department"]
        service = department_services(department).filter(code=value).first()
        if service is None:
            # The same answer for another department's service as for none.
            raise serializers.ValidationError(_("本部门没有这个事项"))
        return service

"""Shapes of catalog data in and out of the API and the catalog file."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import Department, IdentityLevel
from services.models import Category, Channel, Service


class MaterialSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    required = serializers.BooleanField(default=True)
    note = serializers.CharField(max_length=500, allow_blank=True, default="")


class GuideSerializer(serializers.Serializer):
    """The guide fields a department writes (办事指南)."""

    name = serializers.CharField(max_length=100)
    category = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Category.objects.filter(is_active=True),
        help_text="Category code",
    )
    summary = serializers.CharField(max_length=4000, allow_blank=True, default="")
    eligibility = serializers.CharField(max_length=4000, allow_blank=True, default="")
    materials = MaterialSerializer(many=True, default=list, max_length=50)
    fee_fen = serializers.IntegerField(
        min_value=0, max_value=100_000_000, default=0, help_text="0 = free"
    )
    time_limit_days = serializers.IntegerField(
        min_value=0, max_value=365, default=0, help_text="Promised time limit in working days"
    )
    legal_basis = serializers.CharField(max_length=4000, allow_blank=True, default="")
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices), min_length=1, max_length=3
    )
    identity_level = serializers.ChoiceField(
        choices=IdentityLevel.choices, default=IdentityLevel.REAL_NAME
    )
    form_schema = serializers.JSONField(
        help_text="JSON Schema (draft 2020-12) of the application form"
    )
    keywords = serializers.ListField(
        child=serializers.CharField(max_length=30), max_length=30, default=list
    )
    is_active = serializers.BooleanField(default=True)


class ServiceCreateSerializer(GuideSerializer):
    code = serializers.SlugField(max_length=64)


class CatalogRecordSerializer(ServiceCreateSerializer):
    """One record of a catalog file (operators' bulk import)."""

    department = serializers.SlugRelatedField(slug_field="code", queryset=Department.objects.all())


class ServiceSummarySerializer(serializers.ModelSerializer):
    department = serializers.SlugRelatedField(slug_field="code", read_only=True)
    category = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Service
        fields = [
            "code",
            "name",
            "department",
            "category",
            "summary",
            "fee_fen",
            "time_limit_days",
            "channels",
            "identity_level",
            "is_active",
        ]


class ServiceGuideSerializer(ServiceSummarySerializer):
    """The full guide (办事指南) of one service."""

    materials = MaterialSerializer(many=True, read_only=True)

    class Meta(ServiceSummarySerializer.Meta):
        fields = [
            *ServiceSummarySerializer.Meta.fields,
            "eligibility",
            "materials",
            "legal_basis",
            "form_schema",
            "keywords",
        ]


class DepartmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Department
        fields = ["code", "name", "name_en", "description", "contact_phone"]


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["code", "name", "name_en", "description"]

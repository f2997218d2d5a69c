"""Shapes of catalog data in and out of the API and the catalog file."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Department, IdentityLevel
from config.api import ModelSerializer
from services.applications import timeline_note
from services.models import (
    Application,
    ApplicationStatus,
    Category,
    Channel,
    Delivery,
    DeliveryAttempt,
    Endpoint,
    Service,
    TimelineEntry,
)
from services.routing.events import SUBSCRIBABLE
from services.selectors import DELIVERY_ATTEMPT_FIELDS, DELIVERY_FIELDS


class MaterialSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    required = serializers.BooleanField(default=True)  # type: ignore[assignment]  # the metaclass takes declared fields off the class
    note = serializers.CharField(max_length=500, allow_blank=True, default="")

    def validate(self, attrs: dict) -> dict:
        # A guide's PATCH is partial, and DRF makes every field below it
        # partial too; a material it sends is still a whole one.
        if "name" not in attrs:
            raise serializers.ValidationError(
                {"name": [self.fields["name"].error_messages["required"]]}
            )
        return attrs


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
    materials = MaterialSerializer(many=True, default=list, max_length=50)  # type: ignore[call-arg]  # many=True hands it to the ListSerializer; not in the stubs
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
        help_text=(
            "JSON Schema (draft 2020-12) of the application form. References stay inside "
            "it (`#` or `#/…`, no `$id`, anchors or dynamic references) and may not loop; "
            "`pattern` and `patternProperties` use RE2 syntax (no backreferences or "
            "lookarounds)."
        )
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


class ServiceSummarySerializer(ModelSerializer):
    department: serializers.SlugRelatedField[Department] = serializers.SlugRelatedField(
        slug_field="code", read_only=True
    )
    category: serializers.SlugRelatedField[Category] = serializers.SlugRelatedField(
        slug_field="code", read_only=True
    )

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


class DepartmentSerializer(ModelSerializer):
    class Meta:
        model = Department
        fields = ["code", "name", "name_en", "description", "contact_phone"]


class CategorySerializer(ModelSerializer):
    class Meta:
        model = Category
        fields = ["code", "name", "name_en", "description"]


# --- Applications ------------------------------------------------------------------------


class TimelineEntrySerializer(ModelSerializer):
    note = serializers.SerializerMethodField()

    class Meta:
        model = TimelineEntry
        fields = ["status", "at", "actor", "note"]

    def get_note(self, entry: TimelineEntry) -> str:
        """The platform's own notes in the reader's language."""
        return timeline_note(entry)


class RatingSerializer(serializers.Serializer):
    score = serializers.IntegerField(min_value=1, max_value=5)
    comment = serializers.CharField(max_length=500, allow_blank=True, default="")


class ApplicationListItemSerializer(ModelSerializer):
    service: serializers.SlugRelatedField[Service] = serializers.SlugRelatedField(
        slug_field="code", read_only=True
    )
    service_name = serializers.CharField(source="service.name", read_only=True)

    class Meta:
        model = Application
        fields = ["id", "number", "service", "service_name", "status", "created_at", "due_date"]


class GivenRatingSerializer(serializers.Serializer):
    """The citizen's rating of a finished application (好差评)."""

    score = serializers.IntegerField(min_value=1, max_value=5)
    comment = serializers.CharField()
    rated_at = serializers.DateTimeField()


class ApplicationSerializer(ApplicationListItemSerializer):
    """One of the citizen's applications, with its form and timeline."""

    form = serializers.JSONField(read_only=True)
    currency = serializers.SerializerMethodField()
    rating = serializers.SerializerMethodField()
    timeline = TimelineEntrySerializer(many=True, read_only=True)

    class Meta(ApplicationListItemSerializer.Meta):
        fields = [
            *ApplicationListItemSerializer.Meta.fields,
            "form",
            "fee_fen",
            "currency",
            "rating",
            "timeline",
        ]

    def get_currency(self, application: Application) -> str:
        return "CNY"

    @extend_schema_field(GivenRatingSerializer(allow_null=True))
    def get_rating(self, application: Application) -> dict | None:
        if application.rated_at is None:
            return None
        return {
            "score": application.rating_score,
            "comment": application.rating_comment,
            "rated_at": serializers.DateTimeField().to_representation(application.rated_at),
        }


class ApplicationCreateSerializer(serializers.Serializer):
    service = serializers.SlugRelatedField(
        slug_field="code",
        # What the public catalog shows, and nothing it hides.
        queryset=Service.objects.filter(
            is_active=True, department__is_active=True, category__is_active=True
        ).select_related("department"),
    )
    form = serializers.JSONField(help_text="Answers to the service's form_schema")


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, allow_blank=True, default="")


class SupplementSerializer(serializers.Serializer):
    form = serializers.JSONField(
        help_text="The fields to correct or add; merged into the earlier answers"
    )


class DepartmentApplicantSerializer(serializers.Serializer):
    """The verified identity; once the applicant has closed the account,
    ``sub`` alone."""

    sub = serializers.CharField(help_text="The pseudonymous subject, as in star-codes")
    name = serializers.CharField(required=False, help_text="Absent once the account is closed")
    id_number = serializers.CharField(required=False, help_text="Absent once the account is closed")
    phone = serializers.CharField(required=False, help_text="Absent once the account is closed")


class DepartmentApplicationSerializer(serializers.Serializer):
    """Documentation of :func:`services.selectors.department_view` (events carry the same)."""

    number = serializers.CharField()
    service = serializers.CharField()
    status = serializers.ChoiceField(choices=ApplicationStatus.choices)
    form = serializers.JSONField()
    fee_fen = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    due_date = serializers.DateField(allow_null=True)
    reference = serializers.CharField()
    applicant = DepartmentApplicantSerializer()
    timeline = TimelineEntrySerializer(many=True, required=False)


class DepartmentStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=ApplicationStatus.choices)
    note = serializers.CharField(max_length=1000, allow_blank=True, default="")
    reference = serializers.CharField(max_length=100, allow_blank=True, default="")


# --- Endpoints and deliveries ------------------------------------------------------------------


class EndpointSerializer(ModelSerializer):
    state = serializers.CharField(
        read_only=True,
        help_text=(
            "active; held (by the platform's operators: only they resume it); "
            "paused (circuit breaker); disabled (is_active false, or a 410 answer)"
        ),
    )

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "url",
            "description",
            "events",
            "is_active",
            "state",
            "hold_reason",
            "pause_reason",
            "disabled_reason",
            "consecutive_failures",
            "last_success_at",
            "last_failure_at",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "state",
            "hold_reason",
            "pause_reason",
            "disabled_reason",
            "consecutive_failures",
            "last_success_at",
            "last_failure_at",
            "created_at",
        ]


class EndpointWriteSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=500)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=[(e, e) for e in SUBSCRIBABLE]),
        min_length=1,
        max_length=10,
    )
    description = serializers.CharField(max_length=200, allow_blank=True, default="")
    is_active = serializers.BooleanField(default=True)


class EndpointWithSecretSerializer(EndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="whsec_…: shown only now")

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]


class DeliveryAttemptSerializer(ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = DELIVERY_ATTEMPT_FIELDS


class DeliveryEventSerializer(serializers.Serializer):
    id = serializers.CharField(source="webhook_id", help_text="The webhook-id header of every try")
    type = serializers.CharField()
    created_at = serializers.DateTimeField()


class DeliverySerializer(ModelSerializer):
    event = DeliveryEventSerializer(read_only=True)
    endpoint = serializers.UUIDField(source="endpoint_id", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", *DELIVERY_FIELDS]


class DeliveryDetailSerializer(DeliverySerializer):
    attempts = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "attempts"]

"""Operators' catalog: categories, services, bulk import and export."""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from accounts import dashboard
from accounts.admin import (
    AuditedDeletions,
    AuditedModelAdmin,
    BigTableList,
    ChangesPublicPages,
    DetailActions,
    ReadOnlyAdmin,
    StaffRequest,
    fixed_choices,
)
from config import masking
from config.api import client_ip
from config.pages import catalog_pages
from services import catalog, selectors
from services.errors import ServicesError
from services.models import (
    Application,
    ApplicationStatus,
    Category,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Endpoint,
    Holiday,
    OutboxEvent,
    Service,
    TimelineEntry,
)
from services.routing import deliveries, endpoints, events
from services.serializers import GuideSerializer


@admin.register(Category)
class CategoryAdmin(ChangesPublicPages, AuditedModelAdmin):
    pages = catalog_pages
    audited_values = ("name", "name_en", "sort_order", "is_active")

    list_display = ("code", "name", "name_en", "sort_order", "is_active")
    list_editable = ("sort_order", "is_active")
    search_fields = ("code", "name", "name_en")

    def get_readonly_fields(self, request, obj=None):
        # What clients filter the catalog by: given once, like a service's.
        return ("code",) if obj else ()


def _not_json(text: str) -> NoReturn:
    raise json.JSONDecodeError("not a JSON number", text, 0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as infinity
        _not_json(text)
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # past Python's digit limit (4300): not a number we keep
        _not_json(text)


class _JSONDecoder(json.JSONDecoder):
    """JSON and nothing more, as the API's parser takes it: Python's also
    reads NaN and Infinity, which no JSON column holds (the save was a 500),
    and refuses an integer of more than 4300 digits with an error the form
    does not expect (a 500 too)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            **{
                **kwargs,
                "parse_constant": _not_json,
                "parse_float": _finite,
                "parse_int": _integer,
            }
        )


class EscapedJSONField(forms.JSONField):
    """Shows a value back as ASCII JSON: a refused value holding a lone
    surrogate ("\\ud800"), which no page can carry, is shown escaped.
    Takes JSON only (no NaN or Infinity)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "decoder": _JSONDecoder})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, cls=self.encoder)


_JSON_GUIDE_FIELDS = ("materials", "channels", "keywords")
# Those fields as the department API declares them (not partial: a partial
# serializer would not require a material's name either): fresh, unbound
# copies, from the serializer's public ``get_fields``.
_guide_fields = GuideSerializer().get_fields()
_GuideShapes = type(
    "GuideShapes",
    (serializers.Serializer,),
    {name: _guide_fields[name] for name in _JSON_GUIDE_FIELDS},
)


def _messages(errors: Any) -> list[str]:
    """DRF's errors of one field (nested by item and key) as a flat list."""
    if isinstance(errors, dict):
        return [f"{key}: {m}" for key, nested in errors.items() for m in _messages(nested)]
    if isinstance(errors, list):
        return [m for each in errors for m in _messages(each)]
    return [str(errors)]


class ServiceForm(forms.ModelForm):
    # When the service last changed, as the page was shown: a form saved
    # over a change made since (a department's edit through its API,
    # another operator's, a take-offline) would write back everything it
    # showed, so it is refused and shown again to be reopened.
    seen = forms.CharField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Service
        fields = ("code", "department", *catalog.GUIDE_FIELDS)
        field_classes = dict.fromkeys(
            ("materials", "channels", "form_schema", "keywords"), EscapedJSONField
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["seen"].initial = self.instance.updated_at.isoformat()

    def clean(self):
        super().clean()
        seen = self.cleaned_data.get("seen")
        if self.instance.pk is not None and seen:
            # Locked until the save (the admin's change view is one
            # transaction): a change arriving between this check and the
            # save waits for it, rather than being written over.
            now = (
                Service.objects.select_for_update(no_key=True)
                .filter(pk=self.instance.pk)
                .values_list("updated_at", flat=True)
            )
            if [moment.isoformat() for moment in now] != [seen]:
                raise ValidationError(
                    _(
                        "打开此页之后，该事项已被修改（部门接口或其他运营人员）；请重新打开此页再修改。"
                    )
                )
        # These are JSON text here: held to the shapes the department API
        # takes (a list of materials with names, of keywords, of channels),
        # or the guide's rules and its pinyin would meet numbers and nulls.
        shaped = {
            name: self.cleaned_data[name]
            for name in _JSON_GUIDE_FIELDS
            if name in self.cleaned_data
        }
        checked = _GuideShapes(data=shaped)
        if not checked.is_valid():
            raise ValidationError(
                {name: _messages(errors) for name, errors in checked.errors.items()}
            )
        self.cleaned_data.update(checked.validated_data)
        # A stored form schema is checked again only when it is changed, as
        # through the department API: one saved before a rule (a format
        # nothing checks) leaves the rest of the guide editable.
        values = self.cleaned_data
        # Compared with the row read for this save, not the page's hidden
        # initial value, which the browser sends back.
        if not self.instance._state.adding and catalog.json_equal(
            values.get("form_schema"), self.instance.form_schema
        ):
            values = {k: v for k, v in values.items() if k != "form_schema"}
        try:
            catalog.guide_check(values)
        except ServicesError as exc:
            raise ValidationError(dict(exc.errors.items())) from exc
        return self.cleaned_data


# A city's whole catalog is a few MB; the file is read whole to be parsed.
CATALOG_FILE_MAX_BYTES = 32 * 1024 * 1024


class CatalogFileForm(forms.Form):
    file = forms.FileField(label=_("目录文件（JSON）"))

    def clean_file(self) -> Any:
        file = self.cleaned_data["file"]
        if file.size > CATALOG_FILE_MAX_BYTES:
            raise forms.ValidationError(
                _("文件过大：目录文件不能超过 %(mb)s MB")
                % {"mb": CATALOG_FILE_MAX_BYTES // (1024 * 1024)}
            )
        return file


@admin.register(Service)
class ServiceAdmin(ChangesPublicPages, AuditedDeletions, admin.ModelAdmin):
    """Saves go through services.catalog (which bumps the catalog's pages
    and audits); deletes through ChangesPublicPages, audited."""

    pages = catalog_pages
    form = ServiceForm
    list_display = (
        "code",
        "name",
        "department",
        "category",
        "fee_fen",
        "time_limit_days",
        "identity_level",
        "is_active",
    )
    list_filter = ("is_active", "department", "category", "identity_level")
    search_fields = ("code", "name", "search_text")
    list_select_related = ("department", "category")
    actions = ["export_json", "take_offline", "put_online"]

    def get_readonly_fields(self, request, obj=None):
        return ("code", "department", "offline_held_at") if obj else ()

    def save_model(self, request, obj, form, change):
        values = {
            k: v for k, v in form.cleaned_data.items() if k not in ("code", "department", "seen")
        }
        if change:
            # The form has already copied its values onto ``obj``; the service
            # compares against what is stored.
            stored = Service.objects.get(pk=obj.pk)
            catalog.service_update(
                service=stored, actor=request.user, ip=client_ip(request), **values
            )
        else:
            created = catalog.service_create(
                code=form.cleaned_data["code"],
                department=form.cleaned_data["department"],
                actor=request.user,
                ip=client_ip(request),
                **values,
            )
            obj.pk = created.pk
            obj._state.adding = False

    @admin.action(description=_("导出所选事项（JSON 目录文件）"), permissions=["view"])
    def export_json(self, request: HttpRequest, queryset: QuerySet[Service]) -> HttpResponse:
        records = catalog.catalog_export(queryset.select_related("department", "category"))
        response = HttpResponse(
            json.dumps({"services": records}, ensure_ascii=False, indent=1),
            content_type="application/json; charset=utf-8",
        )
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="catalog-{stamp}.json"'
        return response

    @admin.action(description=_("下线所选事项"), permissions=["change"])
    def take_offline(self, request: StaffRequest, queryset: QuerySet[Service]) -> None:
        for service in queryset:
            catalog.service_update(
                service=service,
                actor=request.user,
                ip=client_ip(request),
                is_active=False,
                hold=True,  # also one its department took offline
            )

    @admin.action(description=_("上线所选事项"), permissions=["change"])
    def put_online(self, request: StaffRequest, queryset: QuerySet[Service]) -> None:
        for service in queryset:
            catalog.service_update(
                service=service, actor=request.user, ip=client_ip(request), is_active=True
            )

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="services_service_import",
            ),
            *super().get_urls(),
        ]

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "import_url": reverse("admin:services_service_import")
            if self.has_import_permission(request)
            else None,
        }
        return super().changelist_view(request, extra_context)

    def import_view(self, request: StaffRequest) -> HttpResponse:
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = CatalogFileForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                file = form.cleaned_data["file"]
                document = json.loads(
                    file.read(CATALOG_FILE_MAX_BYTES).decode("utf-8"), cls=_JSONDecoder
                )
                records = document["services"] if isinstance(document, dict) else document
                if not isinstance(records, list):
                    raise ValueError
            except (ValueError, KeyError, UnicodeDecodeError, RecursionError):
                form.add_error("file", _('文件不是目录 JSON（{"services": [...]} 或事项列表）'))
            else:
                try:
                    report = catalog.catalog_import(
                        records, actor=request.user, ip=client_ip(request)
                    )
                except ServicesError as exc:
                    problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.errors.items())
                    form.add_error("file", f"{exc.detail or exc.error.title} {problems}")
                else:
                    self.message_user(
                        request,
                        _("导入完成：新增 %(c)s，更新 %(u)s，未变 %(n)s")
                        % {
                            "c": len(report.created),
                            "u": len(report.updated),
                            "n": len(report.unchanged),
                        },
                        level=messages.SUCCESS,
                    )
                    return redirect("admin:services_service_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("导入服务目录"),
            "form": form,
        }
        return TemplateResponse(request, "admin/services/service/import.html", context)


# --- Applications -----------------------------------------------------------------------


@admin.register(Holiday)
class HolidayAdmin(AuditedModelAdmin):
    audited_values = ("date", "name", "is_workday")
    list_display = ("date", "name", "is_workday")
    list_filter = ("is_workday",)
    date_hierarchy = "date"


class DeadlineFilter(admin.SimpleListFilter):
    title = _("办结期限")
    parameter_name = "deadline"

    def lookups(self, request, model_admin):
        return [
            ("overdue", _("已超期")),
            ("due_soon", _("3 个工作日内到期")),
            ("on_track", _("期限内")),
        ]

    def queryset(self, request, queryset):
        if self.value() in ("overdue", "due_soon", "on_track"):
            return selectors.applications_in_deadline_state(queryset, str(self.value()))
        return queryset


class EndpointStateFilter(admin.SimpleListFilter):
    """The endpoint's state as its page and the dashboard name it (a deleted
    endpoint is inactive too, and may keep the pause it had)."""

    title = _("状态")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return list(ENDPOINT_STATES.items())

    def queryset(self, request, queryset):
        live = queryset.filter(deleted_at=None)
        match self.value():
            case "active":
                return live.filter(is_active=True, held_at=None, paused_at=None)
            case "held":
                return live.filter(held_at__isnull=False)
            case "paused":
                return live.filter(is_active=True, held_at=None, paused_at__isnull=False)
            case "disabled":
                return live.filter(is_active=False, held_at=None)
            case "deleted":
                return queryset.filter(deleted_at__isnull=False)
        return queryset


class TimelineInline(admin.TabularInline):
    model = TimelineEntry
    extra = 0
    can_delete = False
    fields = ("at", "status", "actor", "actor_label", "note_masked")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    # Free text (a cancel reason, a department's note) may carry a phone or
    # an ID number: masked, as refund reasons are.
    @admin.display(description=_("说明"))
    def note_masked(self, entry: TimelineEntry) -> str:
        return masking.mask_text(entry.note)


@admin.register(Application)
class ApplicationAdmin(ReadOnlyAdmin):
    """Applications change only through their API (citizen, department,
    payments); operators watch them here, deadlines first."""

    list_display = (
        "number",
        "service",
        "department",
        "status",
        "applicant_masked",
        "created_at",
        "due_date",
        "deadline_state",
    )
    list_filter = (
        DeadlineFilter,
        "status",
        "department",
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("=number", "=department_reference")
    list_select_related = ("service", "department", "applicant")
    # A million applications: no count of the whole table, and dates picked
    # from a list rather than a date hierarchy (which reads every row shown).
    show_full_result_count = False
    fields = (
        "number",
        "service",
        "department",
        "status",
        "applicant_masked",
        "fee_fen",
        "department_reference",
        "deliveries_display",
        "created_at",
        "accepted_at",
        "due_date",
        "paused_at",
        "closed_at",
        "rating_score",
        "rating_comment_masked",
    )
    readonly_fields = fields
    inlines = [TimelineInline]

    @admin.display(description=_("评价内容"))
    def rating_comment_masked(self, application: Application) -> str:
        return masking.mask_text(application.rating_comment)

    @admin.display(description=_("申请人"))
    def applicant_masked(self, application: Application) -> str:
        return str(application.applicant)

    def get_fields(self, request: HttpRequest, obj: Application | None = None):
        # Where a department's events go (its endpoints' URLs) is for those
        # who may read deliveries, not for everyone who reads applications.
        fields = super().get_fields(request, obj)
        if request.user.has_perm("services.view_delivery"):
            return fields
        return [name for name in fields if name != "deliveries_display"]

    @admin.display(description=_("投递记录"))
    def deliveries_display(self, application: Application) -> str:
        """Each event sent about it, where, and how it went: one click from a replay."""
        sent = selectors.deliveries_of_application(application)
        if not sent:
            return "-"
        statuses = dict(DeliveryStatus.choices)
        return format_html_join(
            mark_safe("<br>"),
            '<a href="{}">{} → {}：{}</a>',
            (
                (
                    reverse("admin:services_delivery_change", args=[delivery.pk]),
                    delivery.event.type,
                    delivery.endpoint.url_shown,
                    statuses.get(delivery.status, delivery.status),
                )
                for delivery in sent
            ),
        )

    @admin.display(description=_("期限"))
    def deadline_state(self, application: Application) -> str:
        labels = {"overdue": _("已超期"), "due_soon": _("即将到期"), "on_track": _("期限内")}
        return str(labels.get(application.deadline, "-"))  # type: ignore[attr-defined]  # annotated by get_queryset

    def get_queryset(self, request):
        return selectors.applications_with_deadline_state(super().get_queryset(request))

    def get_ordering(self, request):
        # Deadline views: the most overdue first, along the (status, due_date) index.
        if request.GET.get(DeadlineFilter.parameter_name):
            return ["due_date", "number"]
        return super().get_ordering(request)


# --- Routing ------------------------------------------------------------------------------


@admin.register(Endpoint)
class EndpointAdmin(DetailActions, admin.ModelAdmin):
    """Endpoints change through their department's API; operators watch
    them and, with ``services.change_endpoint``, hold, resume or ping one
    (services.routing.endpoints, audited with the operator's address). The
    department's own switch stays the department's."""

    list_display = (
        "url_display",
        "department",
        "state_display",
        "consecutive_failures",
        "last_success_at",
        "last_failure_at",
    )
    list_filter = (EndpointStateFilter, "department")
    # The whole URL only: a part of it would find a query value shown masked.
    search_fields = ("=url", "department__code", "description")
    list_select_related = ("department",)
    fields = (
        "department",
        "url_display",
        "description",
        "events",
        "is_active",
        "disabled_reason",
        "held_at",
        "hold_reason",
        "paused_at",
        "pause_reason",
        "consecutive_failures",
        "last_success_at",
        "last_failure_at",
        "last_probe_at",
        "created_at",
    )
    readonly_fields = fields
    actions = ["hold", "resume", "ping"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # departments register endpoints through their API (the secret goes to them)

    def has_change_permission(self, request: HttpRequest, obj: Endpoint | None = None) -> bool:
        return False  # a record to read; what may change goes through the buttons and actions

    def has_delete_permission(self, request: HttpRequest, obj: Endpoint | None = None) -> bool:
        return False

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("services.change_endpoint")

    @admin.display(description=_("回调地址"), ordering="url")
    def url_display(self, endpoint: Endpoint) -> str:
        return endpoint.url_shown

    @admin.display(description=_("状态"))
    def state_display(self, endpoint: Endpoint) -> str:
        return str(ENDPOINT_STATES.get(endpoint.state, endpoint.state))

    def detail_actions(self, request: HttpRequest, obj: Endpoint) -> list[tuple[str, str]]:
        if obj.deleted_at is not None or not self.has_manage_permission(request):
            return []
        offered = [("ping", str(_("发送测试事件")))]
        if obj.held_at is None:
            offered.insert(0, ("hold", str(_("暂停投递"))))
        if obj.held_at is not None or obj.paused_at is not None:
            offered.insert(0, ("resume", str(_("恢复投递"))))
        return offered

    def detail_action(self, request: StaffRequest, obj: Endpoint, slug: str) -> str:
        ip = client_ip(request)
        if slug == "hold":
            endpoints.endpoint_hold(endpoint=obj, actor=request.user, reason=HOLD_REASON, ip=ip)
            return str(_("已暂停投递：事件保留，恢复后补发；部门无法自行解除"))
        if slug == "resume":
            endpoint = endpoints.endpoint_resume(endpoint=obj, actor=request.user, ip=ip)
            if not endpoint.is_active:
                return str(_("已解除暂停；该地址已被部门停用，部门重新启用后补发"))
            return str(_("已恢复投递，积压的事件开始补发"))
        endpoints.endpoint_ping(endpoint=obj, actor=request.user, ip=ip)
        return str(_("已发送测试事件（ping）"))

    @admin.action(description=_("暂停投递（运营暂停，部门无法自行解除）"), permissions=["manage"])
    def hold(self, request: StaffRequest, queryset: QuerySet[Endpoint]) -> None:
        ip = client_ip(request)
        for endpoint in queryset.filter(deleted_at=None, held_at=None):
            endpoints.endpoint_hold(
                endpoint=endpoint, actor=request.user, reason=HOLD_REASON, ip=ip
            )
        self.message_user(request, _("已暂停"))

    @admin.action(description=_("恢复投递（解除运营暂停和熔断）"), permissions=["manage"])
    def resume(self, request: StaffRequest, queryset: QuerySet[Endpoint]) -> None:
        ip = client_ip(request)
        for endpoint in queryset.filter(deleted_at=None):
            endpoints.endpoint_resume(endpoint=endpoint, actor=request.user, ip=ip)
        self.message_user(request, _("已恢复"))

    @admin.action(description=_("发送测试事件（ping）"), permissions=["manage"])
    def ping(self, request: StaffRequest, queryset: QuerySet[Endpoint]) -> None:
        ip = client_ip(request)
        for endpoint in queryset.filter(deleted_at=None):
            endpoints.endpoint_ping(endpoint=endpoint, actor=request.user, ip=ip)
        self.message_user(request, _("已发送"))


# What the department reads as the hold's reason (the operator is in the audit trail).
HOLD_REASON = "held by the platform's operators; they resume it"

ENDPOINT_STATES = {
    "active": _("正常"),
    "held": _("运营暂停"),
    "paused": _("熔断暂停"),
    "disabled": _("已停用"),
    "deleted": _("已删除"),
}


def _event_types() -> list[tuple[str, str]]:
    return [(kind, kind) for kind in (events.PING, *events.SUBSCRIBABLE)]


@admin.register(OutboxEvent)
class OutboxEventAdmin(BigTableList, ReadOnlyAdmin):
    list_display = ("created_at", "type", "department", "application", "handled_at")
    list_filter = (
        ("type", fixed_choices(_event_types)),
        "department",
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("=id", "application__number")
    list_select_related = ("department", "application")
    exclude = ("data",)


# A department's answer may echo the application back (the applicant's
# name, ID number, phone): shown masked, as every personal value here.
_ATTEMPT_FIELDS: tuple[str, ...] = tuple(
    "response_masked" if name == "response_body" else str(name)
    for name in selectors.DELIVERY_ATTEMPT_FIELDS
)


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = _ATTEMPT_FIELDS
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description=_("响应（截断）"))
    def response_masked(self, attempt: DeliveryAttempt) -> str:
        return masking.mask_text(attempt.response_body)


@admin.register(Delivery)
class DeliveryAdmin(BigTableList, DetailActions, ReadOnlyAdmin):
    """A record of what was sent and every try; with ``services.change_delivery``
    an operator replays one (services.routing.deliveries, audited)."""

    list_display = (
        "created_at",
        "event_type",
        "endpoint",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
    )
    list_filter = (
        "status",
        ("event__type", fixed_choices(_event_types)),
        # The delivery's own department: along its index, not through the
        # endpoints (which read every delivery of the department).
        "department",
    )
    # The dashboard's week of deliveries, and its links to one endpoint's.
    lookups_allowed = ("created_at", "endpoint")
    search_fields = ("=event__id", "=endpoint__url", "event__application__number")
    list_select_related = ("event", "endpoint__department")
    fields = ("application_link", *selectors.DELIVERY_FIELDS)
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["replay"]

    @admin.display(description=_("办件"))
    def application_link(self, delivery: Delivery) -> str:
        application_id = delivery.event.application_id
        if application_id is None:
            return "-"  # a ping, or an event of no application
        number = (
            Application.objects.filter(pk=application_id).values_list("number", flat=True).first()
        )
        url = reverse("admin:services_application_change", args=[application_id])
        return format_html('<a href="{}">{}</a>', url, number)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("services.change_delivery")

    @admin.display(description=_("事件类型"))
    def event_type(self, delivery: Delivery) -> str:
        return delivery.event.type

    def detail_actions(self, request: HttpRequest, obj: Delivery) -> list[tuple[str, str]]:
        if not self.has_replay_permission(request) or obj.status == DeliveryStatus.CANCELLED:
            return []
        return [("replay", str(_("重新投递")))]

    def detail_action(self, request: StaffRequest, obj: Delivery, slug: str) -> str:
        deliveries.delivery_replay(delivery=obj, actor=request.user, ip=client_ip(request))
        return str(_("已重新投递，稍后刷新查看结果"))

    @admin.action(description=_("重新投递（死信重放）"), permissions=["replay"])
    def replay(self, request: StaffRequest, queryset: QuerySet[Delivery]) -> None:
        replayed, refused = 0, []
        ip = client_ip(request)
        for delivery in queryset.select_related("event"):
            try:
                deliveries.delivery_replay(delivery=delivery, actor=request.user, ip=ip)
                replayed += 1
            except ServicesError as exc:
                refused.append(f"{delivery.event.type} #{str(delivery.pk)[-8:]}: {exc.code}")
        self.message_user(request, _("已重新投递 %(n)s 条") % {"n": replayed})
        if refused:
            self.message_user(
                request,
                _("%(n)s 条未重新投递（正在投递或已取消）：%(which)s")
                % {"n": len(refused), "which": "；".join(refused[:20])},
                level=messages.WARNING,
            )


# --- The dashboard's panels ------------------------------------------------------------------


def _applications_panel(periods: dashboard.Periods) -> dashboard.Panel:
    url = reverse("admin:services_application_changelist")
    week = {"created_at__gte": dashboard.stamp(periods.week_start)}
    today = {
        "created_at__gte": dashboard.stamp(periods.today_start),
        "created_at__lt": dashboard.stamp(periods.tomorrow_start),
    }
    rows = {
        row["status"]: row
        for row in selectors.applications_counted(
            since=periods.week_start, today_start=periods.today_start, by=("status",)
        )
    }
    deadlines = periods.once("services.deadlines", selectors.deadlines_by_department)
    overdue = sum(row["overdue"] for row in deadlines)
    due_soon = sum(row["due_soon"] for row in deadlines)
    bars = [
        dashboard.Bar(
            str(label),
            rows.get(status, {}).get("week", 0),
            url=dashboard.changelist(url, status__exact=status, **week),
            part=rows.get(status, {}).get("today", 0),
            title=str(
                _("%(status)s：本周 %(week)s，今日 %(today)s")
                % {
                    "status": label,
                    "week": rows.get(status, {}).get("week", 0),
                    "today": rows.get(status, {}).get("today", 0),
                }
            ),
        )
        for status, label in ApplicationStatus.choices
    ]
    return dashboard.Panel(
        title=str(_("办件")),
        figures=[
            dashboard.Figure(
                str(_("今日新办件")),
                str(sum(r["today"] for r in rows.values())),
                dashboard.changelist(url, **today),
            ),
            dashboard.Figure(
                str(_("本周新办件")),
                str(sum(r["week"] for r in rows.values())),
                dashboard.changelist(url, **week),
            ),
            dashboard.Figure(
                str(_("已超期")),
                str(overdue),
                dashboard.changelist(url, deadline="overdue"),
                tone="bad" if overdue else "",
            ),
            dashboard.Figure(
                str(_("3 个工作日内到期")),
                str(due_soon),
                dashboard.changelist(url, deadline="due_soon"),
                tone="warn" if due_soon else "",
            ),
        ],
        chart=dashboard.bars_horizontal(bars),
        chart_caption=str(_("本周办件按状态（深色为今日）")),
    )


def _departments_panel(periods: dashboard.Periods) -> dashboard.Panel:
    url = reverse("admin:services_application_changelist")
    week = {"created_at__gte": dashboard.stamp(periods.week_start)}
    rows = selectors.applications_counted(
        since=periods.week_start,
        today_start=periods.today_start,
        by=("department_id", "department__name"),
    )
    rows.sort(key=lambda row: (-row["week"], row["department__name"]))
    bars = [
        dashboard.Bar(
            row["department__name"],
            row["week"],
            url=dashboard.changelist(url, department__id__exact=row["department_id"], **week),
            part=row["today"],
            title=str(
                _("%(name)s：本周 %(week)s，今日 %(today)s")
                % {"name": row["department__name"], "week": row["week"], "today": row["today"]}
            ),
        )
        for row in rows[:12]
    ]
    deadline_rows = [
        [
            dashboard.Cell(row["department__name"]),
            dashboard.Cell(
                str(row["overdue"]),
                dashboard.changelist(
                    url, deadline="overdue", department__id__exact=row["department_id"]
                ),
                tone="bad" if row["overdue"] else "",
            ),
            dashboard.Cell(
                str(row["due_soon"]),
                dashboard.changelist(
                    url, deadline="due_soon", department__id__exact=row["department_id"]
                ),
                tone="warn" if row["due_soon"] else "",
            ),
        ]
        for row in periods.once("services.deadlines", selectors.deadlines_by_department)[:12]
    ]
    return dashboard.Panel(
        title=str(_("各部门办件")),
        chart=dashboard.bars_horizontal(bars, label_width=150),
        chart_caption=str(_("本周办件按部门（深色为今日）")),
        table=dashboard.Table(
            headers=[str(_("部门")), str(_("已超期")), str(_("即将到期"))],
            rows=deadline_rows,
            empty=str(_("没有超期或即将到期的办件")),
        ),
    )


def _deliveries_panel(periods: dashboard.Periods) -> dashboard.Panel:
    deliveries_url = reverse("admin:services_delivery_changelist")
    endpoints_url = reverse("admin:services_endpoint_changelist")
    counts = selectors.deliveries_by_endpoint(since=periods.week_start)
    watched = list(selectors.endpoints_watched())
    zero = {"succeeded": 0, "failed": 0, "dead_letters": 0}

    def rate(row: dict[str, int]) -> float | None:
        finished = row["succeeded"] + row["failed"]
        return row["succeeded"] / finished if finished else None

    def trouble(endpoint: Endpoint) -> tuple[int, int, float]:
        """Held, paused and disabled first, then the most dead letters, then the lowest rate."""
        row = counts.get(endpoint.pk, zero)
        share = rate(row)
        return (
            0 if endpoint.state != "active" else 1,
            -row["dead_letters"],
            2.0 if share is None else share,
        )

    total = {name: sum(row[name] for row in counts.values()) for name in zero}
    overall = rate(total)
    paused = [e for e in watched if e.state == "paused"]
    held = [e for e in watched if e.state == "held"]
    disabled = [e for e in watched if e.state == "disabled"]
    shown = sorted((e for e in watched if e.state != "active" or e.pk in counts), key=trouble)[:10]
    rows = []
    for endpoint in shown:
        row = counts.get(endpoint.pk, zero)
        change = reverse("admin:services_endpoint_change", args=[endpoint.pk])
        rows.append(
            [
                dashboard.Cell(f"{endpoint.department.name} · {endpoint.url_shown}", change),
                dashboard.Cell(
                    str(ENDPOINT_STATES[endpoint.state]),
                    tone="" if endpoint.state == "active" else "bad",
                ),
                dashboard.Cell(dashboard.percent(rate(row)), chart=dashboard.rate_bar(rate(row))),
                dashboard.Cell(
                    str(row["dead_letters"]),
                    dashboard.changelist(
                        deliveries_url, endpoint__id__exact=endpoint.pk, status__exact="failed"
                    ),
                    tone="bad" if row["dead_letters"] else "",
                ),
            ]
        )
    return dashboard.Panel(
        title=str(_("部门投递")),
        figures=[
            dashboard.Figure(
                str(_("本周送达率")),
                dashboard.percent(overall),
                dashboard.changelist(
                    deliveries_url, created_at__gte=dashboard.stamp(periods.week_start)
                ),
                tone="" if overall is None or overall >= 0.99 else "warn",
                note=str(
                    _("送达 %(ok)s，死信 %(dead)s")
                    % {"ok": total["succeeded"], "dead": total["failed"]}
                ),
            ),
            dashboard.Figure(
                str(_("待重放死信")),
                str(total["dead_letters"]),
                dashboard.changelist(deliveries_url, status__exact="failed"),
                tone="bad" if total["dead_letters"] else "",
            ),
            dashboard.Figure(
                str(_("熔断暂停的地址")),
                str(len(paused)),
                dashboard.changelist(endpoints_url, state="paused"),
                tone="bad" if paused else "",
            ),
            dashboard.Figure(
                str(_("运营暂停的地址")),
                str(len(held)),
                dashboard.changelist(endpoints_url, state="held"),
                tone="warn" if held else "",
            ),
            dashboard.Figure(
                str(_("已停用的地址")),
                str(len(disabled)),
                dashboard.changelist(endpoints_url, state="disabled"),
                tone="warn" if disabled else "",
            ),
        ],
        table=dashboard.Table(
            headers=[str(_("回调地址")), str(_("状态")), str(_("本周送达率")), str(_("死信"))],
            rows=rows,
            empty=str(_("本周没有投递")),
        ),
        wide=True,
    )


dashboard.panel_register(
    "services.applications",
    order=10,
    permissions=["services.view_application"],
    build=_applications_panel,
)
dashboard.panel_register(
    "services.departments",
    order=20,
    permissions=["services.view_application"],
    build=_departments_panel,
)
dashboard.panel_register(
    "services.deliveries",
    order=30,
    permissions=["services.view_delivery", "services.view_endpoint"],
    build=_deliveries_panel,
)

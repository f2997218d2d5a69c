"""Operators' view of signing keys, venue codes, scanner profiles and scans."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from accounts import dashboard
from accounts.admin import (
    AuditedModelAdmin,
    BigTableList,
    DetailActions,
    ReadOnlyAdmin,
    StaffRequest,
)
from config.api import client_ip
from qr import keys, selectors, venue_codes
from qr.models import ScanEvent, ScannerProfile, SigningKey, VenueCode
from qr.recorders import ScanStateUnavailable, get_recorder

STATUS_LABELS = {
    "upcoming": _("已发布，待启用"),
    "active": _("签发中"),
    "retiring": _("已停止签发，仍在公布"),
    "withdrawn": _("已撤下"),
}


@admin.register(SigningKey)
class SigningKeyAdmin(ReadOnlyAdmin):
    list_display = ("kid", "status", "activates_at", "created_at", "withdrawn_at")
    fields = ("kid", "status", "public_key", "created_at", "activates_at", "withdrawn_at")
    readonly_fields = fields
    change_list_template = "admin/qr/signingkey/change_list.html"

    @admin.display(description=_("状态"))
    def status(self, key: SigningKey) -> str:
        return str(STATUS_LABELS[key.key_status])  # type: ignore[attr-defined]  # annotated by get_queryset

    def get_queryset(self, request: HttpRequest) -> QuerySet[SigningKey]:
        return selectors.signing_keys_with_status(super().get_queryset(request))

    def get_urls(self):
        return [
            path(
                "rotate/",
                self.admin_site.admin_view(self.rotate_view),
                name="qr_signingkey_rotate",
            ),
            *super().get_urls(),
        ]

    def rotate_view(self, request: HttpRequest) -> HttpResponse:
        return require_POST(self._rotate)(request)

    def _rotate(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_superuser:
            raise PermissionDenied
        immediately = request.POST.get("immediately") == "1"
        key = keys.signing_key_rotate(
            immediately=immediately, actor=request.user, ip=client_ip(request)
        )
        keys.signing_keys_prune()
        self.message_user(
            request,
            _("新密钥 %(kid)s 已发布，将于 %(at)s 开始签发")
            % {
                "kid": key.kid,
                "at": timezone.localtime(key.activates_at).isoformat(timespec="seconds"),
            },
            level=messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:qr_signingkey_changelist"))


@admin.register(VenueCode)
class VenueCodeAdmin(DetailActions, admin.ModelAdmin):
    """Venue codes are made by departments through their API; operators
    read them and, with ``qr.change_venuecode``, deactivate one (audited)."""

    list_display = (
        "label",
        "service",
        "department",
        "location",
        "scan_count_display",
        "is_active_display",
        "created_at",
    )
    list_filter = (("deactivated_at", admin.EmptyFieldListFilter), "department")
    search_fields = ("label", "location", "service__code", "service__name", "=jti")
    list_select_related = ("service", "department")
    fields = (
        "code_id",
        "department",
        "service",
        "label",
        "location",
        "kid",
        "code",
        "created_at",
        "deactivated_at",
    )
    readonly_fields = fields
    actions = ["deactivate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[VenueCode]:
        return selectors.venue_codes_with_scan_counts(super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # departments create codes through their API

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a record to read; deactivating goes through the button and action

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("qr.change_venuecode")

    @admin.display(description=_("编号"))
    def code_id(self, venue: VenueCode) -> str:
        return str(venue.pk)

    def detail_actions(self, request: HttpRequest, obj: VenueCode) -> list[tuple[str, str]]:
        if obj.is_active and self.has_manage_permission(request):
            return [("deactivate", str(_("停用场所码")))]
        return []

    def detail_action(self, request: StaffRequest, obj: VenueCode, slug: str) -> str:
        venue_codes.venue_code_deactivate(venue=obj, actor=request.user, ip=client_ip(request))
        return str(_("已停用，扫码将提示此码已作废"))

    @admin.display(description=_("扫码次数"), ordering="scan_count")
    def scan_count_display(self, venue: VenueCode) -> int:
        return venue.scan_count  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description=_("有效"), boolean=True)
    def is_active_display(self, venue: VenueCode) -> bool:
        return venue.is_active

    @admin.action(description=_("停用所选场所码"), permissions=["manage"])
    def deactivate(self, request: StaffRequest, queryset: QuerySet[VenueCode]) -> None:
        count = 0
        for venue in queryset.filter(deactivated_at__isnull=True):
            venue_codes.venue_code_deactivate(
                venue=venue, actor=request.user, ip=client_ip(request)
            )
            count += 1
        self.message_user(request, _("已停用 %(n)s 个场所码") % {"n": count})


@admin.register(ScannerProfile)
class ScannerProfileAdmin(AuditedModelAdmin):
    audited_values = ("place", "disclosure")
    list_display = ("api_key", "place", "disclosure", "updated_at")
    list_filter = ("disclosure",)
    search_fields = ("place", "api_key__prefix", "api_key__name", "api_key__department__code")
    autocomplete_fields = ("api_key",)
    list_select_related = ("api_key__department",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The key is the profile's primary key: another one on this page
        # would save a second profile, not move this one.
        return ("api_key",) if obj is not None else ()


@admin.register(ScanEvent)
class ScanEventAdmin(BigTableList, ReadOnlyAdmin):
    list_display = (
        "scanned_at",
        "source",
        "department",
        "place",
        "kind",
        "valid",
        "reason",
        "subject_masked",
    )
    list_filter = (
        "source",
        "kind",
        "valid",
        "reason",
        "department",
        ("scanned_at", admin.DateFieldListFilter),
    )
    search_fields = ("=subject", "=jti", "=terminal_event_id", "place")
    search_help_text = _("完整匿名主体标识、码标识或终端事件号")
    list_select_related = ("department",)
    exclude = ("subject",)
    readonly_fields = ("subject_masked",)

    @admin.display(description=_("匿名主体标识"))
    def subject_masked(self, event: ScanEvent) -> str:
        return f"{event.subject[:6]}…" if event.subject else "-"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        try:
            pending = get_recorder().pending()
        except ScanStateUnavailable:
            pending = None
        extra_context = {**(extra_context or {}), "title": _("扫码记录")}
        if pending:
            self.message_user(
                request,
                _("另有 %(n)s 条扫码记录在缓冲区中，几秒内入库") % {"n": pending},
                level=messages.INFO,
            )
        elif pending is None:
            self.message_user(request, _("扫码缓冲区暂不可达"), level=messages.WARNING)
        return super().changelist_view(request, extra_context)


# --- The dashboard's panel ----------------------------------------------------------------------


def _scans_panel(periods: dashboard.Periods) -> dashboard.Panel:
    url = reverse("admin:qr_scanevent_changelist")
    last_hour = periods.now.replace(minute=0, second=0, microsecond=0)
    hours = [last_hour - dt.timedelta(hours=n) for n in range(23, -1, -1)]
    counted = {
        hour.astimezone(dashboard.CHINA): row
        for hour, row in selectors.scans_per_hour(since=hours[0], tzinfo=dashboard.CHINA).items()
    }
    zero = {"total": 0, "valid": 0}
    bars = [
        dashboard.Bar(
            f"{hour:%H}",
            counted.get(hour, zero)["total"],
            url=dashboard.changelist(
                url,
                scanned_at__gte=dashboard.stamp(hour),
                scanned_at__lt=dashboard.stamp(hour + dt.timedelta(hours=1)),
            ),
            title=str(
                _("%(from)s–%(to)s 扫码 %(n)s 次，无效 %(bad)s 次")
                % {
                    "from": f"{hour:%m-%d %H:00}",
                    "to": f"{hour + dt.timedelta(hours=1):%H:00}",
                    "n": counted.get(hour, zero)["total"],
                    "bad": counted.get(hour, zero)["total"] - counted.get(hour, zero)["valid"],
                }
            ),
        )
        for hour in hours
    ]
    total = sum(row["total"] for row in counted.values())
    invalid = total - sum(row["valid"] for row in counted.values())
    since = dashboard.stamp(hours[0])
    return dashboard.Panel(
        title=str(_("星码扫码")),
        figures=[
            dashboard.Figure(
                str(_("近 24 小时扫码")),
                str(total),
                dashboard.changelist(url, scanned_at__gte=since),
            ),
            dashboard.Figure(
                str(_("其中无效")),
                str(invalid),
                dashboard.changelist(url, scanned_at__gte=since, valid__exact="0"),
                tone="warn" if invalid else "",
                note=dashboard.percent(invalid / total if total else None),
            ),
        ],
        chart=dashboard.bars_vertical(bars, every=3),
        chart_caption=str(_("每小时扫码次数（北京时间）")),
    )


dashboard.panel_register(
    "qr.scans", order=50, permissions=["qr.view_scanevent"], build=_scans_panel
)

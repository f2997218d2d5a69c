"""Operators' view of payments: orders (read-only, with refunds asked for
from here), the ledger, refunds, the notify log, reconciliation reports and
their mismatches, and the daily settlement (资金日结).

Nothing here changes money by editing a row: a refund goes through
:func:`payments.orders.refund_request` and a mismatch is closed through
:func:`payments.reconciliation.mismatch_resolve`, both audited; every page
is otherwise read-only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _

from accounts import dashboard
from accounts.admin import BigTableList, ReadOnlyAdmin, StaffRequest, fixed_choices
from accounts.models import Department
from config import masking
from config.api import client_ip
from payments import orders, reconciliation, selectors
from payments.errors import PaymentsError
from payments.models import (
    Channel,
    EntryKind,
    LedgerEntry,
    NotifyLog,
    PaymentOrder,
    ReconciliationMismatch,
    ReconciliationReport,
    Refund,
    SandboxRefund,
    SandboxTrade,
)

FORM_TEMPLATE = "admin/payments/form_page.html"


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Orders ------------------------------------------------------------------------------------


class LedgerEntryInline(ReadOnlyInline):
    model = LedgerEntry
    fields = ("at", "kind", "amount_yuan", "channel", "reference", "created_at")
    readonly_fields = fields
    ordering = ("at", "id")

    @admin.display(description=_("金额（元）"))
    def amount_yuan(self, entry: LedgerEntry) -> str:
        return selectors.yuan(entry.amount_fen)


class RefundInline(ReadOnlyInline):
    model = Refund
    fields = (
        "refund_no",
        "amount_yuan",
        "status",
        "reason_masked",
        "requested_by",
        "created_at",
        "succeeded_at",
        "failure_reason",
    )
    readonly_fields = fields
    show_change_link = True

    @admin.display(description=_("金额（元）"))
    def amount_yuan(self, refund: Refund) -> str:
        return selectors.yuan(refund.amount_fen)

    @admin.display(description=_("退款原因"))
    def reason_masked(self, refund: Refund) -> str:
        return masking.mask_text(refund.reason)


class RefundForm(forms.Form):
    amount_fen = forms.IntegerField(
        label=_("退款金额（分）"), min_value=1, help_text=_("整数，单位为分；默认为可退余额")
    )
    reason = forms.CharField(label=_("退款原因"), max_length=200)
    # What was refunded or in flight when the form was shown: the same
    # form sent twice (a double click, a resubmitted page) refunds once.
    reserved_fen = forms.IntegerField(min_value=0, widget=forms.HiddenInput)


# The calendar's first and last days have no bounds in China time (the first
# starts before year 1 in UTC, the last has no day after).
CALENDAR = [
    MinValueValidator(dt.date.min + dt.timedelta(days=1)),
    MaxValueValidator(dt.date.max - dt.timedelta(days=1)),
]


class SettlementForm(forms.Form):
    date_from = forms.DateField(
        label=_("起始日期"), widget=forms.DateInput(attrs={"type": "date"}), validators=CALENDAR
    )
    date_to = forms.DateField(
        label=_("截止日期"), widget=forms.DateInput(attrs={"type": "date"}), validators=CALENDAR
    )
    department = forms.ModelChoiceField(
        label=_("收款部门"),
        queryset=Department.objects.order_by("code"),
        required=False,
        empty_label=_("全部部门"),
    )
    channel = forms.ChoiceField(
        label=_("支付渠道"), choices=[("", _("全部渠道")), *Channel.choices], required=False
    )

    MAX_DAYS = 366

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end:
            if start > end:
                raise ValidationError(_("起始日期不能晚于截止日期"))
            if (end - start).days >= self.MAX_DAYS:
                raise ValidationError(_("一次最多查询 %(n)s 天") % {"n": self.MAX_DAYS})
        return data


class OwedFilter(admin.SimpleListFilter):
    """Orders a refund the platform asked for by itself failed on, with
    money not yet on its way back (``selectors.orders_owed_back``)."""

    title = _("自动退款")
    parameter_name = "owed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("退款失败、尚未退回"))]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[PaymentOrder]
    ) -> QuerySet[PaymentOrder]:
        if self.value() == "yes":
            return queryset.filter(pk__in=selectors.orders_owed_back().values("pk"))
        return queryset


@admin.register(PaymentOrder)
class PaymentOrderAdmin(BigTableList, ReadOnlyAdmin):
    """Orders change only through payments.orders; operators watch them
    here and, with ``payments.add_refund``, ask for a refund."""

    # What fits a 1366-px screen; the department and what was received are
    # on the order's page (and the department is a filter).
    list_display = (
        "order_no",
        "application_number",
        "service",
        "channel",
        "status",
        "amount_yuan",
        "refunded_yuan",
        "created_at",
    )
    list_filter = (
        "status",
        "channel",
        "department",
        OwedFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("=order_no", "=provider_transaction_id", "=application__number")
    search_help_text = _("订单号、渠道交易号或办件编号")
    list_select_related = ("application", "department", "service")
    fields = (
        "order_no",
        "application",
        "payer",
        "department",
        "service",
        "description",
        "channel",
        "status",
        "amount_yuan",
        "paid_yuan",
        "refunded_yuan",
        "currency",
        "provider_transaction_id",
        "created_at",
        "expires_at",
        "paid_at",
        "closed_at",
        "last_queried_at",
        "updated_at",
    )
    readonly_fields = fields
    inlines = [LedgerEntryInline, RefundInline]
    actions = ["refund_selected"]
    change_form_template = "admin/payments/paymentorder/change_form.html"
    change_list_template = "admin/payments/paymentorder/change_list.html"

    @admin.display(description=_("办件编号"), ordering="application__number")
    def application_number(self, order: PaymentOrder) -> str:
        return order.application.number

    @admin.display(description=_("金额（元）"), ordering="amount_fen")
    def amount_yuan(self, order: PaymentOrder) -> str:
        return selectors.yuan(order.amount_fen)

    @admin.display(description=_("已收（元）"), ordering="paid_fen")
    def paid_yuan(self, order: PaymentOrder) -> str:
        return selectors.yuan(order.paid_fen)

    @admin.display(description=_("已退（元）"), ordering="refunded_fen")
    def refunded_yuan(self, order: PaymentOrder) -> str:
        return selectors.yuan(order.refunded_fen)

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request) and request.user.has_perm("payments.add_refund")

    def get_urls(self) -> list[Any]:
        return [
            path(
                "settlement/",
                self.admin_site.admin_view(self.settlement_view),
                name="payments_paymentorder_settlement",
            ),
            path(
                "<path:object_id>/refund/",
                self.admin_site.admin_view(self.refund_view),
                name="payments_paymentorder_refund",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        order = self.get_object(request, object_id)
        can_refund = (
            order is not None
            and order.status in orders.REFUNDABLE
            and self.has_refund_permission(request)
        )
        extra_context = {
            **(extra_context or {}),
            "refund_url": reverse("admin:payments_paymentorder_refund", args=[object_id])
            if can_refund
            else None,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The settlement reads the ledger: offered to those who may read it.
        extra_context = {
            **(extra_context or {}),
            "settlement_url": reverse("admin:payments_paymentorder_settlement")
            if request.user.has_perm("payments.view_ledgerentry")
            else None,
        }
        return super().changelist_view(request, extra_context)

    @admin.action(description=_("为所选订单发起退款"), permissions=["refund"])
    def refund_selected(
        self, request: StaffRequest, queryset: QuerySet[PaymentOrder]
    ) -> HttpResponse | None:
        chosen = list(queryset[:2])
        if len(chosen) != 1:
            self.message_user(request, _("请只选择一个订单发起退款"), level=messages.WARNING)
            return None
        return HttpResponseRedirect(
            reverse("admin:payments_paymentorder_refund", args=[chosen[0].pk])
        )

    def refund_view(self, request: StaffRequest, object_id: str) -> HttpResponse:
        if not self.has_refund_permission(request):
            raise PermissionDenied
        order = self.get_object(request, object_id)
        if order is None:
            raise Http404
        remainder = max(order.paid_fen - selectors.refunds_reserved_fen(order), 0)
        form = RefundForm(
            request.POST or None,
            initial={
                "amount_fen": remainder or None,
                "reserved_fen": order.paid_fen - remainder,
            },
        )
        refused = False
        change_url = reverse("admin:payments_paymentorder_change", args=[order.pk])
        if request.method == "POST" and form.is_valid():
            try:
                refund = orders.refund_request(
                    order=order,
                    amount_fen=form.cleaned_data["amount_fen"],
                    reason=form.cleaned_data["reason"],
                    actor=request.user,
                    ip=client_ip(request),
                    seen_reserved_fen=form.cleaned_data["reserved_fen"],
                )
            except PaymentsError as exc:
                refused = True
                self.message_user(
                    request,
                    _("退款未受理：%(why)s（%(code)s）")
                    % {"why": exc.detail or exc.error.title, "code": exc.code},
                    level=messages.ERROR,
                )
            else:
                self.message_user(
                    request,
                    _("已发起退款 %(no)s，%(amount)s 元，渠道受理后入账")
                    % {"no": refund.refund_no, "amount": selectors.yuan(refund.amount_fen)},
                    level=messages.SUCCESS,
                )
                return HttpResponseRedirect(change_url)
        elif request.method == "POST" and "reserved_fen" in form.errors:
            # Not the form as it was shown (its guard is missing or
            # altered): shown afresh, as a refused one is.
            refused = True
        if refused:
            # Shown again as things stand now (another refund may have come
            # meanwhile), the amount left empty: sending it again is the
            # operator's deliberate choice, never one more click of the same
            # form (a double click's second request lands here).
            order.refresh_from_db()
            remainder = max(order.paid_fen - selectors.refunds_reserved_fen(order), 0)
            form = RefundForm(
                initial={
                    "reserved_fen": order.paid_fen - remainder,
                    "reason": request.POST.get("reason", ""),
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("为订单 %(no)s 发起退款") % {"no": order.order_no},
            "object": order,
            "object_url": change_url,
            "intro": _(
                "办件 %(number)s（%(service)s）实收 %(paid)s 元，已退或退款中 %(reserved)s 元，"
                "可退 %(left)s 元。退款将原路退回，渠道受理后入账。"
            )
            % {
                "number": order.application.number,
                "service": order.service.name,
                "paid": selectors.yuan(order.paid_fen),
                "reserved": selectors.yuan(order.paid_fen - remainder),
                "left": selectors.yuan(remainder),
            },
            "form": form,
            "submit_label": _("确认退款"),
        }
        return TemplateResponse(request, FORM_TEMPLATE, context)

    def settlement_view(self, request: StaffRequest) -> HttpResponse:
        if not request.user.has_perm("payments.view_ledgerentry"):
            raise PermissionDenied
        today = selectors.china_today()
        defaults = {"date_from": today - dt.timedelta(days=6), "date_to": today}
        form = SettlementForm(request.GET or None, initial=defaults)
        rows: list[dict[str, Any]] = []
        filters: dict[str, Any] = dict(defaults)
        if form.is_bound:
            filters = form.cleaned_data if form.is_valid() else {}
        if filters:
            rows = selectors.settlement_rows(
                date_from=filters["date_from"],
                date_to=filters["date_to"],
                department=filters.get("department"),
                channel=filters.get("channel") or None,
            )
        labels = dict(Channel.choices)
        totals = {
            key: sum(row[key] for row in rows)
            for key in ("paid_fen", "paid_count", "refunded_fen", "refunded_count", "net_fen")
        }
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("资金日结"),
            "form": form,
            "rows": [
                {
                    **row,
                    "channel_label": labels.get(row["channel"], row["channel"]),
                    "paid": selectors.yuan(row["paid_fen"]),
                    "refunded": selectors.yuan(row["refunded_fen"]),
                    "net": selectors.yuan(row["net_fen"]),
                }
                for row in rows
            ],
            "totals": {
                **totals,
                "paid": selectors.yuan(totals["paid_fen"]),
                "refunded": selectors.yuan(totals["refunded_fen"]),
                "net": selectors.yuan(totals["net_fen"]),
            },
        }
        return TemplateResponse(request, "admin/payments/settlement.html", context)


# --- Ledger, refunds, callbacks ------------------------------------------------------------------


@admin.register(LedgerEntry)
class LedgerEntryAdmin(BigTableList, ReadOnlyAdmin):
    list_display = ("at", "kind", "channel", "amount_yuan", "reference", "order", "created_at")
    list_filter = ("kind", "channel", "order__department", ("at", admin.DateFieldListFilter))
    search_fields = ("=reference", "=order__order_no")
    search_help_text = _("流水号（渠道交易号或退款单号）、订单号")
    list_select_related = ("order",)
    fields = ("order", "kind", "channel", "amount_yuan", "reference", "at", "created_at")
    readonly_fields = fields

    @admin.display(description=_("金额（元）"), ordering="amount_fen")
    def amount_yuan(self, entry: LedgerEntry) -> str:
        return selectors.yuan(entry.amount_fen)


@admin.register(Refund)
class RefundAdmin(BigTableList, ReadOnlyAdmin):
    list_display = (
        "refund_no",
        "order",
        "amount_yuan",
        "status",
        "reason_masked",
        "created_at",
        "succeeded_at",
    )
    list_filter = (
        "status",
        "order__channel",
        "order__department",
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("=refund_no", "=order__order_no", "=provider_refund_id", "requested_by")
    search_help_text = _("退款单号、订单号、渠道退款号或发起方")
    list_select_related = ("order",)
    fields = (
        "refund_no",
        "order",
        "amount_yuan",
        "status",
        "reason_masked",
        "requested_by",
        "provider_refund_id",
        "failure_reason",
        "created_at",
        "submitted_at",
        "last_queried_at",
        "succeeded_at",
    )
    readonly_fields = fields

    @admin.display(description=_("金额（元）"), ordering="amount_fen")
    def amount_yuan(self, refund: Refund) -> str:
        return selectors.yuan(refund.amount_fen)

    @admin.display(description=_("退款原因"))
    def reason_masked(self, refund: Refund) -> str:
        return masking.mask_text(refund.reason)


@admin.register(NotifyLog)
class NotifyLogAdmin(BigTableList, ReadOnlyAdmin):
    list_display = (
        "received_at",
        "channel",
        "outcome",
        "reason",
        "apply_attempts",
        "order_link",
        "transaction_id",
        "client_ip",
    )
    # Reasons are the channels' and our codes, too many to list: filtered
    # by a link (?reason__exact=…).
    list_filter = (
        "outcome",
        ("channel", fixed_choices(lambda: Channel.choices)),
        ("received_at", admin.DateFieldListFilter),
    )
    lookups_allowed = ("reason",)
    search_fields = ("=order_no", "=transaction_id")
    search_help_text = _("订单号或渠道交易号")
    fields = (
        "received_at",
        "channel",
        "outcome",
        "reason",
        "apply_attempts",
        "handled_at",
        "result",
        "order_link",
        "transaction_id",
        "client_ip",
        "body_masked",
    )
    readonly_fields = fields

    @admin.display(description=_("订单号"), ordering="order_no")
    def order_link(self, log: NotifyLog) -> str:
        if not log.order_no:
            return "-"
        url = reverse("admin:payments_paymentorder_changelist")
        return format_html(
            '<a href="{}?{}">{}</a>', url, urlencode({"q": log.order_no}), log.order_no
        )

    @admin.display(description=_("报文（截断）"))
    def body_masked(self, log: NotifyLog) -> str:
        return masking.mask_text(log.body_excerpt)


# --- Reconciliation ------------------------------------------------------------------------------


def _amount_of(record: dict[str, Any] | None) -> str:
    value = (record or {}).get("amount_fen")
    return selectors.yuan(value) if isinstance(value, int) else "-"


class MismatchInline(ReadOnlyInline):
    model = ReconciliationMismatch
    fields = (
        "kind",
        "entry_kind",
        "order_no",
        "reference",
        "ours_yuan",
        "theirs_yuan",
        "theirs_state",
        "resolved_at",
        "resolved_by",
        "resolution_note",
    )
    readonly_fields = fields
    show_change_link = True

    @admin.display(description=_("本方金额（元）"))
    def ours_yuan(self, item: ReconciliationMismatch) -> str:
        return _amount_of(item.ours)

    @admin.display(description=_("渠道金额（元）"))
    def theirs_yuan(self, item: ReconciliationMismatch) -> str:
        return _amount_of(item.theirs)

    @admin.display(description=_("渠道状态"))
    def theirs_state(self, item: ReconciliationMismatch) -> str:
        return str((item.theirs or {}).get("state", "-"))


@admin.register(ReconciliationReport)
class ReconciliationReportAdmin(ReadOnlyAdmin):
    list_display = (
        "date",
        "channel",
        "statement_lines",
        "ledger_entries",
        "matched",
        "mismatches",
        "open_mismatches",
        "ran_at",
    )
    list_filter = ("channel",)
    date_hierarchy = "date"
    fields = (
        "date",
        "channel",
        "ran_at",
        "statement_lines",
        "ledger_entries",
        "matched",
        "mismatches",
        "open_mismatches",
    )
    readonly_fields = fields
    inlines = [MismatchInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReconciliationReport]:
        return (
            super()
            .get_queryset(request)
            .annotate(open_count=Count("items", filter=Q(items__resolved_at__isnull=True)))
        )

    @admin.display(description=_("待处理差错"), ordering="open_count")
    def open_mismatches(self, report: ReconciliationReport) -> int:
        return report.open_count  # type: ignore[attr-defined]  # annotated by get_queryset


class ResolvedFilter(admin.SimpleListFilter):
    title = _("处理状态")
    parameter_name = "resolved"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("no", _("待处理")), ("yes", _("已处理"))]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ReconciliationMismatch]
    ) -> QuerySet[ReconciliationMismatch]:
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


class ResolveForm(forms.Form):
    note = forms.CharField(
        label=_("处理说明"),
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text=_("查明的原因和所做的处理，记入审计记录"),
    )


@admin.register(ReconciliationMismatch)
class ReconciliationMismatchAdmin(ReadOnlyAdmin):
    """Differences found by reconciliation; operators holding
    ``payments.change_reconciliationmismatch`` mark them resolved with a note."""

    list_display = (
        "report_date",
        "report_channel",
        "kind",
        "order_no",
        "reference",
        "ours_yuan",
        "theirs_yuan",
        "theirs_state",
        "is_resolved",
    )
    list_filter = ("kind", ResolvedFilter, "entry_kind", "report__channel")
    search_fields = ("=order_no", "=reference")
    search_help_text = _("订单号或流水号")
    list_select_related = ("report",)
    date_hierarchy = "report__date"
    fields = (
        "report",
        "kind",
        "entry_kind",
        "order_no",
        "reference",
        "ours",
        "theirs",
        "resolved_at",
        "resolved_by",
        "resolution_note",
    )
    readonly_fields = fields
    actions = ["resolve"]

    @admin.display(description=_("对账日期"), ordering="report__date")
    def report_date(self, item: ReconciliationMismatch) -> dt.date:
        return item.report.date

    @admin.display(description=_("渠道"), ordering="report__channel")
    def report_channel(self, item: ReconciliationMismatch) -> str:
        return item.report.get_channel_display()

    @admin.display(description=_("本方金额（元）"))
    def ours_yuan(self, item: ReconciliationMismatch) -> str:
        return _amount_of(item.ours)

    @admin.display(description=_("渠道金额（元）"))
    def theirs_yuan(self, item: ReconciliationMismatch) -> str:
        return _amount_of(item.theirs)

    @admin.display(description=_("渠道状态"))
    def theirs_state(self, item: ReconciliationMismatch) -> str:
        return str((item.theirs or {}).get("state", "-"))

    @admin.display(description=_("已处理"), boolean=True)
    def is_resolved(self, item: ReconciliationMismatch) -> bool:
        return item.resolved_at is not None

    change_form_template = "admin/payments/reconciliationmismatch/change_form.html"

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.change_reconciliationmismatch")

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/resolve/",
                self.admin_site.admin_view(self.resolve_view),
                name="payments_reconciliationmismatch_resolve",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        item = self.get_object(request, object_id)
        can_resolve = (
            item is not None and item.resolved_at is None and self.has_resolve_permission(request)
        )
        extra_context = {
            **(extra_context or {}),
            "resolve_url": reverse("admin:payments_reconciliationmismatch_resolve", args=[item.pk])
            if can_resolve and item is not None
            else None,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def resolve_view(self, request: StaffRequest, object_id: str) -> HttpResponse:
        """One mismatch marked resolved from its page, with a note (audited)."""
        if not self.has_resolve_permission(request):
            raise PermissionDenied
        item = self.get_object(request, object_id)
        if item is None:
            raise Http404
        change_url = reverse("admin:payments_reconciliationmismatch_change", args=[item.pk])
        if item.resolved_at is not None:
            self.message_user(request, _("这条差错已处理"), level=messages.INFO)
            return HttpResponseRedirect(change_url)
        form = ResolveForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            reconciliation.mismatch_resolve(
                mismatch=item,
                actor=request.user,
                note=form.cleaned_data["note"],
                ip=client_ip(request),
            )
            self.message_user(request, _("已标记为已处理"), level=messages.SUCCESS)
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("标记对账差错为已处理"),
            "object": item,
            "object_url": change_url,
            "intro": _("%(date)s %(channel)s：%(kind)s，订单 %(order)s，流水 %(reference)s。")
            % {
                "date": item.report.date,
                "channel": item.report.get_channel_display(),
                "kind": item.get_kind_display(),
                "order": item.order_no,
                "reference": item.reference,
            },
            "form": form,
            "submit_label": _("确认已处理"),
        }
        return TemplateResponse(request, FORM_TEMPLATE, context)

    @admin.action(description=_("标记为已处理（填写处理说明）"), permissions=["resolve"])
    def resolve(
        self, request: StaffRequest, queryset: QuerySet[ReconciliationMismatch]
    ) -> HttpResponse | None:
        open_items = list(queryset.filter(resolved_at__isnull=True).select_related("report"))
        if not open_items:
            self.message_user(request, _("所选差错均已处理"), level=messages.INFO)
            return None
        form = ResolveForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            for item in open_items:
                reconciliation.mismatch_resolve(
                    mismatch=item,
                    actor=request.user,
                    note=form.cleaned_data["note"],
                    ip=client_ip(request),
                )
            self.message_user(
                request,
                _("已将 %(n)s 条差错标记为已处理") % {"n": len(open_items)},
                level=messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("标记对账差错为已处理"),
            "intro": _("以下 %(n)s 条差错将标记为已处理：") % {"n": len(open_items)},
            "items": [
                f"{item.report.date} {item.report.channel} "
                f"{item.get_kind_display()} {item.order_no} {item.reference}"
                for item in open_items
            ],
            "form": form,
            "hidden": _hidden_action_fields("resolve", (item.pk for item in open_items)),
            "submit_label": _("确认已处理"),
        }
        return TemplateResponse(request, FORM_TEMPLATE, context)


def _hidden_action_fields(action: str, pks: Iterable[Any]) -> list[tuple[str, str]]:
    """What posts an intermediate page back to the same changelist action."""
    return [
        ("action", action),
        ("apply", "1"),
        *((ACTION_CHECKBOX_NAME, str(pk)) for pk in pks),
    ]


# --- The sandbox channels' books (sandbox only) --------------------------------------------------

if settings.PAYMENTS_SANDBOX:

    @admin.register(SandboxTrade)
    class SandboxTradeAdmin(ReadOnlyAdmin):
        list_display = (
            "created_at",
            "channel",
            "order_no",
            "transaction_id",
            "amount_yuan",
            "state",
            "paid_at",
            "notify_attempts",
            "notified_at",
        )
        list_filter = ("channel", "state")
        search_fields = ("=order_no", "=transaction_id")
        date_hierarchy = "created_at"

        @admin.display(description=_("金额（元）"), ordering="amount_fen")
        def amount_yuan(self, trade: SandboxTrade) -> str:
            return selectors.yuan(trade.amount_fen)

    @admin.register(SandboxRefund)
    class SandboxRefundAdmin(ReadOnlyAdmin):
        list_display = (
            "created_at",
            "refund_no",
            "refund_id",
            "trade",
            "amount_yuan",
            "state",
            "settles_at",
            "succeeded_at",
        )
        list_filter = ("state", "trade__channel")
        search_fields = ("=refund_no", "=refund_id", "=trade__order_no")
        list_select_related = ("trade",)

        @admin.display(description=_("金额（元）"), ordering="amount_fen")
        def amount_yuan(self, refund: SandboxRefund) -> str:
            return selectors.yuan(refund.amount_fen)


# --- The dashboard's panel -----------------------------------------------------------------------


def _money_panel(periods: dashboard.Periods) -> dashboard.Panel:
    ledger_url = reverse("admin:payments_ledgerentry_changelist")
    # The whole week, Monday to Sunday: days still to come are empty columns.
    first = periods.week_start.date()
    days = [first + dt.timedelta(days=n) for n in range(7)]
    by_day: dict[dt.date, dict[str, int]] = {
        day: {"paid_fen": 0, "paid_count": 0, "refunded_fen": 0, "refunded_count": 0}
        for day in days
    }
    for row in selectors.settlement_rows(date_from=days[0], date_to=periods.today):
        for key in by_day[row["date"]]:
            by_day[row["date"]][key] += row[key]
    today = by_day[periods.today]
    week = {key: sum(day[key] for day in by_day.values()) for key in today}
    in_flight = selectors.refunds_in_flight()
    owed = selectors.owed_back_totals()

    def ledger(kind: str, start: dt.datetime, end: dt.datetime) -> str:
        return dashboard.changelist(
            ledger_url,
            kind__exact=kind,
            at__gte=dashboard.stamp(start),
            at__lt=dashboard.stamp(end),
        )

    def money(side: str, totals: dict[str, int]) -> str:
        return f"¥{selectors.yuan(totals[f'{side}_fen'], grouped=True)}"

    charge, refund = EntryKind.CHARGE, EntryKind.REFUND
    weekdays = [_("周一"), _("周二"), _("周三"), _("周四"), _("周五"), _("周六"), _("周日")]
    bars = []
    for day, totals in by_day.items():
        start = dt.datetime.combine(day, dt.time.min, tzinfo=dashboard.CHINA)
        bars.append(
            dashboard.Bar(
                str(weekdays[day.weekday()]),
                totals["paid_fen"] / 100,
                url=ledger(charge, start, start + dt.timedelta(days=1))
                if day <= periods.today
                else None,
                tone="today" if day == periods.today else "",
                title=str(
                    _("%(day)s 收款 %(paid)s 元（%(n)s 笔），退款 %(refunded)s 元")
                    % {
                        "day": day.isoformat(),
                        "paid": selectors.yuan(totals["paid_fen"]),
                        "n": totals["paid_count"],
                        "refunded": selectors.yuan(totals["refunded_fen"]),
                    }
                ),
            )
        )
    notes = {side: _("%(n)s 笔") for side in ("paid", "refunded")}
    return dashboard.Panel(
        title=str(_("统一支付")),
        figures=[
            dashboard.Figure(
                str(_("今日收款")),
                money("paid", today),
                ledger(charge, periods.today_start, periods.tomorrow_start),
                note=str(notes["paid"] % {"n": today["paid_count"]}),
            ),
            dashboard.Figure(
                str(_("本周收款")),
                money("paid", week),
                ledger(charge, periods.week_start, periods.tomorrow_start),
                note=str(notes["paid"] % {"n": week["paid_count"]}),
            ),
            dashboard.Figure(
                str(_("今日退款")),
                money("refunded", today),
                ledger(refund, periods.today_start, periods.tomorrow_start),
                note=str(notes["refunded"] % {"n": today["refunded_count"]}),
            ),
            dashboard.Figure(
                str(_("本周退款")),
                money("refunded", week),
                ledger(refund, periods.week_start, periods.tomorrow_start),
                note=str(notes["refunded"] % {"n": week["refunded_count"]}),
            ),
            dashboard.Figure(
                str(_("退款处理中")),
                str(in_flight["count"]),
                dashboard.changelist(
                    reverse("admin:payments_refund_changelist"), status__exact="pending"
                ),
                note=f"¥{selectors.yuan(in_flight['fen'], grouped=True)}",
            ),
            dashboard.Figure(
                str(_("自动退款失败待退")),
                str(owed["count"]),
                dashboard.changelist(reverse("admin:payments_paymentorder_changelist"), owed="yes"),
                note=f"¥{selectors.yuan(owed['fen'], grouped=True)}",
                tone="bad" if owed["count"] else "",
            ),
        ],
        chart=dashboard.bars_vertical(bars),
        chart_caption=str(_("本周每日收款（元），深色为今日")),
        links=[(str(_("资金日结")), reverse("admin:payments_paymentorder_settlement"))],
    )


dashboard.panel_register(
    "payments.money",
    order=40,
    permissions=["payments.view_ledgerentry", "payments.view_refund"],
    build=_money_panel,
)

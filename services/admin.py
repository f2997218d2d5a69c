"""Operators' catalog: categories, services, bulk import and export."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.admin import AuditedModelAdmin
from services import catalog
from services.errors import ServicesError
from services.models import Category, Service


@admin.register(Category)
class CategoryAdmin(AuditedModelAdmin):
    list_display = ("code", "name", "name_en", "sort_order", "is_active")
    list_editable = ("sort_order", "is_active")
    search_fields = ("code", "name", "name_en")


class ServiceForm(forms.ModelForm):
    class Meta:
        model = Service
        fields = (
            "code",
            "name",
            "department",
            "category",
            "summary",
            "eligibility",
            "materials",
            "fee_fen",
            "time_limit_days",
            "legal_basis",
            "channels",
            "identity_level",
            "form_schema",
            "keywords",
            "is_active",
        )

    def clean(self):  # type: ignore[no-untyped-def]
        cleaned = super().clean()
        try:
            catalog.check_guide(cleaned)
        except ServicesError as exc:
            raise ValidationError(dict(exc.errors.items())) from exc
        return cleaned


class CatalogFileForm(forms.Form):
    file = forms.FileField(label=_("目录文件（JSON）"))


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
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
        "updated_at",
    )
    list_filter = ("is_active", "department", "category", "identity_level")
    search_fields = ("code", "name", "search_text")
    list_select_related = ("department", "category")
    actions = ["export_json", "take_offline", "put_online"]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return ("code", "department") if obj else ()

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        values = {k: v for k, v in form.cleaned_data.items() if k not in ("code", "department")}
        if change:
            # The form has already copied its values onto ``obj``; the service
            # compares against what is stored.
            stored = Service.objects.get(pk=obj.pk)
            catalog.service_update(service=stored, actor=request.user, **values)
        else:
            created = catalog.service_create(
                code=form.cleaned_data["code"],
                department=form.cleaned_data["department"],
                actor=request.user,
                **values,
            )
            obj.pk = created.pk
            obj._state.adding = False

    @admin.action(description=_("导出所选事项（JSON 目录文件）"))
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
    def take_offline(self, request: HttpRequest, queryset: QuerySet[Service]) -> None:
        for service in queryset:
            catalog.service_update(service=service, actor=request.user, is_active=False)

    @admin.action(description=_("上线所选事项"), permissions=["change"])
    def put_online(self, request: HttpRequest, queryset: QuerySet[Service]) -> None:
        for service in queryset:
            catalog.service_update(service=service, actor=request.user, is_active=True)

    def get_urls(self):  # type: ignore[no-untyped-def]
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="services_service_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            return HttpResponse(status=403)
        form = CatalogFileForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                document = json.loads(form.cleaned_data["file"].read().decode("utf-8"))
                records = document["services"] if isinstance(document, dict) else document
                if not isinstance(records, list):
                    raise ValueError
            except (ValueError, KeyError, UnicodeDecodeError):
                form.add_error("file", _('文件不是目录 JSON（{"services": [...]} 或事项列表）'))
            else:
                try:
                    report = catalog.catalog_import(records, actor=request.user)
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

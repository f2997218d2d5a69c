"""The admin site of the city's operators: the dashboard as its index, and
the apps listed by what operators work with most (applications, routing,
payments, star-codes, accounts), library tables last.

Installed in place of ``django.contrib.admin`` (``OperatorAdminConfig`` in
``INSTALLED_APPS``), so every ``admin.register`` lands here.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from accounts import dashboard

# Operators' apps first, in the order of their day; anything not named
# here (libraries' tables: refresh tokens, periodic tasks, login lockouts)
# after them.
APP_ORDER = ("services", "payments", "qr", "accounts", "auth")
LAST = ("axes", "django_celery_beat", "token_blacklist")


def app_rank(app_label: str) -> tuple[int, int]:
    if app_label in APP_ORDER:
        return (0, APP_ORDER.index(app_label))
    if app_label in LAST:
        return (2, LAST.index(app_label))
    return (1, 0)


class OperatorAdminSite(admin.AdminSite):
    index_title = _("运行概览")
    index_template = "admin/operator_index.html"

    def get_app_list(
        self, request: HttpRequest, app_label: str | None = None
    ) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        return sorted(apps, key=lambda app: app_rank(app["app_label"]))

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        periods = dashboard.Periods.at()
        context = {
            **(extra_context or {}),
            "panels": dashboard.panels_for(request.user, periods),
            "periods": periods,
        }
        return super().index(request, context)


class OperatorAdminConfig(AdminConfig):
    default_site = "accounts.admin_site.OperatorAdminSite"

"""The admin site of the city's operators: the dashboard as its index, and
the apps listed by what operators work with most (applications, routing,
payments, star-codes, accounts), library tables last.

Installed in place of ``django.contrib.admin`` (``OperatorAdminConfig`` in
``INSTALLED_APPS``), so every ``admin.register`` lands here.
"""

from __future__ import annotations

import datetime as dt
from itertools import islice
from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import BadRequest, ValidationError
from django.db import connection, models
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.text import smart_split
from django.utils.translation import gettext_lazy as _

from accounts import dashboard

# Operators' apps first, in the order of their day; anything not named
# here (libraries' tables: refresh tokens, periodic tasks, login lockouts)
# after them.
APP_ORDER = ("services", "payments", "qr", "accounts", "auth")
LAST = ("axes", "django_celery_beat", "token_blacklist")


# Libraries' tables under Chinese names (their own apps carry English ones;
# renamed here, on the page, not in their models).
LIBRARY_NAMES: dict[str, tuple[Any, dict[str, Any]]] = {
    "token_blacklist": (
        _("刷新令牌"),
        {"OutstandingToken": _("已签发的刷新令牌"), "BlacklistedToken": _("已注销的刷新令牌")},
    ),
    "axes": (
        _("登录锁定"),
        {
            "AccessAttempt": _("登录失败计数"),
            "AccessFailureLog": _("登录失败记录"),
            "AccessLog": _("登录记录"),
        },
    ),
}


def app_rank(app_label: str) -> tuple[int, int]:
    if app_label in APP_ORDER:
        return (0, APP_ORDER.index(app_label))
    if app_label in LAST:
        return (2, LAST.index(app_label))
    return (1, 0)


class ListedLookupsOnly(admin.ModelAdmin):
    """A list filters by what its filters offer, nothing else.

    Django lets a list's query string filter on any field of the model
    (``?phone__startswith=1381``): a count of matches would then spell out,
    digit by digit, a value every page shows masked. Here a query-string
    lookup must start at a field of ``list_filter`` (or a filter's own
    parameter), ``date_hierarchy``, the primary key, or ``lookups_allowed``
    (what a page's links filter on); anything else is refused as Django
    refuses a lookup it does not allow (400)."""

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Read from the admin itself: this class comes first in the MRO of
        # every registered admin, so a default here would hide the admin's own.
        roots = {"pk", self.model._meta.pk.name, *getattr(self, "lookups_allowed", ())}
        if self.date_hierarchy:
            roots.add(self.date_hierarchy.split(LOOKUP_SEP)[0])
        for item in self.get_list_filter(request) if request is not None else self.list_filter:
            if isinstance(item, str):
                roots.add(item.split(LOOKUP_SEP)[0])
            elif isinstance(item, list | tuple) and isinstance(item[0], str):
                roots.add(item[0].split(LOOKUP_SEP)[0])
            elif parameter := getattr(item, "parameter_name", None):
                roots.add(parameter)
        if lookup.split(LOOKUP_SEP)[0] not in roots:
            return False
        return super().lookup_allowed(lookup, value, request)

    # Each word of a search is one more condition on every search field: a
    # page of words is a query SQLite cannot parse and PostgreSQL works on
    # for minutes (and a link can make an operator's browser ask it).
    MAX_SEARCH_WORDS = 20

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        if next(islice(smart_split(search_term), self.MAX_SEARCH_WORDS, None), None) is not None:
            raise BadRequest("a search is a few words")
        return super().get_search_results(request, queryset, search_term)

    def response_action(self, request: HttpRequest, queryset: Any) -> Any:
        # Django filters on the posted row ids as they come: one of the
        # wrong shape for the key (a hand-made post) fails in the query, a
        # server error. It is the request that is wrong (400).
        key = self.model._meta.pk
        low, high = (None, None)
        if isinstance(key, models.IntegerField):
            low, high = connection.ops.integer_field_range(key.get_internal_type())
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                pk = key.to_python(value)
            except ValidationError as exc:
                raise BadRequest("a selected row's id is not one this list has") from exc
            if (low is not None and pk < low) or (high is not None and pk > high):
                raise BadRequest("a selected row's id is not one this list has")
        return super().response_action(request, queryset)

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        # A year the calendar has not (?created_at__year=99999) has no bounds
        # to compare with: Django's query making fails on it (a ValueError),
        # and so does the last one it has, whose next year the date
        # hierarchy works out.
        for name, values in request.GET.lists():
            if {"year", "iso_year"} & set(name.split("__")) and not all(
                part.strip().isascii()
                and part.strip().isdigit()
                and dt.MINYEAR <= int(part) < dt.MAXYEAR
                for value in values
                for part in value.split(",")
            ):
                raise IncorrectLookupParameters(f"{name}: not a year")
        try:
            return super().get_changelist_instance(request)
        except OverflowError as exc:
            # A time at the calendar's ends (?created_at__gte=0001-01-01)
            # overflows once put in UTC for the query: a lookup the list
            # cannot take, as Django answers one it cannot parse.
            raise IncorrectLookupParameters(exc) from exc


class OperatorAdminSite(admin.AdminSite):
    index_title = _("运行概览")
    index_template = "admin/operator_index.html"
    # Lists are wide (filters on the right): the 1366-px screens of the
    # service halls have no room for a second column of links on the left.
    # The index lists every app, and breadcrumbs lead back to it.
    enable_nav_sidebar = False

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        # Every list, ours and the libraries', filters only as ListedLookupsOnly says.
        base = admin_class or admin.ModelAdmin
        if not issubclass(base, ListedLookupsOnly):
            base = type(base.__name__, (ListedLookupsOnly, base), {"__module__": base.__module__})
        super().register(model_or_iterable, base, **options)

    def get_app_list(
        self, request: HttpRequest, app_label: str | None = None
    ) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        for app in apps:
            name, models = LIBRARY_NAMES.get(app["app_label"], (None, {}))
            if name is not None:
                app["name"] = name
            for model in app["models"]:
                model["name"] = models.get(model["object_name"], model["name"])
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

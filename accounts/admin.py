"""Operators' view of accounts, departments, API keys, inbox and audit trail.

Personal data is masked in every list and form; the full values are one
page away for operators holding ``accounts.view_pii`` (its button posts),
and each look is audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR, TO_FIELD_VAR
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django_celery_beat.admin import (
    ClockedScheduleAdmin,
    CrontabScheduleAdmin,
    IntervalScheduleAdmin,
    PeriodicTaskAdmin,
    SolarScheduleAdmin,
)
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts import api_keys, audit, citizens, idnumber, pii, privileges, token_facts
from accounts.errors import AccountsError
from accounts.models import ApiKey, AuditEntry, Department, Message, OtpChallenge, User
from config import masking
from config.api import client_ip
from config.errors import ACCOUNT_INACTIVE, DomainError
from config.pages import PublicPages, catalog_pages


class StaffRequest(HttpRequest):
    """The request an admin view or action receives (``admin_view`` lets only
    signed-in staff through): for the type checker only."""

    user: User


class AuditedDeletions(admin.ModelAdmin):
    """Every delete made in the admin also lands in the audit trail (for
    records whose adds and changes a write function already audits)."""

    def log_deletions(self, request, queryset):
        for obj in queryset:
            audit.audit_record(
                actor=request.user,
                action=f"admin.{obj._meta.model_name}.deleted",
                target=obj,
                data={"repr": str(obj)},
                ip=client_ip(request),
            )
        return super().log_deletions(request, queryset)


class AuditedModelAdmin(AuditedDeletions):
    """Every add, change and delete made in the admin also lands in the
    audit trail (next to Django's own admin log). A change names the fields
    it changed, and keeps the old and new values of those in
    :attr:`audited_values`."""

    #: Fields whose old and new values a change's audit entry keeps: short
    #: ones, never personal data or a secret (the rest by name only).
    audited_values: tuple[str, ...] = ()

    def construct_change_message(self, request, form, formsets, add=False):
        if not add:
            # For log_change, which Django calls next with the message only.
            request._audited_change = {
                "fields": sorted(form.changed_data),
                "values": audit.audit_values(
                    form.initial,
                    form.cleaned_data,
                    [name for name in self.audited_values if name in form.changed_data],
                ),
            }
        return super().construct_change_message(request, form, formsets, add)

    def log_addition(self, request, obj, message):
        audit.audit_record(
            actor=request.user,
            action=f"admin.{obj._meta.model_name}.added",
            target=obj,
            ip=client_ip(request),
        )
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        audit.audit_record(
            actor=request.user,
            action=f"admin.{obj._meta.model_name}.changed",
            target=obj,
            data={"change": message, **request.__dict__.pop("_audited_change", {})},
            ip=client_ip(request),
        )
        return super().log_change(request, obj, message)


class ChangesPublicPages(admin.ModelAdmin):
    """Saves and deletes made here change public pages (``pages``): their
    version is bumped after each, so that the next request renders them anew."""

    pages: PublicPages

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        self.pages.bump()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        self.pages.bump()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        self.pages.bump()


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Lists of big tables ---------------------------------------------------------------------


class FixedChoicesFilter(admin.ChoicesFieldListFilter):
    """A filter on a field without choices that offers a fixed list of
    values (:func:`fixed_choices`), as a field with choices does. Django's
    own filter for such a field offers the distinct values of the column,
    read from every row of the table on every page load; any value still
    filters through a link (``?kind__exact=…``), listed or not."""

    lookup_choices: list[tuple[Any, Any]]

    @staticmethod
    def fixed_choices() -> Iterable[tuple[Any, Any]]:
        return ()

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.lookup_choices = list(self.fixed_choices())

    def choices(self, changelist):
        yield next(iter(super().choices(changelist)))  # "All", in Django's words
        for value, title in self.lookup_choices:
            yield {
                "selected": self.lookup_val is not None and str(value) in self.lookup_val,
                "query_string": changelist.get_query_string(
                    {self.lookup_kwarg: value}, [self.lookup_kwarg_isnull]
                ),
                "display": title,
            }


def fixed_choices(choices: Callable[[], Iterable[tuple[Any, Any]]]) -> type[FixedChoicesFilter]:
    """A :class:`FixedChoicesFilter` offering ``choices()`` (called per page,
    so that labels follow the operator's language), for ``list_filter`` as
    ``("kind", fixed_choices(...))``."""
    return type(
        "FixedChoicesFilter", (FixedChoicesFilter,), {"fixed_choices": staticmethod(choices)}
    )


class BigTableList(admin.ModelAdmin):
    """The list of a table that grows without end: no count of the whole
    table next to the page's own (``show_full_result_count``), and no date
    hierarchy (its first and last dates and its years and months are read
    from every row); dates are picked from a list instead
    (``admin.DateFieldListFilter``), and filters on fields without choices
    offer fixed values (:func:`fixed_choices`). No counts beside the
    filters' choices either: each would be one more count of the table.
    """

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER


class DetailActions(admin.ModelAdmin):
    """Buttons on a record's page, each posting to one write function (which
    checks and audits what it does). ``detail_actions`` lists what ``request``
    may do to ``obj`` now, as ``(slug, label)``; ``detail_action`` does it and
    returns the message for the operator. Anything not offered is refused."""

    change_form_template = "admin/detail_actions_change_form.html"

    def detail_actions(self, request: HttpRequest, obj: Any) -> list[tuple[str, str]]:
        return []

    def detail_action(self, request: StaffRequest, obj: Any, slug: str) -> str:
        raise NotImplementedError

    def _detail_action_name(self) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_detail_action"

    def get_urls(self):
        return [
            path(
                "<path:object_id>/do/<slug:slug>/",
                self.admin_site.admin_view(self.detail_action_view),
                name=self._detail_action_name(),
            ),
            *super().get_urls(),
        ]

    def detail_action_view(self, request: StaffRequest, object_id: str, slug: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_view_permission(request, obj):
            raise Http404
        offered = dict(self.detail_actions(request, obj))
        if slug not in offered:
            raise PermissionDenied
        level = messages.SUCCESS
        try:
            text = self.detail_action(request, obj, slug)
        except DomainError as exc:
            level = messages.ERROR
            text = _("未执行：%(why)s（%(code)s）") % {
                "why": exc.detail or exc.error.title,
                "code": exc.code,
            }
        self.message_user(request, text, level=level)
        return HttpResponseRedirect(
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The page's record as change_view read it (no second read for the buttons).
        offered = []
        if obj is not None:
            offered = [
                (label, reverse(f"admin:{self._detail_action_name()}", args=[obj.pk, slug]))
                for slug, label in self.detail_actions(request, obj)
            ]
        context = {**context, "detail_actions": offered}
        return super().render_change_form(request, context, add, change, form_url, obj)


# --- Users and privileges -----------------------------------------------------------------


class PrivilegesAudited(admin.ModelAdmin):
    """Every save of an account or group in the admin records what changed
    in its powers (accounts.privileges), before and after."""

    def save_model(self, request, obj, form, change):
        form.privileges_before = privileges.privileges_of(obj) if change else {}
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        privileges.privileges_audit(
            actor=request.user,
            obj=form.instance,
            before=getattr(form, "privileges_before", {}),
            ip=client_ip(request),
        )


class StaffCreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):  # type: ignore[name-defined]  # the stubs do not declare the form's Meta
        model = User
        fields = ("username",)


class StaffChangeForm(UserChangeForm):
    # Citizens have no username (NULL); Django's UsernameField cannot take that.
    username = forms.CharField(label=_("用户名"), max_length=150, required=False)

    class Meta(UserChangeForm.Meta):  # type: ignore[name-defined]  # the stubs do not declare the form's Meta
        model = User
        fields = "__all__"

    def clean_username(self) -> str | None:
        username = self.cleaned_data.get("username") or None
        if username is None and self.instance.is_staff:
            raise forms.ValidationError(_("工作人员账户需要用户名"))
        return username


@admin.register(User)
class UserAdmin(PrivilegesAudited, AuditedModelAdmin, DjangoUserAdmin):
    form = StaffChangeForm
    add_form = StaffCreationForm

    # The account's tokens stop vouching for it (accounts.token_facts);
    # first, so that an account is not changed while they still would.
    def save_model(self, request, obj, form, change):
        if obj.pk is not None:
            token_facts.citizen_changed(obj.pk)
        super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        token_facts.citizen_changed(obj.pk)
        super().delete_model(request, obj)

    list_display = (
        "__str__",
        "phone_masked_display",
        "real_name_masked_display",
        "identity_level",
        "is_active",
        "is_staff",
        "department",
        "date_joined",
    )
    list_filter = ("identity_level", "is_active", "is_staff", "department")
    search_fields = ("username", "=phone", "nickname")
    search_help_text = _("用户名、完整手机号、昵称或完整身份证号")
    ordering = ("-date_joined",)
    list_select_related = ("department",)
    readonly_fields = (
        "is_active",
        "deactivated_at",
        "phone_masked_display",
        "real_name_masked_display",
        "id_number_masked_display",
        "identity_level",
        "real_name_verified_at",
        "subject",
        "pii_link",
        "last_login",
        "date_joined",
        "closed_at",
        "email_masked_display",
    )
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        (
            _("市民信息"),
            {
                "fields": (
                    "phone_masked_display",
                    "nickname",
                    "email",
                    "identity_level",
                    "real_name_masked_display",
                    "id_number_masked_display",
                    "real_name_verified_at",
                    "subject",
                    "pii_link",
                )
            },
        ),
        (
            _("权限"),
            {
                "fields": (
                    "is_active",
                    "is_staff",
                    "is_superuser",
                    "department",
                    "groups",
                    "user_permissions",
                )
            },
        ),
        (_("时间"), {"fields": ("last_login", "date_joined", "deactivated_at", "closed_at")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": (
                    "username",
                    "usable_password",
                    "password1",
                    "password2",
                    "is_staff",
                    "department",
                ),
            },
        ),
    )
    # Suspending goes through the actions, which also revoke tokens and
    # record when, so the checkbox is read-only here.
    actions = ["suspend", "reinstate"]

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return fields
        return fields + tuple(f for f in privileges.PRIVILEGE_FIELDS if f not in fields)

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not privileges.account_is_privileged(obj):
            # A citizen's e-mail is theirs to change (citizens.profile_update)
            # and personal data: masked here, in full on the reveal page. A
            # privileged account's (staff or not) is an operator's.
            fieldsets = [
                (
                    name,
                    {
                        **opts,
                        "fields": [
                            "email_masked_display" if f == "email" else f for f in opts["fields"]
                        ],
                    },
                )
                for name, opts in fieldsets
            ]
        if obj is None and not request.user.is_superuser:
            return [
                (
                    name,
                    {
                        **opts,
                        "fields": [
                            f for f in opts["fields"] if f not in privileges.PRIVILEGE_FIELDS
                        ],
                    },
                )
                for name, opts in fieldsets
            ]
        return fieldsets

    # A privileged account (its password included) is only a superuser's to
    # change, suspend or delete: otherwise a clerk could take over or shut
    # out a stronger account.
    def has_change_permission(self, request, obj=None):
        if obj is not None and not privileges.account_may_manage(actor=request.user, target=obj):
            return False
        # A closed account's data was erased at the citizen's request: shown,
        # never written to again (a nickname or an e-mail put back on it).
        if obj is not None and obj.closed_at is not None:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not privileges.account_may_manage(actor=request.user, target=obj):
            return False
        # A citizen's account is closed by the citizen (citizens.account_close
        # revokes tokens and star-codes, tells the revocation feed and erases
        # personal data); deleting the row would skip all of it. Suspending
        # is the operator's way to stop an account. A privileged one, staff
        # or not, cannot close itself (account_privileged): a superuser
        # (account_may_manage, above) deletes it here.
        if obj is not None and not privileges.account_is_privileged(obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Bulk delete would skip the per-account check above.
        actions.pop("delete_selected", None)
        return actions

    def _manageable(self, request: HttpRequest, queryset: QuerySet[User]) -> list[User]:
        return [
            user
            for user in queryset
            if privileges.account_may_manage(actor=request.user, target=user)
        ]

    @admin.display(description=_("手机号"))
    def phone_masked_display(self, user: User) -> str:
        return user.phone_masked

    @admin.display(description=_("姓名"))
    def real_name_masked_display(self, user: User) -> str:
        return user.real_name_masked

    @admin.display(description=_("身份证号"))
    def id_number_masked_display(self, user: User) -> str:
        return user.id_number_masked

    @admin.display(description=_("电子邮箱"))
    def email_masked_display(self, user: User) -> str:
        return masking.mask_email(user.email)

    @admin.display(description=_("完整个人信息"))
    def pii_link(self, user: User) -> str:
        if not user.pk or not (user.phone or user.real_name or user.email):
            return "-"
        url = reverse("admin:accounts_user_pii", args=[user.pk])
        return format_html('<a href="{}">{}</a>', url, _("查看（需权限，留痕）"))

    def get_search_results(self, request, queryset, search_term):
        term = idnumber.normalize(search_term)
        if len(term) == 18:
            index = pii.blind_index(term, purpose="id_number")
            return queryset.filter(id_number_index=index), False
        return super().get_search_results(request, queryset, search_term)

    def get_urls(self):
        return [
            path(
                "<uuid:user_id>/pii/",
                self.admin_site.admin_view(self.pii_view),
                name="accounts_user_pii",
            ),
            *super().get_urls(),
        ]

    def pii_view(self, request: StaffRequest, user_id: str) -> HttpResponse:
        # More of an account one may read, never of one one may not.
        if not (self.has_view_permission(request) and request.user.has_perm("accounts.view_pii")):
            raise PermissionDenied
        subject = get_object_or_404(User, pk=user_id)
        # Revealing writes to the audit trail: a POST (a form of this site,
        # CSRF-checked), so that no link or redirect from elsewhere puts a
        # look the operator never asked for on their record. A GET offers it.
        values = None
        if request.method == "POST":
            values = citizens.pii_reveal(
                subject=subject, operator=request.user, ip=client_ip(request)
            )
            # The same look (audited above) shows the e-mail, masked elsewhere.
            values = {**values, "email": subject.email}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("完整个人信息"),
            "subject": subject,
            "values": values,
        }
        return TemplateResponse(request, "admin/accounts/user/pii.html", context)

    def _set_active(self, request: StaffRequest, queryset: QuerySet[User], *, active: bool) -> int:
        """Suspend or reinstate the selected accounts one by one; how many
        were changed. A closed account is never written to again (its
        deactivation stamp is what offline scanners page by): one closed
        before or while the action runs (user_set_active sees a close
        committed after this list was read) is left as it is and reported."""
        changed = closed = 0
        for user in self._manageable(request, queryset):
            try:
                citizens.user_set_active(
                    user=user, active=active, actor=request.user, ip=client_ip(request)
                )
            except AccountsError as exc:
                if exc.code != ACCOUNT_INACTIVE.code:
                    raise
                closed += 1
            else:
                changed += 1
        if closed:
            self.message_user(
                request, _("%(n)s 个账户已注销，未改动") % {"n": closed}, level=messages.WARNING
            )
        return changed

    @admin.action(description=_("停用所选账户（吊销令牌）"), permissions=["change"])
    def suspend(self, request: StaffRequest, queryset: QuerySet[User]) -> None:
        count = self._set_active(request, queryset, active=False)
        self.message_user(request, _("已停用 %(n)s 个账户") % {"n": count})

    @admin.action(description=_("恢复所选账户"), permissions=["change"])
    def reinstate(self, request: StaffRequest, queryset: QuerySet[User]) -> None:
        count = self._set_active(request, queryset, active=True)
        self.message_user(request, _("已恢复 %(n)s 个账户") % {"n": count})


# --- Departments and keys -------------------------------------------------------------------


@admin.register(Department)
class DepartmentAdmin(ChangesPublicPages, AuditedModelAdmin):
    pages = catalog_pages
    audited_values = ("name", "name_en", "contact_phone", "is_active")

    list_display = ("code", "name", "contact_phone", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("code", "name", "name_en")
    ordering = ("code",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # What integrations hold (keys' commands, events, receipts' signed
        # claims): given once, like a service's.
        return ("code",) if obj else ()


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("department", "scope", "name")


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedModelAdmin):
    audited_values = ("name",)
    list_display = (
        "key_prefix",
        "department",
        "scope",
        "name",
        "created_at",
        "last_used_at",
        "status",
    )
    list_filter = ("scope", "department", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "name", "department__code", "department__name")
    list_select_related = ("department",)
    readonly_fields = (
        "key_prefix",
        "department",
        "scope",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    )
    actions = ["revoke"]

    @admin.display(description=_("密钥"))
    def key_prefix(self, key: ApiKey) -> str:
        return f"mcs_{key.prefix}_…" if key.prefix else "-"

    @admin.display(description=_("状态"))
    def status(self, key: ApiKey) -> str:
        return str(_("有效")) if key.is_active else str(_("已吊销"))

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        # A key's name says its department: read with it wherever keys are
        # listed (the scanner profile's key picker as well as this list).
        return super().get_queryset(request).select_related("department")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else ()

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("department", "scope", "name")
        return (
            "key_prefix",
            "department",
            "scope",
            "name",
            "created_at",
            "created_by",
            "last_used_at",
            "revoked_at",
        )

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = api_keys.api_key_create(
            department=form.cleaned_data["department"],
            scope=form.cleaned_data["scope"],
            name=form.cleaned_data["name"],
            created_by=request.user,
        )
        # The key as made (its prefix names it in the logs and the picker).
        for field in key._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding = False
        # For response_add, on this request's object only: never a message,
        # which the session would keep in its row until the next page.
        obj._new_key = raw

    def response_add(self, request, obj, post_url_continue=None):
        """The new key, shown once in the answer to the form that made it
        (nothing of it in a message, the session or a cookie) and kept by
        no cache; from a picker's popup, the picker is given the key once
        the operator has copied it."""
        raw = getattr(obj, "_new_key", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        popup = None
        if IS_POPUP_VAR in request.POST:
            to_field = request.POST.get(TO_FIELD_VAR)
            value = str(obj.serializable_value(to_field) if to_field else obj.pk)
            popup = {"value": value, "obj": str(obj)}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("新密钥"),
            "key": obj,
            "raw": raw,
            "popup_response_data": popup,
            "is_popup": popup is not None,
        }
        response = TemplateResponse(request, "admin/accounts/apikey/new_key.html", context)
        add_never_cache_headers(response)
        return response

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description=_("吊销所选密钥"), permissions=["change"])
    def revoke(self, request: StaffRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.filter(revoked_at__isnull=True):
            api_keys.api_key_revoke(key=key, actor=request.user, ip=client_ip(request))
        self.message_user(request, _("所选密钥已吊销"))


# --- Inbox, codes and audit (read-only) ----------------------------------------------------------


# What the apps post to citizens' and staff's inboxes (``accounts.inbox``'s
# ``kind``): the choices of the list's filter (any other still filters by link).
MESSAGE_KINDS = (
    "application.submitted",
    "application.status",
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "endpoint.held",
    "endpoint.paused",
    "endpoint.disabled",
)


@admin.register(Message)
class MessageAdmin(BigTableList, ReadOnlyAdmin):
    list_display = ("created_at", "user", "kind", "title_masked", "read_at")
    list_filter = (
        ("kind", fixed_choices(lambda: [(kind, kind) for kind in MESSAGE_KINDS])),
        ("read_at", admin.EmptyFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("kind",)
    list_select_related = ("user",)
    fields = ("user", "kind", "title_masked", "body_masked", "data", "created_at", "read_at")
    readonly_fields = fields

    # A message carries what a department wrote (a note on an application)
    # as written: a phone or an ID number in it is masked here.
    @admin.display(description=_("标题"))
    def title_masked(self, message: Message) -> str:
        return masking.mask_text(message.localized_title())

    @admin.display(description=_("正文"))
    def body_masked(self, message: Message) -> str:
        return masking.mask_text(message.localized_body())


@admin.register(OtpChallenge)
class OtpChallengeAdmin(ReadOnlyAdmin):
    list_display = ("masked_phone", "created_at", "expires_at", "attempts", "close_reason", "ip")
    list_filter = ("close_reason",)
    search_fields = ("=phone",)
    search_help_text = _("完整手机号")
    exclude = ("code_hash", "phone")
    readonly_fields = ("masked_phone",)

    @admin.display(description=_("手机号"))
    def masked_phone(self, challenge: OtpChallenge) -> str:
        return masking.mask_phone(challenge.phone)


def _audited_kinds() -> list[tuple[str, str]]:
    """What an audit entry's target may be: the records of this site."""
    return sorted(
        (model._meta.label_lower, f"{model._meta.verbose_name}（{model._meta.label_lower}）")
        for model in apps.get_models()
        if admin.site.is_registered(model)
    )


@admin.register(AuditEntry)
class AuditEntryAdmin(BigTableList, ReadOnlyAdmin):
    list_display = ("at", "actor_kind", "actor_label", "action", "target_type", "target_id", "ip")
    # Actions are too many to list: found by the search, or by a link
    # (?action__exact=…).
    list_filter = (
        "actor_kind",
        ("target_type", fixed_choices(_audited_kinds)),
        ("at", admin.DateFieldListFilter),
    )
    lookups_allowed = ("action",)
    search_fields = ("=target_id", "=actor_id", "actor_label", "action")


# --- Groups and refresh tokens --------------------------------------------------------------

admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(PrivilegesAudited, AuditedModelAdmin, DjangoGroupAdmin):
    """A group's permissions are every member's: only superusers change them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


admin.site.unregister(OutstandingToken)
admin.site.unregister(BlacklistedToken)


@admin.register(OutstandingToken)
class OutstandingTokenAdmin(ReadOnlyAdmin):
    """Refresh tokens by id and fingerprint only: a token value would let
    whoever reads it act as the citizen."""

    list_display = ("jti", "holder", "issued_at", "expires", "revoked")
    search_fields = ("=jti", "=user__id")
    list_select_related = ("user",)
    fields = ("jti", "holder", "fingerprint", "issued_at", "expires")
    readonly_fields = fields
    ordering = ("-created_at",)

    @admin.display(description=_("用户"), ordering="user")
    def holder(self, token: OutstandingToken) -> str:
        return str(token.user) if token.user else "-"

    @admin.display(description=_("签发时间"), ordering="created_at")
    def issued_at(self, token: OutstandingToken) -> Any:
        return token.created_at

    @admin.display(description=_("过期时间"), ordering="expires_at")
    def expires(self, token: OutstandingToken) -> Any:
        return token.expires_at

    @admin.display(description=_("指纹"))
    def fingerprint(self, token: OutstandingToken) -> str:
        return token.token if token.token.startswith("sha256:") else "-"

    @admin.display(description=_("已注销"), boolean=True)
    def revoked(self, token: OutstandingToken) -> bool:
        return hasattr(token, "blacklistedtoken")

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutstandingToken]:
        return super().get_queryset(request).select_related("user", "blacklistedtoken")


@admin.register(BlacklistedToken)
class BlacklistedTokenAdmin(ReadOnlyAdmin):
    list_display = ("token_jti", "token_user", "revoked_at")
    search_fields = ("=token__jti", "=token__user__id")
    list_select_related = ("token__user",)
    fields = ("token_jti", "token_user", "revoked_at")
    readonly_fields = fields
    ordering = ("-blacklisted_at",)

    @admin.display(description=_("注销时间"), ordering="blacklisted_at")
    def revoked_at(self, entry: BlacklistedToken) -> Any:
        return entry.blacklisted_at

    @admin.display(description="jti")
    def token_jti(self, entry: BlacklistedToken) -> str:
        return str(entry.token.jti)

    @admin.display(description=_("用户"))
    def token_user(self, entry: BlacklistedToken) -> str:
        return str(entry.token.user) if entry.token.user else "-"


# --- Login lockouts (django-axes) ----------------------------------------------------------------
# Records of logins and lockouts, to read. Deleting an attempt is the
# library's way to lift a lockout: it stays, audited like every admin
# deletion; the logs of logins and failures are evidence, never deleted here.


class LockoutRecord(AuditedModelAdmin):
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AttemptRecord(LockoutRecord):
    @admin.display(description=_("状态"))
    def status(self, obj: AccessAttempt) -> str:
        return str(AccessAttemptAdmin.status(self, obj))

    # The library's "clean up expired attempts" button answers with a server
    # error (it reads a time only a login request carries) and would delete
    # for anyone who may open the list; expired attempts are cleaned at each
    # failed login anyway. Lifting a lockout is deleting its attempt (audited).
    actions: list[str] = []


class LoginLogRecord(LockoutRecord):
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


for _model, _library_admin, _ours in (
    (AccessAttempt, AccessAttemptAdmin, AttemptRecord),
    (AccessLog, AccessLogAdmin, LoginLogRecord),
    (AccessFailureLog, AccessFailureLogAdmin, LoginLogRecord),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
        admin.site.register(_model, type(_library_admin.__name__, (_ours, _library_admin), {}))


# --- Periodic tasks (django-celery-beat) ---------------------------------------------------------
# The library's pages with Chinese labels where its own are not translatable;
# every add, change and delete audited, like the rest of the site. The
# library's buttons would switch and run tasks for anyone who may open the
# list: here they take the change permission and are audited too.


# A time on the calendar's first or last day has no bounds once put in UTC
# for the database (0001-01-01 in China time is before year 1) or no day
# after it for the scheduler: refused as the payments admin's CALENDAR
# refuses such dates, a field error rather than a server error.
CALENDAR_TIMES = [
    MinValueValidator(
        dt.datetime.combine(dt.date.min + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    ),
    MaxValueValidator(
        dt.datetime.combine(dt.date.max - dt.timedelta(days=1), dt.time.max, tzinfo=dt.UTC)
    ),
]


class TimesInTheCalendar(admin.ModelAdmin):
    """Every time on the record's form within :data:`CALENDAR_TIMES`."""

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if isinstance(db_field, models.DateTimeField) and formfield is not None:
            formfield.validators = [*formfield.validators, *CALENDAR_TIMES]
        return formfield


def _beat_label(action: str) -> Any:
    """The library's own (translated) label of one of its actions."""
    return getattr(PeriodicTaskAdmin, action).short_description


def _audited_switch(name: str, verb: str) -> Any:
    """The library's button ``name`` (enable, disable, toggle), taking the
    change permission and audited as ``verb`` with what it switched."""

    @admin.action(description=_beat_label(name), permissions=["change"])
    def switch(self: Any, request: StaffRequest, queryset: QuerySet[PeriodicTask]) -> None:
        with transaction.atomic():
            self._audit_tasks(request, queryset, verb)
            getattr(PeriodicTaskAdmin, name)(self, request, queryset)

    switch.__name__ = name
    return switch


class PeriodicTaskRecord(TimesInTheCalendar, AuditedModelAdmin, PeriodicTaskAdmin):
    # Not its arguments (a task's args and kwargs may carry anything).
    audited_values = (
        "task",
        "enabled",
        "interval",
        "crontab",
        "solar",
        "clocked",
        "one_off",
        "start_time",
        "expires",
        "expire_seconds",
        "queue",
        "priority",
    )
    list_display = (
        "name",
        "enabled",
        "schedule",
        "interval",
        "start_time",
        "last_run_at",
        "one_off",
    )
    list_filter = ["enabled", "one_off", "start_time", "last_run_at"]

    @admin.display(description=_("调度"))
    def schedule(self, task: PeriodicTask) -> str:
        return str(task.scheduler)

    @admin.display(description=_("Crontab 说明"))
    def crontab_translation(self, task: PeriodicTask) -> str:
        return str(super().crontab_translation(task))

    def get_form(self, request: Any, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        if "task" in form.base_fields:
            form.base_fields["task"].label = _("任务名称")
        return form

    def _audit_tasks(
        self, request: StaffRequest, tasks: Iterable[PeriodicTask], action: str
    ) -> None:
        for task in tasks:
            audit.audit_record(
                actor=request.user,
                action=f"admin.periodictask.{action}",
                target=task,
                data={"task": task.task, "was_enabled": task.enabled},
                ip=client_ip(request),
            )

    enable_tasks = _audited_switch("enable_tasks", "enabled")
    disable_tasks = _audited_switch("disable_tasks", "disabled")
    toggle_tasks = _audited_switch("toggle_tasks", "toggled")

    @admin.action(description=_beat_label("run_tasks"), permissions=["change"])
    def run_tasks(self, request: StaffRequest, queryset: QuerySet[PeriodicTask]) -> None:
        # The library runs all or none: none when one names an unknown task.
        self.celery_app.loader.import_default_modules()
        tasks = list(queryset)
        if all(self.celery_app.tasks.get(task.task) is not None for task in tasks):
            self._audit_tasks(request, tasks, "run")
        super().run_tasks(request, queryset)


class CrontabRecord(AuditedModelAdmin, CrontabScheduleAdmin):
    audited_values = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone")
    list_display = ("__str__", "readable")
    fields = (
        "readable",
        "minute",
        "hour",
        "day_of_month",
        "month_of_year",
        "day_of_week",
        "timezone",
    )
    readonly_fields = ("readable",)

    @admin.display(description=_("可读形式"))
    def readable(self, crontab: CrontabSchedule) -> str:
        return str(crontab.human_readable)


for _model, _ours in ((PeriodicTask, PeriodicTaskRecord), (CrontabSchedule, CrontabRecord)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _ours)

for _schedule, _schedule_admin in (
    (IntervalSchedule, IntervalScheduleAdmin),
    (SolarSchedule, SolarScheduleAdmin),
    (ClockedSchedule, ClockedScheduleAdmin),
):
    if admin.site.is_registered(_schedule):
        admin.site.unregister(_schedule)
    admin.site.register(
        _schedule,
        type(
            _schedule_admin.__name__,
            (TimesInTheCalendar, AuditedModelAdmin, _schedule_admin),
            {},
        ),
    )

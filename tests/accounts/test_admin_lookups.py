"""A list in the admin filters by what its filters offer, nothing else: a
query string that filters on another field (``?phone__startswith=1381``)
would let the count of matches spell out a value every page masks."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db.models.constants import LOOKUP_SEP
from django.urls import reverse

from accounts.admin_site import ListedLookupsOnly
from accounts.models import AuditEntry
from services.models import Delivery
from tests.accounts.factories import StaffFactory

pytestmark = pytest.mark.django_db


def test_a_clerk_cannot_guess_a_masked_phone_from_the_list(client, citizen) -> None:
    clerk = StaffFactory()
    clerk.user_permissions.add(*Permission.objects.filter(codename="view_user"))
    client.force_login(clerk)
    assert client.get("/admin/accounts/user/").status_code == 200
    for guess in ("1", citizen.phone[:4], citizen.phone):
        response = client.get("/admin/accounts/user/", {"phone__startswith": guess})
        assert response.status_code == 400, guess
        assert citizen.phone not in response.content.decode()
    assert client.get("/admin/accounts/user/", {"email__contains": "@"}).status_code == 400
    assert not AuditEntry.objects.filter(action="user.pii_viewed").exists()


@pytest.mark.parametrize(
    ("path", "lookup"),
    [
        ("accounts/otpchallenge", "phone__startswith"),
        ("payments/refund", "reason__contains"),
        ("payments/notifylog", "body_excerpt__contains"),
        ("services/endpoint", "url__contains"),
    ],
)
def test_other_lists_refuse_lookups_on_what_they_do_not_filter(operator_client, path, lookup):
    assert operator_client.get(f"/admin/{path}/").status_code == 200
    assert operator_client.get(f"/admin/{path}/", {lookup: "1"}).status_code == 400


def registered() -> list[tuple[type, admin.ModelAdmin]]:
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def test_every_list_of_the_site_follows_the_rule() -> None:
    assert all(isinstance(model_admin, ListedLookupsOnly) for _, model_admin in registered())


def test_a_list_may_name_more_lookups_its_pages_link_to(operator_client) -> None:
    """An admin's own ``lookups_allowed`` counts (the rule's class comes first
    in every admin's MRO and must not hide it)."""
    delivery_admin = admin.site._registry[Delivery]
    assert delivery_admin.lookups_allowed == ("created_at", "endpoint")
    assert delivery_admin.lookup_allowed("created_at__gte", "2026-01-01", None)
    url = "/admin/services/delivery/"
    week = "2026-01-01T00:00:00+08:00"
    assert operator_client.get(url, {"created_at__gte": week}).status_code == 200
    assert operator_client.get(url, {"last_error__contains": "x"}).status_code == 400


def test_every_list_still_takes_its_own_filters_and_refuses_the_rest(operator_client) -> None:
    """For every list: a lookup on each field its filters name is taken; a
    lookup on a field of the model no filter names is refused."""
    refused, taken, checked = [], [], 0
    for model, model_admin in registered():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        filtered = {
            (item if isinstance(item, str) else item[0]).split(LOOKUP_SEP)[0]
            for item in model_admin.list_filter
            if isinstance(item, str | list | tuple)
        }
        if model_admin.date_hierarchy:
            filtered.add(model_admin.date_hierarchy)
        for name in sorted(filtered):
            checked += 1
            if operator_client.get(url, {f"{name}__isnull": "False"}).status_code != 200:
                refused.append(f"{url}?{name}__isnull")
        others = [
            f.name
            for f in model._meta.concrete_fields
            if not f.is_relation and not f.primary_key and f.name not in filtered
        ]
        allowed = getattr(model_admin, "lookups_allowed", ())
        others = [name for name in others if name not in allowed]
        if others:
            checked += 1
            if operator_client.get(url, {f"{others[0]}__isnull": "False"}).status_code != 400:
                taken.append(f"{url}?{others[0]}__isnull")
    assert (refused, taken) == ([], [])
    assert checked > 40


@pytest.mark.parametrize(
    ("path", "lookup"),
    [
        ("services/application", "created_at__gte"),
        ("services/delivery", "created_at__gte"),
        ("services/outboxevent", "created_at__gte"),
        ("accounts/message", "created_at__gte"),
        ("accounts/auditentry", "at__gte"),
    ],
)
def test_a_time_at_the_calendars_ends_is_a_lookup_the_list_cannot_take(
    operator_client, path, lookup
) -> None:
    """0001-01-01 in China time is before year 1 in UTC, which a database
    without time zones (SQLite) is sent: answered as a bad lookup (back to
    the list, ``?e=1``), not a server error. PostgreSQL takes the time."""
    for value in ("0001-01-01T00:00:00+08:00", "0001-01-01T07:59:59+08:00"):
        response = operator_client.get(f"/admin/{path}/", {lookup: value})
        assert response.status_code in (200, 302), value
        if response.status_code == 302:
            assert response["Location"].endswith("?e=1")
    end = "9999-12-31T23:59:59+08:00"
    assert operator_client.get(f"/admin/{path}/", {lookup: end}).status_code == 200


@pytest.mark.parametrize("path", ["services/application", "services/delivery", "accounts/message"])
@pytest.mark.parametrize(
    "lookup",
    [
        {"created_at__year": "99999"},
        {"created_at__year": "9999"},  # the date hierarchy works out the year after
        {"created_at__year__gte": "10000"},
        {"created_at__iso_year": "0"},
    ],
)
def test_a_year_the_calendar_has_not_is_a_lookup_the_list_cannot_take(
    operator_client, path, lookup
) -> None:
    """A year past 9999 (or before 1) has no first and last instant to
    compare with: answered as a bad lookup (``?e=1``), not a server error."""
    response = operator_client.get(f"/admin/{path}/", lookup)
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")
    assert operator_client.get(f"/admin/{path}/", {"created_at__year": "2026"}).status_code == 200


def test_a_search_of_a_thousand_words_is_refused_before_the_database(operator_client) -> None:
    """Each word of a search is one more condition on every search field: a
    page of words made a query SQLite cannot parse (a 500) and PostgreSQL
    worked on for minutes. A search is a few words; more is refused (400)."""
    words = " ".join(f"w{n}" for n in range(1200))
    for path in ("accounts/user", "payments/paymentorder", "services/service"):
        response = operator_client.get(f"/admin/{path}/", {"q": words})
        assert response.status_code == 400, path
        assert operator_client.get(f"/admin/{path}/", {"q": "a b c"}).status_code == 200
    picker = {"app_label": "qr", "model_name": "scannerprofile", "field_name": "api_key"}
    assert operator_client.get("/admin/autocomplete/", {**picker, "term": words}).status_code == 400
    assert (
        operator_client.get("/admin/autocomplete/", {**picker, "term": "闸机"}).status_code == 200
    )

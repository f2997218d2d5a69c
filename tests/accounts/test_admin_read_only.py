"""A Save button only where there is something to save: every admin page
that lets an operator change a record has at least one field or inline to
change; records kept for reading (applications, deliveries, orders, logs,
lockouts …) open as read-only pages."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import RequestFactory

pytestmark = pytest.mark.django_db

RECORDS_TO_READ = {
    "accounts.Message",
    "accounts.OtpChallenge",
    "accounts.AuditEntry",
    "services.Application",
    "services.Endpoint",
    "services.OutboxEvent",
    "services.Delivery",
    "payments.PaymentOrder",
    "payments.LedgerEntry",
    "payments.Refund",
    "payments.NotifyLog",
    "payments.ReconciliationReport",
    "payments.ReconciliationMismatch",
    "qr.SigningKey",
    "qr.VenueCode",
    "qr.ScanEvent",
    "token_blacklist.OutstandingToken",
    "token_blacklist.BlacklistedToken",
    "axes.AccessAttempt",
    "axes.AccessLog",
    "axes.AccessFailureLog",
}


def test_every_change_page_has_something_to_change(operator) -> None:
    request = RequestFactory().get("/admin/")
    request.user = operator
    nothing_to_save = []
    read_only = set()
    for model, model_admin in admin.site._registry.items():
        obj = model()
        if not model_admin.has_change_permission(request, obj):
            read_only.add(model._meta.label)
            continue
        shown = []
        for name in model_admin.get_fields(request, obj):
            shown += list(name) if isinstance(name, list | tuple) else [name]
        fixed = set(model_admin.get_readonly_fields(request, obj))
        inlines = [
            inline
            for inline in model_admin.get_inline_instances(request, obj)
            if inline.has_change_permission(request, obj) or inline.has_add_permission(request, obj)
        ]
        if not inlines and all(name in fixed for name in shown):
            nothing_to_save.append(model._meta.label)
    assert nothing_to_save == []
    assert RECORDS_TO_READ - read_only == set()

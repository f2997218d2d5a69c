"""The lists of tables that grow without end (messages, scans, the audit
trail, callbacks, events, orders, the ledger, refunds, deliveries) read
only the page they show: no count of the whole table next to the page's
own, no first and last date of the table (a date hierarchy), no distinct
values of a column read from every row (a filter on a field without
choices). Dates are picked from a fixed list, as on the applications' list."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db

BIG_LISTS = [
    "accounts/message",
    "accounts/auditentry",
    "qr/scanevent",
    "payments/notifylog",
    "payments/paymentorder",
    "payments/ledgerentry",
    "payments/refund",
    "services/outboxevent",
    "services/delivery",
    "services/application",
]


def _whole_table_reads(sql: list[str]) -> list[str]:
    counts = [q for q in sql if re.search(r"\bCOUNT\(", q, re.IGNORECASE)]
    return [
        *counts[1:],  # the page's own count is one; a second is the table's
        *(q for q in sql if re.search(r"\bDISTINCT\b", q, re.IGNORECASE)),
        *(q for q in sql if re.search(r"\b(MIN|MAX)\(", q, re.IGNORECASE)),
    ]


@pytest.mark.parametrize("path", BIG_LISTS)
def test_a_big_list_reads_only_the_page_it_shows(operator_client, path) -> None:
    operator_client.get(f"/admin/{path}/")  # the session's and site's first reads
    with CaptureQueriesContext(connection) as queries:
        response = operator_client.get(f"/admin/{path}/")
    assert response.status_code == 200
    assert _whole_table_reads([q["sql"] for q in queries.captured_queries]) == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("accounts/message", "created_at"),
        ("accounts/auditentry", "at"),
        ("qr/scanevent", "scanned_at"),
        ("payments/notifylog", "received_at"),
        ("payments/paymentorder", "created_at"),
        ("payments/ledgerentry", "at"),
        ("payments/refund", "created_at"),
        ("services/outboxevent", "created_at"),
    ],
)
def test_dates_are_picked_from_a_list_and_the_dashboards_links_still_filter(
    operator_client, path, field
) -> None:
    page = operator_client.get(f"/admin/{path}/").content.decode()
    assert f"{field}__gte=" in page  # the date filter's "today", "past 7 days" …
    week = {
        f"{field}__gte": "2026-01-01T00:00:00+08:00",
        f"{field}__lt": "2026-01-08T00:00:00+08:00",
    }
    assert operator_client.get(f"/admin/{path}/", week).status_code == 200


@pytest.mark.parametrize(
    ("path", "lookup", "value"),
    [
        ("accounts/message", "kind__exact", "payment.succeeded"),
        ("payments/notifylog", "channel__exact", "wechat"),
        ("services/outboxevent", "type__exact", "application.submitted"),
        ("services/delivery", "event__type__exact", "application.submitted"),
        ("accounts/auditentry", "target_type__exact", "accounts.user"),
    ],
)
def test_a_filter_offers_its_values_without_reading_the_table(
    operator_client, path, lookup, value
) -> None:
    page = operator_client.get(f"/admin/{path}/").content.decode()
    assert f"?{lookup}={value}" in page
    assert operator_client.get(f"/admin/{path}/", {lookup: value}).status_code == 200

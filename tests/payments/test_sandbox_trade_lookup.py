"""The sandbox cashier finds a trade by its channel and order number alone
(its address names no merchant). The trades' unique index leads with the
merchant after the channel, so PostgreSQL answered that lookup by reading
every entry of the channel: each payment of the payments benchmark read a
third of the index, and seeding its orders grew with their square."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from payments.models import SandboxTrade
from payments.sandbox import books

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

TRADES = 20000


def seeded() -> None:
    """TRADES unpaid trades of one channel and merchant, and statistics."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SandboxTrade._meta.db_table} (channel, merchant_id, app_id, order_no,"
            " transaction_id, amount_fen, description, notify_url, state, expires_at,"
            " notify_attempts, created_at)"
            " SELECT 'wechat', '1900000109', 'wxd678efh567hg6787', 'CS2026120' || lpad(i::text, 7, '0'),"
            " 'SBX' || i, 100, 'x', 'http://127.0.0.1/notify', 'NOTPAY',"
            " now() + interval '1 hour', 0, now() FROM generate_series(1, %s) i",
            [TRADES],
        )
        cursor.execute(f"ANALYZE {SandboxTrade._meta.db_table}")


def index_pages_read(sql: str) -> tuple[list[str], int]:
    """The indexes ``sql`` read SandboxTrade's rows by, and the pages it touched."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
        found = cursor.fetchone()[0]
    root: dict[str, Any] = (json.loads(found) if isinstance(found, str) else found)[0]["Plan"]
    stack, indexes = [root], []
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == SandboxTrade._meta.db_table:
            indexes.append(node.get("Index Name", node["Node Type"]))
        stack.extend(node.get("Plans", []))
    return indexes, root["Shared Hit Blocks"] + root["Shared Read Blocks"]


def test_the_cashier_finds_a_trade_without_reading_its_channel() -> None:
    seeded()
    order_no = f"CS2026120{TRADES // 2:07d}"
    with CaptureQueriesContext(connection) as captured:
        trade = books.trade_pay(channel="wechat", order_no=order_no, succeed=True)
    assert trade.state == "SUCCESS"
    (lookup,) = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith("SELECT") and f'"{SandboxTrade._meta.db_table}"' in q["sql"]
    ]
    indexes, pages = index_pages_read(lookup)
    assert indexes == ["sandbox_trade_order"], indexes
    # A root, a leaf or two and the row's page: not the channel's ~100 leaves.
    assert pages <= 8, pages

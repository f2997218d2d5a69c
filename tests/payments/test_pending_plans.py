"""The payments' questions about one row (one callback, one application's
open order, one refund) must be answered by looking that row up, never by
reading every row of a status along the status's index: asked once per
callback, per order opened, per charge and per refund, that is the whole
backlog each time.

PostgreSQL did read them all when its statistics were older than the
backlog: taken when few callbacks waited, few orders were open or few
refunds pending (or before there were any), they make a walk along
notify_to_apply, payment_status_due or refund_status_due look as cheap as
the lookup. The tests make that case: statistics taken when every row had
left that status, then a burst that none of them has seen."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Model, Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from payments import notifications, orders, refunds, selectors
from payments.models import (
    NotifyLog,
    NotifyOutcome,
    OrderStatus,
    PaymentOrder,
    Refund,
    RefundStatus,
)
from payments.providers.base import ProviderError
from services import applications
from tests.payments.conftest import FEE, open_order
from tests.services.conftest import GOOD_FORM

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

SETTLED = 3000
BURST = 3000


# --- Rows made by SQL ------------------------------------------------------------------------


def made(n: int, **extra: str) -> None:
    """The temporary table ``made``: ``n`` rows of a fresh uuid ``id``,
    their number ``i`` (1 to ``n``) and the ``extra`` columns (SQL)."""
    more = "".join(f", {sql} AS {name}" for name, sql in extra.items())
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS made")
        cursor.execute(
            f"CREATE TEMP TABLE made AS SELECT gen_random_uuid() AS id, i{more} "
            "FROM generate_series(1, %s) i",
            [n],
        )


def copies(model: Model, columns: dict[str, str]) -> None:
    """A row like ``model`` for each row of ``made``: each column as the
    model's, but those ``columns`` gives SQL for (of ``made``'s columns).
    A primary key ``columns`` does not give is the table's own."""
    meta = type(model)._meta
    fields = [f.column for f in meta.concrete_fields if f.column in columns or not f.primary_key]
    values = [columns.get(column, f"m.{column}") for column in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {meta.db_table} ({', '.join(fields)}) SELECT {', '.join(values)} "
            f"FROM made, {meta.db_table} m WHERE m.{meta.pk.column} = %s",
            [model.pk],
        )


def analyze(*tables: str) -> None:
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {table}")


# --- Plans ------------------------------------------------------------------------------------


def statements(run: Callable[[], Any], table: str) -> list[str]:
    """The statements ``run`` sent that name ``table``."""
    with CaptureQueriesContext(connection) as captured:
        run()
    return [q["sql"] for q in captured.captured_queries if f'"{table}"' in q["sql"]]


def plan(sql: str) -> dict[str, Any]:
    """The plan PostgreSQL runs for ``sql``, and what it read."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        found = cursor.fetchone()[0]
    return (json.loads(found) if isinstance(found, str) else found)[0]["Plan"]


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def read(node: dict[str, Any]) -> int:
    """Rows a scan read: those it gave on and those it read and dropped."""
    per_loop = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
    return (per_loop + node.get("Rows Removed by Index Recheck", 0)) * node["Actual Loops"]


def scans_of(sql: str, table: str) -> tuple[int, list[str]]:
    """Rows ``sql`` read of ``table``, in all, and how: the indexes, or the
    kind of scan."""
    found = [n for n in nodes(plan(sql)) if n.get("Relation Name") == table]
    assert found, sql
    return sum(read(n) for n in found), [n.get("Index Name", n["Node Type"]) for n in found]


# --- A callback waiting to be applied ------------------------------------------------------


@pytest.fixture
def waiting_callbacks() -> NotifyLog:
    """SETTLED callbacks applied, the statistics taken, then BURST received
    ones; returns one received before them all (for an order we do not
    have: it is rejected when applied)."""
    result = {
        "order_no": "P20260101NOSUCHORDER0001",
        "state": "paid",
        "transaction_id": "4200000000000000000000000001",
        "amount_fen": FEE,
        "merchant_id": "",
        "app_id": "",
        "paid_at": None,
        "raw_state": "SUCCESS",
    }
    model = NotifyLog.objects.create(
        channel="wechat",
        outcome=NotifyOutcome.ACCEPTED,
        order_no=result["order_no"],
        transaction_id=result["transaction_id"],
        body_excerpt='{"event_type": "TRANSACTION.SUCCESS"}',
        result=result,
        handled_at=timezone.now(),
    )
    made(SETTLED)
    copies(model, {"received_at": "now() - interval '1 second' * made.i"})
    analyze("payments_notifylog")
    made(BURST)
    copies(
        model,
        {
            "outcome": f"'{NotifyOutcome.RECEIVED}'",
            "handled_at": "NULL",
            "received_at": "now() - interval '1 millisecond' * made.i",
        },
    )
    return NotifyLog.objects.create(
        channel="wechat",
        outcome=NotifyOutcome.RECEIVED,
        received_at=timezone.now() - dt.timedelta(minutes=5),
        order_no=result["order_no"],
        transaction_id=result["transaction_id"],
        result=result,
    )


def test_a_worker_claims_a_callback_by_its_id(waiting_callbacks) -> None:
    """The drain takes the oldest received callback first: the one that
    a walk back along notify_to_apply reaches last."""
    claims = [
        sql
        for sql in statements(
            lambda: notifications.notifies_apply_waiting(limit=1), "payments_notifylog"
        )
        if "FOR UPDATE" in sql
    ]
    assert len(claims) == 1, claims
    read, indexes = scans_of(claims[0], "payments_notifylog")
    assert indexes == ["payments_notifylog_pkey"], indexes
    assert read == 1, read
    waiting_callbacks.refresh_from_db()
    assert waiting_callbacks.outcome == NotifyOutcome.REJECTED  # applied: no such order
    assert NotifyLog.objects.filter(outcome=NotifyOutcome.RECEIVED).count() == BURST


def test_received_said_as_no_other_outcome_is_received(waiting_callbacks) -> None:
    assert set(NotifyOutcome.not_received()) == set(NotifyOutcome.values) - {NotifyOutcome.RECEIVED}
    for outcome in NotifyOutcome.not_received():
        NotifyLog.objects.create(channel="alipay", outcome=outcome)
    assert set(NotifyLog.objects.values_list("outcome", flat=True)) == set(NotifyOutcome.values)
    received = NotifyLog.objects.filter(outcome=NotifyOutcome.RECEIVED)
    said = NotifyLog.objects.filter(~Q(outcome__in=NotifyOutcome.not_received()))
    assert set(said.values_list("pk", flat=True)) == set(received.values_list("pk", flat=True))
    assert said.count() == BURST + 1


# --- An application's open order ------------------------------------------------------------


def number(column: str) -> str:
    """32 characters of a uuid of ``made``: an order's, a refund's or an
    application's number."""
    return f"replace(made.{column}::text, '-', '')"


def orders_made(model: PaymentOrder, n: int, status: str, *, own_applications: bool = True) -> None:
    """``n`` orders like ``model`` in ``status``, the oldest first, each of
    an application of its own (like ``model``'s), or without
    ``own_applications`` all of ``model``'s (as far as its one open order
    allows)."""
    made(n, application_id="gen_random_uuid()" if own_applications else "NULL::uuid")
    if own_applications:
        copies(model.application, {"id": "made.application_id", "number": number("application_id")})
    copies(
        model,
        {
            "id": "made.id",
            "order_no": number("id"),
            "application_id": "made.application_id" if own_applications else "m.application_id",
            "status": f"'{status}'",
            "created_at": f"now() - interval '1 second' * ({n} - made.i)",
        },
    )


@pytest.fixture
def paid_order(citizen, fee_service) -> PaymentOrder:
    """An order paid for an application of the citizen's: what the rows
    made by SQL are copied from."""
    application = applications.application_submit(
        citizen=citizen, service=fee_service, form=GOOD_FORM
    )
    now = timezone.now()
    return PaymentOrder.objects.create(
        order_no="P20260101PAIDMODEL000001",
        application=application,
        payer=citizen,
        department=application.department,
        service=application.service,
        description=application.service.name,
        amount_fen=FEE,
        channel="wechat",
        status=OrderStatus.PAID,
        checkout={"code_url": "weixin://wxpay/bizpayurl?pr=AbCdEfGhI"},
        provider_transaction_id="4200000000000000000000000002",
        paid_fen=FEE,
        expires_at=now + dt.timedelta(minutes=30),
        paid_at=now,
    )


@pytest.fixture
def open_orders(paid_order) -> PaymentOrder:
    """SETTLED paid orders, the statistics taken, then BURST open ones,
    each of an application of its own."""
    orders_made(paid_order, SETTLED, OrderStatus.PAID)
    analyze("payments_paymentorder", "services_application")
    orders_made(paid_order, BURST, OrderStatus.PENDING)
    return paid_order


def of_application(sql: str) -> bool:
    """The question "which orders of this application are open?"."""
    _, _, where = sql.partition(" WHERE ")
    return '"payments_paymentorder"."application_id" =' in where and '"status"' in where


def application_looked_up(sql: str, at_most: int) -> None:
    read, indexes = scans_of(sql, "payments_paymentorder")
    assert "payment_status_due" not in indexes, (read, indexes)
    assert read <= at_most, (read, indexes)


def test_opening_an_order_looks_the_applications_open_order_up(
    open_orders, citizen_api, awaiting
) -> None:
    def opening() -> None:
        # Undone, so that the question is explained as it was asked: before
        # the order was opened.
        with transaction.atomic():
            open_order(citizen_api, awaiting)
            transaction.set_rollback(True)

    asked = [sql for sql in statements(opening, "payments_paymentorder") if of_application(sql)]
    assert len(asked) == 1, asked
    application_looked_up(asked[0], at_most=0)


def test_a_payment_looks_the_applications_other_open_orders_up(
    open_orders, citizen_api, awaiting, pay
) -> None:
    left = open_order(citizen_api, awaiting, "wechat")
    taken = open_order(citizen_api, awaiting, "alipay")  # the first is closed
    asked = [
        sql
        for sql in statements(lambda: pay(taken), "payments_paymentorder")
        if of_application(sql) and "FOR UPDATE" in sql
    ]
    assert len(asked) == 1, asked
    application_looked_up(asked[0], at_most=2)
    assert PaymentOrder.objects.get(pk=left["id"]).status == OrderStatus.CLOSED
    assert PaymentOrder.objects.get(pk=taken["id"]).status == OrderStatus.PAID


def test_a_withdrawal_looks_the_applications_open_orders_up(
    open_orders, citizen_api, awaiting, django_capture_on_commit_callbacks
) -> None:
    order = open_order(citizen_api, awaiting)

    def withdraw() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            response = citizen_api.post(f"/api/v1/applications/{awaiting['id']}/cancel/", {})
        assert response.status_code == 200, response.json()

    asked = [sql for sql in statements(withdraw, "payments_paymentorder") if of_application(sql)]
    assert asked, asked
    for sql in asked:
        application_looked_up(sql, at_most=1)
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.CLOSED


def test_the_open_order_is_found_among_the_applications_orders(open_orders) -> None:
    """Pending said as none of the other statuses: the same orders, of
    every status there is."""
    assert set(OrderStatus.not_pending()) == set(OrderStatus.values) - {OrderStatus.PENDING}
    some = PaymentOrder.objects.filter(status=OrderStatus.PAID).values_list("pk", flat=True)
    others = [s for s in OrderStatus.not_pending() if s != OrderStatus.PAID]
    for status, pk in zip(others, some[: len(others)], strict=True):
        PaymentOrder.objects.filter(pk=pk).update(status=status)
    assert set(PaymentOrder.objects.values_list("status", flat=True)) == set(OrderStatus.values)
    pending = PaymentOrder.objects.filter(status=OrderStatus.PENDING)
    said = PaymentOrder.objects.filter(selectors.pending_as_filter(OrderStatus))
    assert set(said.values_list("pk", flat=True)) == set(pending.values_list("pk", flat=True))
    assert said.count() == BURST
    one = pending.first()
    assert one is not None
    assert selectors.open_order_id(one.application_id) == one.pk
    assert selectors.open_order_id(open_orders.application_id) is None
    assert orders.orders_close_open(application_id=one.application_id, reason="test") == 1


# --- A refund the channel could not take yet ----------------------------------------------


def refunds_made(model: Refund, n: int, status: str, **columns: str) -> None:
    """``n`` refunds like ``model`` in ``status``, the oldest first, each
    of a paid order of its own (made too)."""
    orders_made(model.order, n, OrderStatus.PAID)
    copies(
        model,
        {
            "id": "made.id",
            "refund_no": number("id"),
            "order_id": "made.id",
            "status": f"'{status}'",
            "created_at": f"now() - interval '1 second' * ({n} - made.i)",
            **columns,
        },
    )


@pytest.fixture
def settled_refund(paid_order) -> Refund:
    """A refund of :func:`paid_order`, settled: what the refunds made by
    SQL are copied from."""
    return Refund.objects.create(
        refund_no="R20260101REFUNDMODEL0001",
        order=paid_order,
        amount_fen=500,
        reason="部分退费",
        status=RefundStatus.SUCCEEDED,
        requested_by="hrss",
        submitted_at=timezone.now(),
        succeeded_at=timezone.now(),
    )


@pytest.fixture
def pending_refunds(settled_refund) -> None:
    """SETTLED refunds settled, the statistics taken, then BURST pending ones."""
    refunds_made(settled_refund, SETTLED, RefundStatus.SUCCEEDED)
    analyze("payments_refund", "payments_paymentorder", "services_application")
    refunds_made(settled_refund, BURST, RefundStatus.PENDING, succeeded_at="NULL")


class Unreachable:
    def refund_create(self, **kwargs: Any) -> Any:
        raise ProviderError("channel unreachable", retryable=True)


def test_a_refund_the_channel_could_not_take_is_marked_by_its_id(
    pending_refunds,
    citizen_api,
    awaiting,
    pay,
    integrator_api,
    monkeypatch,
    django_capture_on_commit_callbacks,
) -> None:
    order = pay(open_order(citizen_api, awaiting))
    monkeypatch.setattr(orders, "provider", lambda channel: Unreachable())

    def refunding() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            response = integrator_api.post(
                f"/api/v1/dept/payments/{order.order_no}/refunds/",
                {"amount_fen": 500, "reason": "部分退费"},
                format="json",
            )
        assert response.status_code in (201, 202), response.json()

    marked = [
        sql
        for sql in statements(refunding, "payments_refund")
        if sql.startswith("UPDATE") and '"failure_reason"' in sql
    ]
    assert len(marked) == 1, marked
    read, indexes = scans_of(marked[0], "payments_refund")
    assert indexes == ["ModifyTable", "payments_refund_pkey"], indexes
    assert read == 1, read
    refund = Refund.objects.get(order=order)
    assert (refund.status, refund.failure_reason) == (RefundStatus.PENDING, "channel unreachable")


def test_a_pending_refund_is_found_as_none_of_the_other_statuses(pending_refunds) -> None:
    assert set(RefundStatus.not_pending()) == set(RefundStatus.values) - {RefundStatus.PENDING}
    Refund.objects.filter(pk=Refund.objects.filter(status=RefundStatus.SUCCEEDED)[:1]).update(
        status=RefundStatus.FAILED
    )
    assert set(Refund.objects.values_list("status", flat=True)) == set(RefundStatus.values)
    pending = Refund.objects.filter(status=RefundStatus.PENDING)
    said = Refund.objects.filter(selectors.pending_as_filter(RefundStatus))
    assert set(said.values_list("pk", flat=True)) == set(pending.values_list("pk", flat=True))
    assert said.count() == BURST


# --- The sweep of sent refunds ----------------------------------------------------------------

# Paid orders, and refunds sent to their channels: one for every hundred
# orders, as at 100,000 and 1,000, where the join of the sent refunds to
# their orders read every order into a hash (59 ms a sweep). Here the
# planner joins so up to about one sent refund for 160 orders.
ORDERS = 30_000
SENT = 300


@pytest.fixture
def sent_refunds(settled_refund) -> None:
    """ORDERS paid orders and SENT refunds sent to their channels, each of
    an order of its own, and statistics that say so."""
    orders_made(settled_refund.order, ORDERS, OrderStatus.PAID, own_applications=False)
    refunds_made(settled_refund, SENT, RefundStatus.PENDING, succeeded_at="NULL")
    analyze("payments_refund", "payments_paymentorder", "services_application")


def test_the_sweep_looks_the_sent_refunds_orders_up(sent_refunds, monkeypatch) -> None:
    asked: list[Refund] = []

    def check(refund: Refund) -> tuple[bool, bool]:
        asked.append(refund)
        return True, False  # settled; its channel not down

    monkeypatch.setattr(refunds, "_check", check)
    found = statements(refunds.refunds_sweep, "payments_paymentorder")
    assert len(asked) == 200  # the sweep's batch, each with its own order
    assert all(refund.order.pk == refund.order_id for refund in asked)
    assert all(refund.order.order_no == refund.refund_no for refund in asked)
    assert found, found
    for sql in found:
        read, scans = scans_of(sql, "payments_paymentorder")
        assert "Seq Scan" not in scans, (scans, sql)
        assert read <= 200, (read, sql)
        indexes = {n["Index Name"] for n in nodes(plan(sql)) if "Index Name" in n}
        assert indexes == {"payments_paymentorder_pkey"}, (indexes, sql)

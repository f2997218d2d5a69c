"""Reads of payment orders and refunds, for the APIs, events, admin and exports."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounts.models import Department, User
from config.queries import equal_unindexed
from payments.models import (
    EntryKind,
    LedgerEntry,
    OrderStatus,
    PaymentOrder,
    Refund,
    RefundStatus,
)


def yuan(fen: int | None, *, grouped: bool = False) -> str:
    """Integer fen as yuan with two decimals: ``-1234`` → ``-12.34`` (with
    ``grouped``, thousands separated: ``1,234.00``); ``-`` for none."""
    if fen is None:
        return "-"
    sign = "-" if fen < 0 else ""
    whole = f"{abs(fen) // 100:,}" if grouped else str(abs(fen) // 100)
    return f"{sign}{whole}.{abs(fen) % 100:02d}"


def refunds_reserved_fen(order: PaymentOrder) -> int:
    """What the order's refunds take or may still take (all but failed
    ones): what counts against the paid amount when another is asked for."""
    total = order.refunds.exclude(status=RefundStatus.FAILED).aggregate(total=Sum("amount_fen"))
    return int(total["total"] or 0)


def _iso(value: dt.datetime | None) -> str | None:
    return timezone.localtime(value).isoformat() if value is not None else None


def orders_of(citizen: User) -> QuerySet[PaymentOrder]:
    return PaymentOrder.objects.filter(payer=citizen).select_related("application")


def order_of(citizen: User, order_id: Any) -> PaymentOrder | None:
    """The citizen's own order, or None (another's is not found)."""
    return orders_of(citizen).filter(pk=order_id).first()


def orders_for_department(
    department: Department,
    *,
    status: str | None = None,
    channel: str | None = None,
    date: dt.date | None = None,
) -> QuerySet[PaymentOrder]:
    """A department's orders, newest first; ``date`` is the day (China time)
    the order was opened."""
    orders = PaymentOrder.objects.filter(department=department).select_related(
        "application", "service"
    )
    if status:
        orders = orders.filter(status=status)
    if channel:
        orders = orders.filter(channel=channel)
    if date is not None:
        start, end = day_bounds(date)
        orders = orders.filter(created_at__gte=start, created_at__lt=end)
    return orders


def order_for_department(department: Department, order_no: str) -> PaymentOrder | None:
    return (
        PaymentOrder.objects.filter(department=department, order_no=order_no)
        .select_related("application", "service")
        .first()
    )


def refunds_of(order: PaymentOrder) -> QuerySet[Refund]:
    """The order's refunds, newest first; those made at one time by id, so
    that each is on one page of the list only."""
    return order.refunds.order_by("-created_at", "-id")


def refund_view(refund: Refund) -> dict[str, Any]:
    return {
        "id": str(refund.id),
        "refund_no": refund.refund_no,
        "order_no": refund.order.order_no,
        "amount_fen": refund.amount_fen,
        "currency": "CNY",
        "reason": refund.reason,
        "status": refund.status,
        "created_at": _iso(refund.created_at),
        "succeeded_at": _iso(refund.succeeded_at),
    }


def payment_view(order: PaymentOrder) -> dict[str, Any]:
    """An order as its department sees it, in the department API and in
    ``payment.*`` events alike (DESIGN §6: ``data.payment``)."""
    return {
        "order_no": order.order_no,
        "application": order.application.number,
        "service": order.service.code,
        "amount_fen": order.amount_fen,
        "currency": order.currency,
        "channel": order.channel,
        "status": order.status,
        "paid_fen": order.paid_fen,
        "refunded_fen": order.refunded_fen,
        "transaction_id": order.provider_transaction_id,
        "created_at": _iso(order.created_at),
        "paid_at": _iso(order.paid_at),
    }


def payments_export(citizen: User) -> dict[str, Any]:
    """The citizen's orders and their refunds, for ``GET /api/v1/me/export/``."""
    orders = orders_of(citizen).select_related("service").prefetch_related("refunds")
    return {
        "orders": [
            {
                "id": str(order.id),
                **payment_view(order),
                "expires_at": _iso(order.expires_at),
                "refunds": [refund_view(r) for r in order.refunds.all()],
            }
            for order in orders.order_by("created_at")
        ]
    }


def pending_as_filter(statuses: type[OrderStatus] | type[RefundStatus]) -> Q:
    """Pending, as a filter on the rows a lookup by key finds (an
    application's orders, a refund), never along payment_status_due or
    refund_status_due (10 ms instead of 0.1 ms for each order opened or paid
    under stale statistics): see :func:`config.queries.equal_unindexed`."""
    return equal_unindexed("status", statuses.PENDING)


def open_orders(application_id: Any) -> QuerySet[PaymentOrder]:
    """The application's open orders (at most one: a partial unique index),
    found among the application's orders (see :func:`pending_as_filter`)."""
    return PaymentOrder.objects.filter(
        pending_as_filter(OrderStatus), application_id=application_id
    )


def open_order_id(application_id: Any) -> Any:
    """The id of the application's open order, or None. Read it after
    locking the application, in a statement of its own: a subquery of the
    locking statement would see the snapshot taken before the lock was
    granted, not the order another transaction opened meanwhile."""
    return open_orders(application_id).values_list("pk", flat=True).first()


# --- Money by day ---------------------------------------------------------------------------

CHINA = ZoneInfo("Asia/Shanghai")


def china_today() -> dt.date:
    return timezone.now().astimezone(CHINA).date()


def day_bounds(date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The first instant of ``date`` in China time and of the day after."""
    start = dt.datetime.combine(date, dt.time.min, tzinfo=CHINA)
    return start, dt.datetime.combine(date + dt.timedelta(days=1), dt.time.min, tzinfo=CHINA)


def settlement_rows(
    *,
    date_from: dt.date,
    date_to: dt.date,
    department: Department | None = None,
    channel: str | None = None,
) -> list[dict[str, Any]]:
    """Money in and out per day (China time) and channel, from the ledger:
    ``{date, channel, paid_fen, paid_count, refunded_fen, refunded_count, net_fen}``."""
    start, _ = day_bounds(date_from)
    _, end = day_bounds(date_to)
    entries = LedgerEntry.objects.filter(at__gte=start, at__lt=end)
    if department is not None:
        entries = entries.filter(order__department=department)
    if channel:
        entries = entries.filter(channel=channel)
    grouped = (
        entries.annotate(day=TruncDate("at", tzinfo=CHINA))
        .values("day", "channel", "kind")
        .annotate(total=Sum("amount_fen"), count=Count("id"))
        .order_by("day", "channel", "kind")
    )
    rows: dict[tuple[dt.date, str], dict[str, Any]] = {}
    for group in grouped:
        row = rows.setdefault(
            (group["day"], group["channel"]),
            {
                "date": group["day"],
                "channel": group["channel"],
                "paid_fen": 0,
                "paid_count": 0,
                "refunded_fen": 0,
                "refunded_count": 0,
            },
        )
        side = "paid" if group["kind"] == EntryKind.CHARGE else "refunded"
        row[f"{side}_fen"] += group["total"] or 0
        row[f"{side}_count"] += group["count"]
    result = list(rows.values())
    for row in result:
        row["net_fen"] = row["paid_fen"] - row["refunded_fen"]
    return result


def refunds_in_flight() -> dict[str, int]:
    """Refunds asked for and not yet settled by their channel: ``count`` and ``fen``."""
    totals = Refund.objects.filter(status=RefundStatus.PENDING).aggregate(
        count=Count("id"), fen=Sum("amount_fen")
    )
    return {"count": int(totals["count"] or 0), "fen": int(totals["fen"] or 0)}


def orders_owed_back() -> QuerySet[PaymentOrder]:
    """Paid orders a refund the platform asked for by itself failed on (a
    withdrawn application's money, a payment nothing needed any more), with
    money that no refund takes or may still take (``owed_fen``): an
    operator pays it back. Driven by the failed refunds, which are few."""
    reserved = (
        Refund.objects.filter(order=OuterRef("pk"))
        .exclude(status=RefundStatus.FAILED)
        .order_by()
        .values("order")
        .annotate(total=Sum("amount_fen"))
        .values("total")
    )
    return (
        PaymentOrder.objects.filter(
            pk__in=Refund.objects.filter(status=RefundStatus.FAILED, automatic=True).values(
                "order_id"
            ),
            status__in=(OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED),
        )
        .annotate(owed_fen=F("paid_fen") - Coalesce(Subquery(reserved), 0))
        .filter(owed_fen__gt=0)
    )


def owed_back_totals() -> dict[str, int]:
    """:func:`orders_owed_back`: ``count`` and ``fen``."""
    totals = orders_owed_back().aggregate(count=Count("id"), fen=Sum("owed_fen"))
    return {"count": int(totals["count"] or 0), "fen": int(totals["fen"] or 0)}

"""Reads of payment orders and refunds, for the APIs, events, admin and exports."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Department, User
from payments.models import OrderStatus, PaymentOrder, Refund


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
        start = timezone.make_aware(dt.datetime.combine(date, dt.time.min))
        orders = orders.filter(created_at__gte=start, created_at__lt=start + dt.timedelta(days=1))
    return orders


def order_for_department(department: Department, order_no: str) -> PaymentOrder | None:
    return (
        PaymentOrder.objects.filter(department=department, order_no=order_no)
        .select_related("application", "service")
        .first()
    )


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


def open_order(application_id: Any) -> PaymentOrder | None:
    return PaymentOrder.objects.filter(
        application_id=application_id, status=OrderStatus.PENDING
    ).first()

"""The ledger always explains the order: over random sequences of what
channels and people do (pay, fail, callbacks duplicated, reordered and late,
refunds of any size, closing, expiry, withdrawal), the charges and refunds
add up to what the order says, its status matches its amounts, refunds
never exceed the payment, and the channel's own books agree."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments import notifications, orders, refunds
from payments.errors import PaymentsError
from payments.models import (
    EntryKind,
    LedgerEntry,
    OrderStatus,
    PaymentOrder,
    Refund,
    RefundStatus,
    SandboxTrade,
)
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for
from services import applications
from services.errors import ServicesError
from services.models import Application, ApplicationStatus, OutboxEvent
from services.routing import events
from tests.payments.conftest import FEE
from tests.services.conftest import GOOD_FORM

pytestmark = pytest.mark.django_db

STEPS = st.lists(
    st.one_of(
        st.just(("pay",)),
        st.just(("fail",)),
        st.just(("notify",)),
        st.just(("notify",)),
        st.tuples(st.just("replay"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("refund"), st.integers(min_value=1, max_value=FEE + 10)),
        st.just(("expire",)),
        st.just(("reopen_and_pay",)),
        st.just(("query",)),
        st.just(("cancel",)),
    ),
    max_size=14,
)


class Rollback(Exception):
    pass


def check(order: PaymentOrder, application: Application) -> None:
    order.refresh_from_db()
    entries = LedgerEntry.objects.filter(order=order)
    charged = entries.filter(kind=EntryKind.CHARGE).aggregate(s=Sum("amount_fen"))["s"] or 0
    refunded = entries.filter(kind=EntryKind.REFUND).aggregate(s=Sum("amount_fen"))["s"] or 0
    assert entries.filter(kind=EntryKind.CHARGE).count() <= 1
    assert charged == order.paid_fen
    assert refunded == order.refunded_fen <= order.paid_fen
    assert order.paid_fen in (0, order.amount_fen)
    refund_rows = Refund.objects.filter(order=order)
    succeeded = refund_rows.filter(status=RefundStatus.SUCCEEDED).aggregate(s=Sum("amount_fen"))
    assert (succeeded["s"] or 0) == refunded
    reserved = refund_rows.exclude(status=RefundStatus.FAILED).aggregate(s=Sum("amount_fen"))
    assert (reserved["s"] or 0) <= order.paid_fen
    if order.paid_fen == 0:
        assert order.status in (OrderStatus.PENDING, OrderStatus.CLOSED, OrderStatus.FAILED)
    elif refunded == 0:
        assert order.status == OrderStatus.PAID
    elif refunded < order.paid_fen:
        assert order.status == OrderStatus.PARTIALLY_REFUNDED
    else:
        assert order.status == OrderStatus.REFUNDED
    # The channel's books say the same about the money.
    trade = SandboxTrade.objects.get(order_no=order.order_no)
    if order.paid_fen:
        assert trade.state == "SUCCESS"
        at_channel = trade.refunds.filter(state="SUCCESS").aggregate(s=Sum("amount_fen"))["s"]
        assert (at_channel or 0) == refunded
    application.refresh_from_db()
    if order.paid_fen and application.status != ApplicationStatus.CANCELLED:
        assert application.status == ApplicationStatus.SUBMITTED
    if application.status == ApplicationStatus.CANCELLED and order.paid_fen:
        # Withdrawn: whatever was paid goes back (or is on its way).
        assert (reserved["s"] or 0) == order.paid_fen


@pytest.mark.parametrize("channel", ["alipay", "unionpay", "wechat"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
def test_the_ledger_always_explains_the_order(citizen, fee_service, channel, steps) -> None:
    try:
        with transaction.atomic():
            run(citizen, fee_service, channel, steps)
            raise Rollback
    except Rollback:
        pass


def run(citizen, fee_service, channel: str, steps) -> None:
    application = applications.application_submit(
        citizen=citizen, service=fee_service, form=GOOD_FORM
    )
    order, _created = orders.order_create(
        citizen=citizen, application_id=application.pk, channel=channel
    )
    sent: list[tuple[dict[str, str], bytes]] = []

    def deliver(built: tuple[dict[str, str], bytes]) -> None:
        headers, body = built
        notifications.notify_receive(channel=channel, headers=headers, body=body, client_ip=None)
        notifications.notifies_apply_waiting()  # the worker, at once

    def send_refunds() -> None:
        for refund in Refund.objects.filter(order=order, status=RefundStatus.PENDING):
            refunds.refund_send(refund.pk)
            refund.refresh_from_db()
            if refund.status == RefundStatus.PENDING:
                refunds.refund_check(refund)

    for step in steps:
        trade = SandboxTrade.objects.get(order_no=order.order_no)
        kind = step[0]
        if kind in ("pay", "fail"):
            with contextlib.suppress(books.SandboxRefusal):  # paid or closed: the wallet says no
                books.trade_pay(channel=channel, order_no=order.order_no, succeed=kind == "pay")
        elif kind == "notify":
            built = sandbox_for(channel).payment_notify(trade)
            if built is not None and trade.state != "NOTPAY":
                sent.append(built)
                deliver(built)
        elif kind == "replay" and sent:
            deliver(sent[step[1] % len(sent)])
        elif kind == "refund":
            refused = ""
            try:
                orders.refund_request(order=order, amount_fen=step[1], reason="", actor=None)
            except PaymentsError as exc:
                refused = exc.code
            assert refused in ("", "refund_exceeds_paid", "refund_not_allowed")
            send_refunds()
        elif kind == "expire":
            PaymentOrder.objects.filter(pk=order.pk).update(
                expires_at=timezone.now() - dt.timedelta(seconds=1)
            )
            orders.order_refresh(PaymentOrder.objects.get(pk=order.pk))
            send_refunds()
        elif kind == "reopen_and_pay" and trade.state == "CLOSED":
            # The wallet took the money just as the order was closed.
            SandboxTrade.objects.filter(pk=trade.pk).update(state="NOTPAY")
            books.trade_pay(channel=channel, order_no=order.order_no, succeed=True)
        elif kind == "query":
            PaymentOrder.objects.filter(pk=order.pk).update(
                expires_at=timezone.now() + dt.timedelta(minutes=5)
            )
            orders.order_refresh(PaymentOrder.objects.get(pk=order.pk))
            send_refunds()
        elif kind == "cancel":
            try:
                applications.application_cancel(citizen=citizen, application=application)
            except ServicesError:
                pass
            else:
                refunds.application_cancelled(
                    OutboxEvent.objects.filter(
                        type=events.APPLICATION_CANCELLED, application=application
                    ).get()
                )
                send_refunds()
        send_refunds()
        check(order, application)

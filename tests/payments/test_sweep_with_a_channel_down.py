"""One channel cannot be reached while the others answer. Each call to it
waits out the client's timeout, and the sweep's steps run one after another:
the sweep asks the down channel once per step and leaves the rest of its
orders for the next run (still owed their close, still pending), and goes
on with the other channels' orders, oldest first, as before."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from payments import orders, tasks
from payments.models import OrderStatus, PaymentOrder, SandboxTrade
from payments.sandbox import books
from tests.payments.conftest import FEE, apply_for, open_order
from tests.payments.test_expired_order_unknown_at_channel import unreachable

pytestmark = pytest.mark.django_db


def sweep(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        tasks.payments_sweep()


def owed_closes(citizen_api, fee_service, monkeypatch, channel: str, count: int) -> list[str]:
    """``count`` orders of ``channel`` the citizen left for UnionPay while
    ``channel`` could not be reached: closed here, owed their close there."""
    applications = [apply_for(citizen_api, fee_service) for _ in range(count)]
    opened = [open_order(citizen_api, application, channel) for application in applications]
    unreachable(channel, monkeypatch)
    for application in applications:
        open_order(citizen_api, application, "unionpay")
    monkeypatch.undo()
    for order in opened:
        left = PaymentOrder.objects.get(pk=order["id"])
        assert (left.status, left.channel_close_owed) == (OrderStatus.CLOSED, True)
    return [order["order_no"] for order in opened]


def expiring(order_nos: list[str], minutes: list[int]) -> None:
    """Their expiries, minutes from now: the close-owed line's order."""
    for order_no, in_minutes in zip(order_nos, minutes, strict=True):
        PaymentOrder.objects.filter(order_no=order_no).update(
            expires_at=timezone.now() + dt.timedelta(minutes=in_minutes)
        )


def owed(order_no: str) -> bool:
    return PaymentOrder.objects.get(order_no=order_no).channel_close_owed


def skipped(caplog) -> list[str]:
    """What the sweep said of the channels it left for the next run."""
    return [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]


def test_a_down_channel_is_asked_to_close_once_a_sweep_and_the_others_are_closed(
    citizen_api, fee_service, monkeypatch, caplog, django_capture_on_commit_callbacks
) -> None:
    alipay = owed_closes(citizen_api, fee_service, monkeypatch, "alipay", 2)
    wechat = owed_closes(citizen_api, fee_service, monkeypatch, "wechat", 3)
    # WeChat's first in the line, Alipay's between and after its others.
    expiring(wechat, [10, 12, 13])
    expiring(alipay, [11, 14])
    tried = unreachable("wechat", monkeypatch)

    sweep(django_capture_on_commit_callbacks)

    assert len(tried) == 1
    assert wechat[0] in tried[0]  # the oldest
    assert [owed(order_no) for order_no in alipay] == [False, False]
    assert [owed(order_no) for order_no in wechat] == [True, True, True]
    assert skipped(caplog) == [
        "payments sweep (closes): wechat cannot be reached, 2 more of its orders left"
        " for the next run"
    ]

    # Back: the next run closes them there.
    monkeypatch.undo()
    sweep(django_capture_on_commit_callbacks)
    assert [owed(order_no) for order_no in wechat] == [False, False, False]
    assert [SandboxTrade.objects.get(order_no=order_no).state for order_no in wechat] == [
        "CLOSED"
    ] * 3


def test_a_down_channels_owed_closes_do_not_take_the_others_places_in_a_run(
    citizen_api, fee_service, monkeypatch
) -> None:
    """More owed orders of the down channel at the head of the line than a
    run tries: the other channels' come after the one failed call."""
    wechat = owed_closes(citizen_api, fee_service, monkeypatch, "wechat", 3)
    alipay = owed_closes(citizen_api, fee_service, monkeypatch, "alipay", 2)
    expiring(wechat, [10, 11, 12])
    expiring(alipay, [13, 14])
    tried = unreachable("wechat", monkeypatch)

    assert orders.orders_close_owed(limit=2) == 2

    assert len(tried) == 1
    assert [owed(order_no) for order_no in alipay] == [False, True]
    assert [owed(order_no) for order_no in wechat] == [True, True, True]


def pending_paid_without_word(citizen_api, fee_service, channel: str, ages: list[int]) -> list[str]:
    """Orders of ``channel`` opened ``ages`` minutes ago and paid in the
    wallet, their callbacks lost: the sweep's query (主动查单) finds them."""
    order_nos = []
    for minutes in ages:
        order = open_order(citizen_api, apply_for(citizen_api, fee_service), channel)
        books.trade_pay(channel=channel, order_no=order["order_no"], succeed=True)
        # The channel gave up calling back.
        SandboxTrade.objects.filter(order_no=order["order_no"]).update(notify_due_at=None)
        PaymentOrder.objects.filter(pk=order["id"]).update(
            created_at=timezone.now() - dt.timedelta(minutes=minutes)
        )
        order_nos.append(order["order_no"])
    return order_nos


def status(order_no: str) -> str:
    return PaymentOrder.objects.get(order_no=order_no).status


def test_a_down_channel_is_queried_once_a_sweep_and_the_others_payments_come_in(
    citizen_api, fee_service, monkeypatch, settings, caplog, django_capture_on_commit_callbacks
) -> None:
    wechat = pending_paid_without_word(citizen_api, fee_service, "wechat", [9, 7, 6])
    alipay = pending_paid_without_word(citizen_api, fee_service, "alipay", [8, 5])
    tried = unreachable("wechat", monkeypatch)

    sweep(django_capture_on_commit_callbacks)

    assert len(tried) == 1
    assert wechat[0] in tried[0]  # the one opened first
    assert [status(order_no) for order_no in alipay] == [OrderStatus.PAID] * 2
    assert [status(order_no) for order_no in wechat] == [OrderStatus.PENDING] * 3
    assert skipped(caplog) == [
        "payments sweep (orders): wechat cannot be reached, 2 more of its orders left"
        " for the next run"
    ]

    # Back: a run after the quiet period brings their payments in.
    monkeypatch.undo()
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    sweep(django_capture_on_commit_callbacks)
    paid = [PaymentOrder.objects.get(order_no=order_no) for order_no in wechat]
    assert [(order.status, order.paid_fen) for order in paid] == [(OrderStatus.PAID, FEE)] * 3


def test_a_down_channels_pending_orders_do_not_take_the_others_places_in_a_run(
    citizen_api, fee_service, monkeypatch
) -> None:
    wechat = pending_paid_without_word(citizen_api, fee_service, "wechat", [9, 8, 7])
    alipay = pending_paid_without_word(citizen_api, fee_service, "alipay", [6, 5])
    tried = unreachable("wechat", monkeypatch)

    orders.orders_sweep(limit=2)

    assert len(tried) == 1
    assert [status(order_no) for order_no in alipay] == [OrderStatus.PAID, OrderStatus.PENDING]
    assert [status(order_no) for order_no in wechat] == [OrderStatus.PENDING] * 3


def test_the_order_a_down_channel_failed_goes_behind_its_others_for_the_next_run(
    citizen_api, fee_service, monkeypatch, settings
) -> None:
    """The line stays fair within the channel: each run asks the next of its
    orders, not the same one again (all of them due at every run)."""
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    wechat = pending_paid_without_word(citizen_api, fee_service, "wechat", [9, 8, 7])
    tried = unreachable("wechat", monkeypatch)

    for _ in range(3):
        orders.orders_sweep()

    assert [[order_no in url for url in tried] for order_no in wechat] == [
        [True, False, False],
        [False, True, False],
        [False, False, True],
    ]


def test_expired_orders_of_a_down_channel_cost_a_sweep_one_query_and_one_close(
    citizen_api, fee_service, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """The first is closed here as the sweep closes an expired order it can
    neither ask about nor close there (owed its close there); the others
    wait, pending, for the next run."""
    wechat = pending_paid_without_word(citizen_api, fee_service, "wechat", [40, 39, 38])
    PaymentOrder.objects.filter(order_no__in=wechat).update(
        expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    tried = unreachable("wechat", monkeypatch)

    sweep(django_capture_on_commit_callbacks)

    assert len(tried) == 2  # its query, then its close
    assert all(wechat[0] in url for url in tried)
    first = PaymentOrder.objects.get(order_no=wechat[0])
    assert (first.status, first.channel_close_owed) == (OrderStatus.CLOSED, True)
    assert [status(order_no) for order_no in wechat[1:]] == [OrderStatus.PENDING] * 2

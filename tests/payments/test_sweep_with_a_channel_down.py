"""One channel cannot be reached while the others answer. Each call to it
waits out the client's timeout, and the sweep's steps run one after another:
the sweep asks the down channel once per step and leaves the rest of its
orders for the next run (still owed their close, still pending), and goes
on with the other channels' orders, oldest first, as before."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qs

import httpx
import pytest
from django.utils import timezone

from payments import orders, refunds, tasks
from payments.models import OrderStatus, PaymentOrder, Refund, SandboxRefund, SandboxTrade
from payments.providers import provider_for
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


# --- Refunds ------------------------------------------------------------------------------------


def refunds_asked(
    citizen_api, fee_service, pay, integrator_api, channel: str, ages: list[int]
) -> list[Refund]:
    """Paid orders of ``channel``, each with a refund of 5.00 a department
    asked for ``ages`` minutes ago, its worker's run lost: the sweep sends
    them, the oldest first."""
    asked = []
    for minutes in ages:
        order = pay(open_order(citizen_api, apply_for(citizen_api, fee_service), channel))
        response = integrator_api.post(
            f"/api/v1/dept/payments/{order.order_no}/refunds/", {"amount_fen": 500}, format="json"
        )
        assert response.status_code == 201, response.json()
        Refund.objects.filter(pk=response.json()["id"]).update(
            created_at=timezone.now() - dt.timedelta(minutes=minutes)
        )
        asked.append(Refund.objects.get(pk=response.json()["id"]))
    return asked


def refunds_sent(refunds_: list[Refund], settings) -> None:
    """Sent to their channel, which settles them later (the sweep's query
    finds them settled)."""
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    for refund in refunds_:
        assert refunds.refund_send(refund.pk)
    assert not Refund.objects.filter(pk__in=[r.pk for r in refunds_]).exclude(status="pending")
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0


def as_now(refunds_: list[Refund]) -> list[tuple[str, bool]]:
    """Each refund's status, and whether it reached its channel."""
    fresh = [Refund.objects.get(pk=refund.pk) for refund in refunds_]
    return [(refund.status, refund.submitted_at is not None) for refund in fresh]


def test_a_down_channel_is_sent_one_refund_a_sweep_and_the_others_are_sent(
    citizen_api,
    fee_service,
    pay,
    integrator_api,
    monkeypatch,
    caplog,
    django_capture_on_commit_callbacks,
) -> None:
    wechat = refunds_asked(citizen_api, fee_service, pay, integrator_api, "wechat", [9, 7, 6])
    alipay = refunds_asked(citizen_api, fee_service, pay, integrator_api, "alipay", [8, 5])
    tried = unreachable("wechat", monkeypatch)

    sweep(django_capture_on_commit_callbacks)

    assert len(tried) == 1
    # The oldest was tried, and goes behind the others for the next run.
    tried_at = [Refund.objects.get(pk=refund.pk).last_queried_at for refund in wechat]
    assert [at is not None for at in tried_at] == [True, False, False]
    assert as_now(alipay) == [("succeeded", True)] * 2
    assert as_now(wechat) == [("pending", False)] * 3
    assert skipped(caplog) == [
        "payments sweep (refund sends): wechat cannot be reached, 2 more of its refunds left"
        " for the next run"
    ]

    # Back: the next run sends them.
    monkeypatch.undo()
    sweep(django_capture_on_commit_callbacks)
    assert [submitted for _, submitted in as_now(wechat)] == [True] * 3


def test_a_down_channel_costs_the_refunds_step_one_call_for_its_sends_and_queries(
    citizen_api,
    fee_service,
    pay,
    integrator_api,
    monkeypatch,
    settings,
    caplog,
    django_capture_on_commit_callbacks,
) -> None:
    """Refunds sent and waiting for the channel's word are queried in the
    same step as those to send: a channel found down sending is not asked
    about the others."""
    sent = refunds_asked(citizen_api, fee_service, pay, integrator_api, "wechat", [9, 8])
    elsewhere = refunds_asked(citizen_api, fee_service, pay, integrator_api, "unionpay", [7, 6])
    refunds_sent(sent + elsewhere, settings)
    unsent = refunds_asked(citizen_api, fee_service, pay, integrator_api, "wechat", [5])
    SandboxRefund.objects.update(settles_at=timezone.now())
    tried = unreachable("wechat", monkeypatch)

    sweep(django_capture_on_commit_callbacks)

    assert len(tried) == 1
    assert as_now(elsewhere) == [("succeeded", True)] * 2
    assert as_now(sent) == [("pending", True)] * 2
    assert as_now(unsent) == [("pending", False)]
    assert skipped(caplog) == [
        "payments sweep (refund queries): wechat cannot be reached, 2 more of its refunds left"
        " for the next run"
    ]

    monkeypatch.undo()
    sweep(django_capture_on_commit_callbacks)
    assert as_now(sent) == [("succeeded", True)] * 2
    assert as_now(unsent)[0][1]


def test_a_down_channels_refunds_do_not_take_the_others_places_in_a_run(
    citizen_api, fee_service, pay, integrator_api, monkeypatch
) -> None:
    wechat = refunds_asked(citizen_api, fee_service, pay, integrator_api, "wechat", [9, 8, 7])
    alipay = refunds_asked(citizen_api, fee_service, pay, integrator_api, "alipay", [6, 5])
    tried = unreachable("wechat", monkeypatch)

    refunds.refunds_sweep(limit=2)

    assert len(tried) == 1
    assert as_now(alipay) == [("succeeded", True), ("pending", False)]
    assert as_now(wechat) == [("pending", False)] * 3


# --- A channel that answers, refusing one order or refund for now -------------------------------


def refusing(channel: str, monkeypatch, refusal) -> list[httpx.Request]:
    """``channel`` answers as its sandbox does, but ``refusal(request)``
    in its own words where that gives an answer; the calls are listed."""
    calls: list[httpx.Request] = []
    sandbox = provider_for(channel).http._transport

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return refusal(request) or sandbox.handle_request(request)

    monkeypatch.setattr(provider_for(channel).http, "_transport", httpx.MockTransport(answer))
    return calls


def balance_short(request: httpx.Request) -> httpx.Response | None:
    """WeChat Pay refusing every refund: the merchant's balance is short of
    it (top up, then ask again with the same refund number)."""
    if request.method == "POST" and request.url.path == "/v3/refund/domestic/refunds":
        return httpx.Response(
            403, json={"code": "NOT_ENOUGH", "message": "基本账户余额不足，请充值后重新发起"}
        )
    return None


def test_a_refund_refused_for_a_short_balance_does_not_hold_back_its_channels_others(
    citizen_api,
    fee_service,
    pay,
    integrator_api,
    monkeypatch,
    settings,
    caplog,
    django_capture_on_commit_callbacks,
) -> None:
    """WeChat Pay answers, and refuses the refunds to send NOT_ENOUGH: each
    is its own refusal ("later"), not a channel that cannot be reached. The
    refunds to send are each sent, and those sent before are queried and
    found settled, in the same run."""
    sent = refunds_asked(citizen_api, fee_service, pay, integrator_api, "wechat", [9, 8])
    refunds_sent(sent, settings)
    unsent = refunds_asked(citizen_api, fee_service, pay, integrator_api, "wechat", [6, 5])
    SandboxRefund.objects.update(settles_at=timezone.now())  # settled at WeChat Pay
    calls = refusing("wechat", monkeypatch, balance_short)

    sweep(django_capture_on_commit_callbacks)

    assert as_now(sent) == [("succeeded", True)] * 2
    assert as_now(unsent) == [("pending", False)] * 2
    refused = [Refund.objects.get(pk=refund.pk).failure_reason for refund in unsent]
    assert all("NOT_ENOUGH" in reason for reason in refused)
    assert sum(request.method == "POST" for request in calls) == 2  # each sent once
    assert skipped(caplog) == []


def close_later(order_no: str):
    """Alipay failing on its side to close ``order_no`` (ACQ.SYSTEM_ERROR:
    "try again later"), and only that order."""

    def refusal(request: httpx.Request) -> httpx.Response | None:
        form = parse_qs(request.content.decode())
        if request.url.params.get("method") == "alipay.trade.close" and (
            json.loads(form["biz_content"][0])["out_trade_no"] == order_no
        ):
            return httpx.Response(
                200,
                json={
                    "alipay_trade_close_response": {
                        "code": "40004",
                        "msg": "Business Failed",
                        "sub_code": "ACQ.SYSTEM_ERROR",
                        "sub_msg": "系统错误",
                    }
                },
            )
        return None

    return refusal


def test_an_order_its_channel_keeps_failing_to_close_does_not_hold_back_the_others(
    citizen_api, fee_service, monkeypatch, caplog
) -> None:
    """The soonest to expire of Alipay's owed closes fails at Alipay, run
    after run: its others, behind it in the line, are closed all the same
    (before they too expire unclosed), and it is tried again each run."""
    alipay = owed_closes(citizen_api, fee_service, monkeypatch, "alipay", 3)
    expiring(alipay, [10, 11, 12])
    calls = refusing("alipay", monkeypatch, close_later(alipay[0]))

    for _ in range(2):  # two runs of the sweep, 15 s apart
        orders.orders_close_owed()

    assert [owed(order_no) for order_no in alipay] == [True, False, False]
    closes = [
        json.loads(parse_qs(request.content.decode())["biz_content"][0])["out_trade_no"]
        for request in calls
        if request.url.params.get("method") == "alipay.trade.close"
    ]
    assert closes == [alipay[0], alipay[1], alipay[2], alipay[0]]
    assert skipped(caplog) == []

"""An order whose payment failed: it is closed at its channel too, as an
expired order is, so that the citizen cannot pay it there later; and a
payment that reaches it all the same is handled as a late payment of a
closed order is."""

from __future__ import annotations

import dataclasses
import datetime as dt

import httpx
import pytest
from django.utils import timezone

from payments import orders, tasks
from payments.models import LedgerEntry, OrderStatus, PaymentOrder, Refund, SandboxTrade
from payments.providers import provider_for
from payments.sandbox.channels import sandbox_for
from services.models import Application
from tests.payments.conftest import CHANNELS, FEE, open_order

pytestmark = pytest.mark.django_db


def cashier(client, order: dict, result: str = "success"):
    """The sandbox wallet, without the callback that follows."""
    return client.post(
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": result}, format="json"
    )


def calls_to(channel: str, monkeypatch, seen: list[httpx.Request]) -> None:
    """Every call of ``channel`` passes to its sandbox and is listed in ``seen``."""
    handle = sandbox_for(channel).handle

    def listed(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handle(request)

    monkeypatch.setattr(provider_for(channel).http, "_transport", httpx.MockTransport(listed))


def closes(channel: str, seen: list[httpx.Request]) -> list[httpx.Request]:
    if channel == "wechat":
        return [r for r in seen if r.url.path.endswith("/close")]
    return [r for r in seen if r.url.params.get("method") == "alipay.trade.close"]


def fail(order: dict, pay, settings, django_capture_on_commit_callbacks) -> PaymentOrder:
    """The citizen's payment fails in the wallet, and the order learns it:
    from the callback, or (WeChat Pay calls back on success only) from the
    sweep's query. Everything after commit runs."""
    failed = pay(order, result="fail")
    if failed.status == OrderStatus.PENDING:
        settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
        with django_capture_on_commit_callbacks(execute=True):
            tasks.payments_sweep()
        failed.refresh_from_db()
    assert failed.status == OrderStatus.FAILED
    return failed


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_order_whose_payment_failed_cannot_be_paid_at_its_channel_after_all(
    citizen_api, awaiting, pay, settings, django_capture_on_commit_callbacks, channel
) -> None:
    """WeChat Pay leaves a trade whose payment failed open to another try
    until the merchant closes it (Alipay shows it closed, UnionPay failed
    for good): the failed order no longer takes a payment there."""
    order = open_order(citizen_api, awaiting, channel)
    fail(order, pay, settings, django_capture_on_commit_callbacks)

    refused = cashier(citizen_api, order)

    assert refused.status_code == 409, refused.json()
    assert refused.json()["code"] == "sandbox_payment_refused"
    if channel == "wechat":
        assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "CLOSED"
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.FAILED
    assert not LedgerEntry.objects.exists()


def test_a_failed_wechat_order_is_closed_once_after_the_failure_is_recorded(
    citizen_api, awaiting, pay, settings, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    """Closed at WeChat Pay after the transaction that records the failure
    commits (no channel call while the order is locked), once: the same
    failure heard again closes nothing more."""
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    order = open_order(citizen_api, awaiting, "wechat")
    seen: list[httpx.Request] = []
    calls_to("wechat", monkeypatch, seen)
    pay(order, result="fail")

    with django_capture_on_commit_callbacks(execute=False) as after_commit:
        tasks.payments_sweep()
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.FAILED
    assert closes("wechat", seen) == []
    for callback in after_commit:
        callback()
    [close] = closes("wechat", seen)
    assert close.method == "POST"
    assert close.url.path == f"/v3/pay/transactions/out-trade-no/{order['order_no']}/close"

    result = provider_for("wechat").order_query(order_no=order["order_no"])
    assert result.state == "closed"
    failed_again = dataclasses.replace(result, state="failed", raw_state="PAYERROR")
    with django_capture_on_commit_callbacks(execute=True):
        outcome = orders.order_apply_result(
            order=PaymentOrder.objects.get(pk=order["id"]), result=failed_again, source="query"
        )
    assert outcome == "ignored"
    assert len(closes("wechat", seen)) == 1


def test_a_trade_the_channel_shows_closed_is_not_closed_again(
    citizen_api, awaiting, pay, settings, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    """Alipay tells a failed payment as TRADE_CLOSED: the trade is closed
    there already, nothing more to ask of it."""
    order = open_order(citizen_api, awaiting, "alipay")
    seen: list[httpx.Request] = []
    calls_to("alipay", monkeypatch, seen)
    fail(order, pay, settings, django_capture_on_commit_callbacks)
    assert closes("alipay", seen) == []


def test_a_failed_order_whose_channel_cannot_be_reached_to_close_it_stays_failed(
    citizen_api, awaiting, pay, settings, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    """The close is the channel's side only: if it cannot be reached, the
    order is failed all the same (a payment that still comes is a late
    one, see below), as an expired order closes here when its channel
    cannot be reached."""
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    order = open_order(citizen_api, awaiting, "wechat")
    pay(order, result="fail")
    handle = sandbox_for("wechat").handle

    def close_unreachable(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/close"):
            raise httpx.ConnectError("unreachable", request=request)
        return handle(request)

    monkeypatch.setattr(
        provider_for("wechat").http, "_transport", httpx.MockTransport(close_unreachable)
    )
    with django_capture_on_commit_callbacks(execute=True):
        tasks.payments_sweep()

    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.FAILED
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "PAYERROR"


# --- A payment that still comes ---------------------------------------------------------------


def end(
    how: str, citizen_api, order: dict, pay, settings, django_capture_on_commit_callbacks
) -> None:
    """The order ends ``how``: closed (it expired, closed here and at its
    channel) or failed (its payment failed)."""
    if how == "closed":
        PaymentOrder.objects.filter(pk=order["id"]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
        with django_capture_on_commit_callbacks(execute=True):
            assert citizen_api.get(f"/api/v1/payments/{order['id']}/").json()["status"] == how
    else:
        fail(order, pay, settings, django_capture_on_commit_callbacks)


def paid_after_all(order: dict, pay) -> PaymentOrder:
    """The wallet took the money just before the channel closed the trade:
    its success callback comes now."""
    SandboxTrade.objects.filter(order_no=order["order_no"]).update(
        state="NOTPAY", expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    return pay(order)


@pytest.mark.parametrize("how", ["closed", "failed"])
@pytest.mark.parametrize("channel", ["wechat", "alipay"])
def test_a_late_payment_of_an_ended_order_still_needed_pays_the_application(
    citizen_api, awaiting, pay, settings, django_capture_on_commit_callbacks, channel, how
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    end(how, citizen_api, order, pay, settings, django_capture_on_commit_callbacks)

    late = paid_after_all(order, pay)

    assert (late.status, late.paid_fen) == (OrderStatus.PAID, FEE)
    assert Application.objects.get(pk=awaiting["id"]).status == "submitted"
    assert LedgerEntry.objects.filter(order=late, kind="charge").count() == 1
    assert not Refund.objects.exists()


@pytest.mark.parametrize("how", ["closed", "failed"])
@pytest.mark.parametrize("channel", ["wechat", "alipay"])
def test_a_late_payment_of_an_ended_order_paid_otherwise_goes_back(
    citizen_api, awaiting, pay, settings, django_capture_on_commit_callbacks, channel, how
) -> None:
    """The citizen paid through another order meanwhile: the late payment
    is recorded and sent back in full, the other payment stands."""
    first = open_order(citizen_api, awaiting, channel)
    end(how, citizen_api, first, pay, settings, django_capture_on_commit_callbacks)
    other = pay(open_order(citizen_api, awaiting, "unionpay"))
    assert other.status == OrderStatus.PAID

    late = paid_after_all(first, pay)
    tasks.payments_sweep()  # the refund settles

    late.refresh_from_db()
    assert (late.status, late.paid_fen, late.refunded_fen) == (OrderStatus.REFUNDED, FEE, FEE)
    refund = Refund.objects.get(order=late)
    assert refund.automatic and refund.status == "succeeded"
    other.refresh_from_db()
    assert other.status == OrderStatus.PAID and other.refunded_fen == 0
    assert Application.objects.get(pk=awaiting["id"]).status == "submitted"

"""A WeChat Pay order whose payment failed is closed at WeChat after the
failure is recorded; if WeChat cannot be reached then, the sweep closes it
later, while WeChat could still take a payment for it: once, and not after
the trade has expired there."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from django.utils import timezone

from payments import tasks
from payments.models import LedgerEntry, OrderStatus, PaymentOrder, SandboxTrade
from payments.providers import provider_for
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for
from tests.payments.conftest import FEE, open_order

pytestmark = pytest.mark.django_db


class WechatCloses:
    """WeChat Pay's answers through the sandbox, its closes failing while
    ``down``; every close asked for is listed."""

    def __init__(self, monkeypatch) -> None:
        self.down = False
        self.closes: list[str] = []
        handle = sandbox_for("wechat").handle

        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/close"):
                self.closes.append(request.url.path)
                if self.down:
                    raise httpx.ConnectError("unreachable", request=request)
            return handle(request)

        monkeypatch.setattr(provider_for("wechat").http, "_transport", httpx.MockTransport(answer))


def sweep(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        tasks.payments_sweep()


@pytest.fixture
def failed_while_wechat_was_down(
    citizen_api, awaiting, pay, settings, django_capture_on_commit_callbacks, monkeypatch
) -> tuple[dict, WechatCloses]:
    """The payment failed in the wallet; WeChat calls back on success only,
    so the sweep's query learns it; the close that follows fails."""
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    order = open_order(citizen_api, awaiting, "wechat")
    wechat = WechatCloses(monkeypatch)
    wechat.down = True
    pay(order, result="fail")
    sweep(django_capture_on_commit_callbacks)
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.FAILED
    assert len(wechat.closes) == 1
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "PAYERROR"
    return order, wechat


def test_a_failed_order_wechat_could_not_close_is_closed_by_the_next_sweep(
    citizen_api, failed_while_wechat_was_down, django_capture_on_commit_callbacks
) -> None:
    order, wechat = failed_while_wechat_was_down
    wechat.down = False

    sweep(django_capture_on_commit_callbacks)

    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "CLOSED"
    refused = citizen_api.post(
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": "success"}, format="json"
    )
    assert refused.status_code == 409, refused.json()
    assert refused.json()["code"] == "sandbox_payment_refused"
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.FAILED
    assert not LedgerEntry.objects.exists()


def test_the_close_is_tried_at_every_sweep_until_it_succeeds_and_then_no_more(
    failed_while_wechat_was_down, django_capture_on_commit_callbacks
) -> None:
    order, wechat = failed_while_wechat_was_down
    sweep(django_capture_on_commit_callbacks)
    assert len(wechat.closes) == 2
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "PAYERROR"

    wechat.down = False
    sweep(django_capture_on_commit_callbacks)
    sweep(django_capture_on_commit_callbacks)

    assert len(wechat.closes) == 3
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "CLOSED"


def test_a_trade_expired_at_wechat_is_not_closed_any_more(
    failed_while_wechat_was_down, django_capture_on_commit_callbacks
) -> None:
    """WeChat takes no payment after the order's time_expire: closing it
    then would change nothing."""
    order, wechat = failed_while_wechat_was_down
    wechat.down = False
    PaymentOrder.objects.filter(pk=order["id"]).update(
        expires_at=timezone.now() - dt.timedelta(hours=1)
    )

    sweep(django_capture_on_commit_callbacks)
    sweep(django_capture_on_commit_callbacks)

    assert len(wechat.closes) == 1
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.FAILED


def test_a_failed_order_paid_before_the_close_got_through_is_brought_in(
    failed_while_wechat_was_down, django_capture_on_commit_callbacks
) -> None:
    """The citizen paid the trade again in the wallet while WeChat could not
    be reached; its callback is lost. The close, tried again, is refused
    (paid): the payment is asked for and recorded, and not closed again."""
    order, wechat = failed_while_wechat_was_down
    books.trade_pay(channel="wechat", order_no=order["order_no"], succeed=True)
    wechat.down = False

    sweep(django_capture_on_commit_callbacks)
    sweep(django_capture_on_commit_callbacks)

    paid = PaymentOrder.objects.get(pk=order["id"])
    assert (paid.status, paid.paid_fen) == (OrderStatus.PAID, FEE)
    assert LedgerEntry.objects.filter(order=paid, kind="charge").count() == 1
    assert len(wechat.closes) == 2


def test_an_order_superseded_while_its_channel_was_down_is_closed_there_later(
    citizen_api, awaiting, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """The citizen turns to another channel while WeChat cannot be reached:
    the WeChat order closes here at once, and at WeChat once it answers
    (before, its trade stayed payable there until it expired)."""
    order = open_order(citizen_api, awaiting, "wechat")
    wechat = WechatCloses(monkeypatch)
    wechat.down = True
    other = open_order(citizen_api, awaiting, "alipay")
    superseded = PaymentOrder.objects.get(pk=order["id"])
    assert superseded.status == OrderStatus.CLOSED
    assert superseded.channel_close_owed
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "NOTPAY"

    wechat.down = False
    sweep(django_capture_on_commit_callbacks)
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "CLOSED"
    assert not PaymentOrder.objects.get(pk=order["id"]).channel_close_owed
    assert PaymentOrder.objects.get(pk=other["id"]).status == OrderStatus.PENDING

"""A citizen looks at their pending order after its expiry, and the channel,
asked where it stands, gives an answer that cannot be read: the citizen sees
the order as we know it (pending), never a server failure and never closed,
since the wallet may have taken the money. The sweep settles it once the
channel answers again, as it settles any order it could not ask."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from django.utils import timezone

from payments import tasks
from payments.models import OrderStatus, PaymentOrder
from payments.providers import provider_for
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for
from services.models import Application
from tests.payments.conftest import CHANNELS, FEE, open_order

pytestmark = pytest.mark.django_db


def asks_where_it_stands(channel: str, request: httpx.Request) -> bool:
    """A query of a trade (UnionPay closes by asking, so its close is one too)."""
    if channel == "wechat":
        return request.method == "GET" and "/out-trade-no/" in request.url.path
    if channel == "alipay":
        return request.url.params.get("method") == "alipay.trade.query"
    return request.url.path == "/gateway/api/queryTrans.do"


def queries_unreadable(channel: str, monkeypatch) -> None:
    """The channel answers every query with a page that is not its word
    (a proxy's error page); its other calls reach it."""
    handle = sandbox_for(channel).handle

    def answer(request: httpx.Request) -> httpx.Response:
        if asks_where_it_stands(channel, request):
            return httpx.Response(200, content=b"<html>502 Bad Gateway</html>")
        return handle(request)

    monkeypatch.setattr(provider_for(channel).http, "_transport", httpx.MockTransport(answer))


def unreachable(channel: str, monkeypatch) -> list[str]:
    """The channel cannot be reached; the calls tried are listed."""
    tried: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        tried.append(str(request.url))
        raise httpx.ConnectError("unreachable", request=request)

    monkeypatch.setattr(provider_for(channel).http, "_transport", httpx.MockTransport(answer))
    return tried


def expire(order: dict) -> None:
    PaymentOrder.objects.filter(pk=order["id"]).update(
        created_at=timezone.now() - dt.timedelta(hours=1),
        expires_at=timezone.now() - dt.timedelta(seconds=1),
    )


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_expired_order_the_channel_cannot_tell_about_is_shown_pending(
    citizen_api, awaiting, monkeypatch, django_capture_on_commit_callbacks, channel
) -> None:
    """The wallet took the money; its callback is lost; the order's time ran
    out; the channel's answers to "where does it stand" cannot be read."""
    order = open_order(citizen_api, awaiting, channel)
    books.trade_pay(channel=channel, order_no=order["order_no"], succeed=True)
    expire(order)
    queries_unreadable(channel, monkeypatch)

    with django_capture_on_commit_callbacks(execute=True):
        shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")

    assert shown.status_code == 200, shown.json()
    assert (shown.json()["status"], shown.json()["id"]) == ("pending", order["id"])
    kept = PaymentOrder.objects.get(pk=order["id"])
    assert (kept.status, kept.closed_at, kept.paid_fen) == (OrderStatus.PENDING, None, 0)
    assert Application.objects.get(pk=awaiting["id"]).status == "awaiting_payment"

    # The channel reads again: the sweep brings the payment in.
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        tasks.payments_sweep()
    paid = PaymentOrder.objects.get(pk=order["id"])
    assert (paid.status, paid.paid_fen) == (OrderStatus.PAID, FEE)
    assert citizen_api.get(f"/api/v1/payments/{order['id']}/").json()["status"] == "paid"


@pytest.mark.parametrize("channel", ["wechat", "alipay"])
def test_an_expired_order_the_channel_closed_is_shown_closed_though_its_query_failed(
    citizen_api, awaiting, monkeypatch, django_capture_on_commit_callbacks, channel
) -> None:
    """Nothing was paid: the query's answer cannot be read, but the channel
    closes the trade, which it refuses for a paid one. That is its word: the
    order is closed here too."""
    order = open_order(citizen_api, awaiting, channel)
    expire(order)
    queries_unreadable(channel, monkeypatch)

    with django_capture_on_commit_callbacks(execute=True):
        shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")

    assert shown.status_code == 200, shown.json()
    assert shown.json()["status"] == "closed"
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.CLOSED


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_expired_order_whose_channel_cannot_be_reached_is_shown_pending(
    citizen_api, awaiting, monkeypatch, channel
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    expire(order)
    unreachable(channel, monkeypatch)

    shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")

    assert shown.status_code == 200, shown.json()
    assert shown.json()["status"] == "pending"
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_payer_polling_while_the_channel_is_down_asks_it_once_a_quiet_period(
    citizen_api, awaiting, monkeypatch, settings, channel
) -> None:
    """Each look would otherwise ask the channel again (and wait on it with
    the order's row locked for its close), and put the order last in the
    sweep's line."""
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 60
    order = open_order(citizen_api, awaiting, channel)
    expire(order)
    asked = unreachable(channel, monkeypatch)

    for _ in range(3):
        shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")
        assert (shown.status_code, shown.json()["status"]) == (200, "pending")
    calls = len(asked)
    assert calls >= 1
    first_asked = PaymentOrder.objects.get(pk=order["id"]).last_queried_at

    for _ in range(3):
        citizen_api.get(f"/api/v1/payments/{order['id']}/")
    assert len(asked) == calls  # nothing asked within the quiet period
    assert PaymentOrder.objects.get(pk=order["id"]).last_queried_at == first_asked

    # A quiet period later, asked again.
    PaymentOrder.objects.filter(pk=order["id"]).update(
        last_queried_at=timezone.now() - dt.timedelta(seconds=61)
    )
    shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")
    assert shown.json()["status"] == "pending"
    assert len(asked) == 2 * calls

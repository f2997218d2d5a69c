"""What every payment provider the project ships promises (the contract of
``BasePaymentProvider``), checked on each against its sandbox channel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from payments.models import SandboxRefund
from payments.providers import provider_for
from payments.providers.base import (
    BasePaymentProvider,
    NotifyRejected,
    PaymentResult,
    ProviderError,
)
from payments.sandbox import books
from payments.sandbox.channels import SANDBOXES, SandboxChannel, sandbox_for
from tests.contracts import implementations

pytestmark = pytest.mark.django_db

PROVIDERS = implementations(BasePaymentProvider)


def test_every_provider_is_a_channel_with_a_sandbox() -> None:
    identifiers = sorted(cls.identifier for cls in PROVIDERS)
    assert identifiers == sorted(settings.PAYMENTS_CHANNELS) == sorted(SANDBOXES)
    assert sorted(c.identifier for c in implementations(SandboxChannel)) == identifiers
    for cls in PROVIDERS:
        assert cls.verbose_name and cls.__doc__
        for method in (
            "checkout_create",
            "notify_parse",
            "notify_reply",
            "order_query",
            "order_close",
            "refund_create",
            "refund_query",
            "statement_download",
        ):
            assert getattr(cls, method) is not getattr(BasePaymentProvider, method), (cls, method)


@pytest.fixture(params=PROVIDERS, ids=lambda cls: cls.identifier)
def provider(request) -> BasePaymentProvider:
    chosen = provider_for(request.param.identifier)
    assert isinstance(chosen, request.param)
    return chosen


def _open(provider: BasePaymentProvider, order_no: str, amount_fen: int = 1234) -> dict:
    return provider.checkout_create(
        order_no=order_no,
        amount_fen=amount_fen,
        description="居民身份证换领",
        expires_at=timezone.now() + dt.timedelta(minutes=30),
        notify_url=f"http://127.0.0.1:8000/api/v1/payments/notify/{provider.identifier}/",
    )


def test_a_payment_from_checkout_to_statement(provider) -> None:
    channel = provider.identifier
    checkout = _open(provider, "P20261206CONTRACT00001")
    assert checkout and all(isinstance(v, str) and v for v in checkout.values())
    assert _open(provider, "P20261206CONTRACT00001") == checkout  # idempotent per order number
    assert provider.order_query(order_no="P20261206CONTRACT00001").state == "pending"

    trade = books.trade_pay(channel=channel, order_no="P20261206CONTRACT00001", succeed=True)
    headers, body = sandbox_for(channel).payment_notify(trade)
    told = provider.notify_parse(headers=headers, body=body)
    asked = provider.order_query(order_no="P20261206CONTRACT00001")

    for result in (told, asked):
        assert isinstance(result, PaymentResult)
        assert result.state == "paid" and result.amount_fen == 1234
        assert result.order_no == "P20261206CONTRACT00001"
        assert result.transaction_id == trade.transaction_id
    assert 200 <= provider.notify_reply(accepted=True).status < 300
    assert not 200 <= provider.notify_reply(accepted=False, message="x").status < 300

    refund = provider.refund_create(
        order_no="P20261206CONTRACT00001",
        refund_no="R20261206CONTRACT00001",
        amount_fen=234,
        total_fen=1234,
        reason="部分退费",
    )
    assert refund.refund_no == "R20261206CONTRACT00001" and refund.state in ("pending", "succeeded")
    SandboxRefund.objects.update(settles_at=timezone.now() - dt.timedelta(seconds=1))
    settled = provider.refund_query(
        order_no="P20261206CONTRACT00001", refund_no="R20261206CONTRACT00001"
    )
    assert settled.state == "succeeded" and settled.amount_fen == 234
    # When the money went back, as the channel's statement dates it.
    (listed,) = [
        line
        for line in provider.statement_download(date=timezone.localdate())
        if line.kind == "refund"
    ]
    assert settled.succeeded_at == listed.at

    lines = provider.statement_download(date=timezone.localdate())
    assert {(line.kind, line.reference, line.amount_fen) for line in lines} == {
        ("charge", trade.transaction_id, 1234),
        ("refund", "R20261206CONTRACT00001", 234),
    }


def test_closing_an_unpaid_order_is_fine_and_garbage_is_no_callback(provider) -> None:
    _open(provider, "P20261206CONTRACT00002")
    provider.order_close(order_no="P20261206CONTRACT00002")
    provider.order_close(order_no="P20261206CONTRACT00002")  # twice: still fine
    for headers, body in [({}, b""), ({"Content-Type": "application/json"}, b"{}"), ({}, b"\xff")]:
        with pytest.raises(NotifyRejected) as refused:
            provider.notify_parse(headers=headers, body=body)
        assert refused.value.reason in (
            "malformed",
            "bad_signature",
            "unknown_key",
            "stale_timestamp",
            "decrypt_failed",
            "wrong_merchant",
        )


def test_a_refund_the_channel_never_took_is_said_to_be_unknown(provider) -> None:
    _open(provider, "P20261206CONTRACT00003")
    books.trade_pay(channel=provider.identifier, order_no="P20261206CONTRACT00003", succeed=True)
    with pytest.raises(ProviderError) as unknown:
        provider.refund_query(order_no="P20261206CONTRACT00003", refund_no="R20261206NEVERSENT01")
    assert provider.refund_unknown(unknown.value)
    # Anything else is not that answer, whatever its code says of retrying.
    assert not provider.refund_unknown(ProviderError("unreadable", retryable=False, code="x"))


# What each channel answers when it refuses a call for now, in its own
# words ("later": the merchant's balance short of a refund, the payment's
# state not known yet), to a refund (UnionPay's first asks where the
# payment stands).
LATER: dict[str, Callable[[], httpx.Response]] = {
    "wechat": lambda: httpx.Response(
        403, json={"code": "NOT_ENOUGH", "message": "基本账户余额不足，请充值后重新发起"}
    ),
    "alipay": lambda: httpx.Response(
        200,
        json={
            "alipay_trade_refund_response": {
                "code": "40004",
                "msg": "Business Failed",
                "sub_code": "ACQ.SELLER_BALANCE_NOT_ENOUGH",
                "sub_msg": "卖家余额不足",
            }
        },
    ),
    "unionpay": lambda: httpx.Response(200, text="respCode=04&respMsg=交易状态未明，请稍后查询"),
}


def _answered(provider: BasePaymentProvider, monkeypatch, answer) -> None:
    """Every call to ``provider``'s channel answered by ``answer(request)``."""
    monkeypatch.setattr(provider.http, "_transport", httpx.MockTransport(answer))


def _connect_error(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize(
    "answer",
    [
        _connect_error,
        _read_timeout,
        lambda request: httpx.Response(503, text="Service Unavailable"),
        lambda request: httpx.Response(429, text="Too Many Requests"),
    ],
    ids=["connect_error", "read_timeout", "503", "429"],
)
def test_a_channel_that_cannot_be_reached_says_so(provider, monkeypatch, answer) -> None:
    """Not reached, or its HTTP layer refusing any call now: every other
    call would fail the same way (the payments sweep leaves the channel's
    other orders and refunds for its next run)."""
    _answered(provider, monkeypatch, answer)
    with pytest.raises(ProviderError) as failed:
        provider.order_query(order_no="P20261206CONTRACT00004")
    assert (failed.value.retryable, failed.value.unreachable) == (True, True)


def test_a_channel_that_says_later_about_one_call_was_reached(provider, monkeypatch) -> None:
    """Its own refusal of one call, meant as "try it again later", is worth
    trying again, and says nothing of its other orders and refunds."""
    _answered(provider, monkeypatch, lambda request: LATER[provider.identifier]())
    with pytest.raises(ProviderError) as refused:
        provider.refund_create(
            order_no="P20261206CONTRACT00005",
            refund_no="R20261206CONTRACT00005",
            amount_fen=100,
            total_fen=1234,
            reason="",
        )
    assert (refused.value.retryable, refused.value.unreachable) == (True, False)

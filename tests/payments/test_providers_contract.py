"""What every payment provider the project ships promises (the contract of
``BasePaymentProvider``), checked on each against its sandbox channel."""

from __future__ import annotations

import datetime as dt

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

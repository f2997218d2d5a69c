"""The WeChat Pay channel, both sides: our provider talking to the sandbox
over WeChat's wire format, the sandbox's callbacks as our provider reads
them, and both checked against a third party (the wechatpayv3 SDK)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import secrets
import types
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
import wechatpayv3.core
import wechatpayv3.utils
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.utils import timezone
from requests.structures import CaseInsensitiveDict
from wechatpayv3 import WeChatPay, WeChatPayType

from payments.models import SandboxRefund, SandboxTrade
from payments.providers import provider_for
from payments.providers import wechat as wechat_provider
from payments.providers.base import NotifyRejected, ProviderError
from payments.providers.wechat import WechatPayProvider
from payments.sandbox import books, keys
from payments.sandbox.channels import sandbox_for
from payments.sandbox.wechat import WechatSandbox

pytestmark = pytest.mark.django_db

NOTIFY_URL = "https://citizen.example/api/v1/payments/notify/wechat/"
SANDBOX_HOST = "https://wechat.sandbox.invalid"


@pytest.fixture
def provider() -> WechatPayProvider:
    built = provider_for("wechat")
    assert isinstance(built, WechatPayProvider)
    return built


@pytest.fixture
def sandbox() -> WechatSandbox:
    built = sandbox_for("wechat")
    assert isinstance(built, WechatSandbox)
    return built


def new_order_no() -> str:
    return f"P{timezone.localtime():%Y%m%d}{secrets.token_hex(7).upper()}"


def open_order(provider: WechatPayProvider, *, amount_fen: int = 1200) -> str:
    order_no = new_order_no()
    provider.checkout_create(
        order_no=order_no,
        amount_fen=amount_fen,
        description="长沙市不动产登记费",
        expires_at=timezone.now() + dt.timedelta(minutes=30),
        notify_url=NOTIFY_URL,
    )
    return order_no


def paid_order(provider: WechatPayProvider, *, amount_fen: int = 1200) -> SandboxTrade:
    order_no = open_order(provider, amount_fen=amount_fen)
    return books.trade_pay(channel="wechat", order_no=order_no, succeed=True)


def platform_headers(
    body: bytes,
    *,
    key: rsa.RSAPrivateKey | None = None,
    timestamp: int | None = None,
    serial: str | None = None,
) -> dict[str, str]:
    """Signature headers as WeChat writes them, made here (not by the
    sandbox), so a test can sign with another key or another clock."""
    stamp = str(timestamp if timestamp is not None else int(timezone.now().timestamp()))
    nonce = secrets.token_hex(16)
    signature = (key or keys.private_key("wechat.platform")).sign(
        f"{stamp}\n{nonce}\n".encode() + body + b"\n", padding.PKCS1v15(), hashes.SHA256()
    )
    return {
        "Wechatpay-Timestamp": stamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": base64.b64encode(signature).decode(),
        "Wechatpay-Serial": serial or keys.serial("wechat.platform"),
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        "Content-Type": "application/json",
    }


def sealed_body(
    transaction: dict[str, Any], *, apiv3_key: bytes | None = None, plaintext: bytes | None = None
) -> bytes:
    """A TRANSACTION.SUCCESS body around ``transaction`` (or ``plaintext``
    as it is), encrypted here."""
    nonce = secrets.token_hex(6)
    sealed = AESGCM(apiv3_key or keys.secret("wechat.apiv3")).encrypt(
        nonce.encode(),
        plaintext if plaintext is not None else json.dumps(transaction).encode(),
        b"transaction",
    )
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "create_time": timezone.localtime().isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": "transaction",
                "nonce": nonce,
            },
        },
        ensure_ascii=False,
    ).encode()


def rejection(provider: WechatPayProvider, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(NotifyRejected) as caught:
        provider.notify_parse(headers=headers, body=body)
    return caught.value.reason


def provider_through(
    provider: WechatPayProvider, handler: Callable[[httpx.Request], httpx.Response]
) -> WechatPayProvider:
    """Our provider with the same credentials, its traffic through ``handler``."""
    client = httpx.Client(base_url=SANDBOX_HOST, transport=httpx.MockTransport(handler))
    return WechatPayProvider(provider.credentials, client)


# --- Paying, querying, closing ---------------------------------------------------------------


def test_checkout_opens_the_trade_and_gives_the_code_to_scan(provider, sandbox):
    order_no = new_order_no()
    expires_at = timezone.now() + dt.timedelta(minutes=30)
    checkout = provider.checkout_create(
        order_no=order_no,
        amount_fen=1200,
        description="长沙市不动产登记费",
        expires_at=expires_at,
        notify_url=NOTIFY_URL,
    )

    assert checkout["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    trade = books.trade_get(channel="wechat", merchant_id=sandbox.merchant_id, order_no=order_no)
    assert trade is not None
    assert (trade.state, trade.amount_fen, trade.notify_url) == ("NOTPAY", 1200, NOTIFY_URL)
    assert trade.expires_at == expires_at.replace(microsecond=0)


def test_opening_the_same_order_again_gives_the_same_code_and_another_amount_is_refused(
    provider,
):
    order_no = new_order_no()
    kwargs = {
        "order_no": order_no,
        "description": "长沙市不动产登记费",
        "expires_at": timezone.now() + dt.timedelta(minutes=30),
        "notify_url": NOTIFY_URL,
    }
    first = provider.checkout_create(amount_fen=1200, **kwargs)
    assert provider.checkout_create(amount_fen=1200, **kwargs) == first

    with pytest.raises(ProviderError) as caught:
        provider.checkout_create(amount_fen=1300, **kwargs)
    assert (caught.value.code, caught.value.retryable) == ("OUT_TRADE_NO_USED", False)


def test_order_query_shows_the_order_pending_then_paid(provider):
    order_no = open_order(provider)

    before = provider.order_query(order_no=order_no)
    assert (before.state, before.raw_state, before.amount_fen) == ("pending", "NOTPAY", 1200)
    assert before.transaction_id == ""

    trade = books.trade_pay(channel="wechat", order_no=order_no, succeed=True)
    after = provider.order_query(order_no=order_no)
    assert (after.state, after.raw_state, after.amount_fen) == ("paid", "SUCCESS", 1200)
    assert after.transaction_id == trade.transaction_id
    assert after.merchant_id == settings.PAYMENTS_CHANNELS["wechat"]["merchant_id"]
    assert trade.paid_at is not None
    assert after.paid_at == trade.paid_at.replace(microsecond=0)


def test_a_failed_payment_queries_as_failed(provider):
    order_no = open_order(provider)
    books.trade_pay(channel="wechat", order_no=order_no, succeed=False)

    result = provider.order_query(order_no=order_no)
    assert (result.state, result.raw_state) == ("failed", "PAYERROR")


def test_querying_an_order_wechat_never_saw_is_a_provider_error(provider):
    with pytest.raises(ProviderError) as caught:
        provider.order_query(order_no=new_order_no())
    assert (caught.value.code, caught.value.retryable) == ("ORDER_NOT_EXIST", False)


def test_closing_an_open_order_closes_it_at_wechat(provider):
    order_no = open_order(provider)

    provider.order_close(order_no=order_no)
    provider.order_close(order_no=order_no)  # again: still fine

    result = provider.order_query(order_no=order_no)
    assert (result.state, result.raw_state) == ("closed", "CLOSED")
    with pytest.raises(books.SandboxRefusal):
        books.trade_pay(channel="wechat", order_no=order_no, succeed=True)


def test_closing_an_order_never_opened_is_fine(provider):
    provider.order_close(order_no=new_order_no())


def test_a_paid_order_cannot_be_closed(provider):
    trade = paid_order(provider)

    with pytest.raises(ProviderError) as caught:
        provider.order_close(order_no=trade.order_no)
    assert (caught.value.code, caught.value.retryable) == ("ORDERPAID", False)
    assert provider.order_query(order_no=trade.order_no).state == "paid"


# --- Refunds ---------------------------------------------------------------------------------


def test_a_refund_settles_at_once_when_the_sandbox_has_no_delay(provider):
    trade = paid_order(provider, amount_fen=1200)

    result = provider.refund_create(
        order_no=trade.order_no, refund_no="R1" + trade.order_no[1:], amount_fen=500,
        total_fen=1200, reason="材料不全，退回申请",
    )  # fmt: skip
    assert (result.state, result.amount_fen, result.failure_reason) == ("succeeded", 500, "")
    assert result.refund_id

    queried = provider.refund_query(order_no=trade.order_no, refund_no=result.refund_no)
    assert queried == result
    # WeChat shows a refunded trade as REFUND; for us it is still paid.
    order = provider.order_query(order_no=trade.order_no)
    assert (order.state, order.raw_state) == ("paid", "REFUND")


def test_asking_for_the_same_refund_twice_is_one_refund(provider):
    trade = paid_order(provider)
    kwargs = {"order_no": trade.order_no, "refund_no": "R" + trade.order_no[1:], "total_fen": 1200}

    first = provider.refund_create(amount_fen=300, reason="", **kwargs)
    again = provider.refund_create(amount_fen=300, reason="", **kwargs)
    assert again.refund_id == first.refund_id
    assert SandboxRefund.objects.filter(trade=trade).count() == 1


def test_a_refund_is_pending_until_wechat_settles_it(provider, settings):
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 60
    trade = paid_order(provider)
    refund_no = "R" + trade.order_no[1:]

    result = provider.refund_create(
        order_no=trade.order_no, refund_no=refund_no, amount_fen=1200, total_fen=1200, reason=""
    )
    assert result.state == "pending"
    assert provider.refund_query(order_no=trade.order_no, refund_no=refund_no).state == "pending"

    SandboxRefund.objects.filter(refund_no=refund_no).update(
        settles_at=timezone.now() - dt.timedelta(seconds=1)
    )
    settled = provider.refund_query(order_no=trade.order_no, refund_no=refund_no)
    assert (settled.state, settled.amount_fen) == ("succeeded", 1200)


def test_refunds_beyond_what_was_paid_are_refused(provider):
    trade = paid_order(provider, amount_fen=1000)

    with pytest.raises(ProviderError) as caught:
        provider.refund_create(
            order_no=trade.order_no, refund_no="RA" + trade.order_no[2:], amount_fen=1001,
            total_fen=1000, reason="",
        )  # fmt: skip
    assert (caught.value.code, caught.value.retryable) == ("INVALID_REQUEST", False)

    provider.refund_create(
        order_no=trade.order_no, refund_no="RB" + trade.order_no[2:], amount_fen=600,
        total_fen=1000, reason="",
    )  # fmt: skip
    with pytest.raises(ProviderError) as caught:
        provider.refund_create(
            order_no=trade.order_no, refund_no="RC" + trade.order_no[2:], amount_fen=401,
            total_fen=1000, reason="",
        )  # fmt: skip
    assert caught.value.code == "INVALID_REQUEST"


def test_an_unpaid_order_cannot_be_refunded(provider):
    order_no = open_order(provider)

    with pytest.raises(ProviderError) as caught:
        provider.refund_create(
            order_no=order_no, refund_no="R" + order_no[1:], amount_fen=100, total_fen=1200,
            reason="",
        )  # fmt: skip
    assert (caught.value.code, caught.value.retryable) == ("INVALID_REQUEST", False)


def test_querying_an_unknown_refund_is_a_provider_error(provider):
    with pytest.raises(ProviderError) as caught:
        provider.refund_query(order_no=new_order_no(), refund_no="RNOSUCHREFUND")
    assert caught.value.code == "RESOURCE_NOT_EXISTS"


# --- The daily bill --------------------------------------------------------------------------


def test_todays_statement_lists_the_charge_and_the_refund(provider):
    trade = paid_order(provider, amount_fen=2500)
    refund_no = "R" + trade.order_no[1:]
    refund = provider.refund_create(
        order_no=trade.order_no, refund_no=refund_no, amount_fen=700, total_fen=2500, reason=""
    )
    assert refund.state == "succeeded"
    unpaid = open_order(provider)

    lines = provider.statement_download(date=timezone.localdate())

    by_kind = {line.kind: line for line in lines if line.order_no == trade.order_no}
    charge, refunded = by_kind["charge"], by_kind["refund"]
    assert (charge.reference, charge.amount_fen, charge.state) == (
        trade.transaction_id,
        2500,
        "paid",
    )
    assert trade.paid_at is not None
    assert charge.at == trade.paid_at.replace(microsecond=0)
    assert (refunded.reference, refunded.amount_fen, refunded.state) == (
        refund_no,
        700,
        "succeeded",
    )
    assert unpaid not in {line.order_no for line in lines}


def test_a_day_without_trades_has_an_empty_statement(provider):
    assert provider.statement_download(date=timezone.localdate() - dt.timedelta(days=3)) == []


def test_a_bill_that_does_not_match_its_hash_is_refused(provider, sandbox):
    paid_order(provider)

    def corrupt(request: httpx.Request) -> httpx.Response:
        answer = sandbox.handle(request)
        if request.url.path == "/v3/billdownload/file":
            return httpx.Response(200, content=answer.content.replace(b"SUCCESS", b"SUCCES5"))
        return answer

    with pytest.raises(ProviderError) as caught:
        provider_through(provider, corrupt).statement_download(date=timezone.localdate())
    assert caught.value.code == "BILL_HASH"


# --- Signatures on the API -------------------------------------------------------------------


def test_wechat_refuses_a_request_signed_with_another_key(provider):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    impostor = WechatPayProvider(
        dataclasses.replace(provider.credentials, merchant_private_key=other), provider.http
    )
    with pytest.raises(ProviderError) as caught:
        impostor.order_query(order_no=new_order_no())
    assert (caught.value.code, caught.value.retryable) == ("SIGN_ERROR", False)


def test_wechat_refuses_a_request_signed_ten_minutes_ago(provider, monkeypatch):
    now = int(timezone.now().timestamp())
    monkeypatch.setattr(wechat_provider, "_now_seconds", lambda: now - 600)
    with pytest.raises(ProviderError) as caught:
        provider.checkout_create(
            order_no=new_order_no(), amount_fen=100, description="x",
            expires_at=timezone.now() + dt.timedelta(minutes=5), notify_url=NOTIFY_URL,
        )  # fmt: skip
    # WeChat's refusal, whose own stamp is ten minutes off our clock too.
    assert "SIGN_ERROR" in str(caught.value) and caught.value.code == "ANSWER_SIGNATURE"


def test_an_answer_not_signed_by_wechat_is_refused(provider, sandbox):
    order_no = open_order(provider)

    def forge(request: httpx.Request) -> httpx.Response:
        answer = sandbox.handle(request)
        return httpx.Response(
            answer.status_code,
            headers=answer.headers,
            content=answer.content.replace(b"NOTPAY", b"SUCCESS"),
        )

    with pytest.raises(ProviderError) as caught:
        provider_through(provider, forge).order_query(order_no=order_no)
    assert caught.value.code == "ANSWER_SIGNATURE"


def test_a_refusal_whose_signature_does_not_hold_is_not_believed(provider, sandbox):
    """A refusal steers us too: RESOURCE_NOT_EXISTS for a refund lets a
    refund WeChat refused count as failed, its amount free for another. A
    signed refusal whose signature does not hold is no answer: asked again
    later. One without a signature is believed, as WeChat's own SDK
    (wechatpayv3, which checks successes only) believes it."""
    trade = paid_order(provider)
    refund_no = "R1" + trade.order_no[1:]

    def answered(forge):
        def handle(request: httpx.Request) -> httpx.Response:
            answer = sandbox.handle(request)
            return httpx.Response(
                answer.status_code, headers=forge(answer.headers), content=answer.content
            )

        with pytest.raises(ProviderError) as caught:
            provider_through(provider, handle).refund_query(
                order_no=trade.order_no, refund_no=refund_no
            )
        return caught.value

    tampered = answered(lambda headers: {**headers, "Wechatpay-Signature": "c2lnbmF0dXJl"})
    assert (tampered.code, tampered.retryable) == ("ANSWER_SIGNATURE", True)
    assert "RESOURCE_NOT_EXISTS" in str(tampered)
    assert not provider.refund_unknown(tampered)
    # Signed, or not signed at all, the refusal is believed.
    for forge in (
        lambda headers: headers,
        lambda headers: {k: v for k, v in headers.items() if not k.startswith("wechatpay-")},
    ):
        assert provider.refund_unknown(answered(forge))


# --- Callbacks -------------------------------------------------------------------------------


def test_wechat_calls_back_on_success_only(provider, sandbox):
    order_no = open_order(provider)
    trade = books.trade_get(channel="wechat", merchant_id=sandbox.merchant_id, order_no=order_no)
    assert trade is not None
    assert sandbox.payment_notify(trade) is None
    failed = books.trade_pay(channel="wechat", order_no=order_no, succeed=False)
    assert sandbox.payment_notify(failed) is None


def test_a_genuine_callback_reads_as_paid(provider, sandbox):
    trade = paid_order(provider, amount_fen=4321)
    built = sandbox.payment_notify(trade)
    assert built is not None
    headers, body = built

    result = provider.notify_parse(headers=headers, body=body)

    assert (result.order_no, result.state, result.raw_state) == (trade.order_no, "paid", "SUCCESS")
    assert (result.transaction_id, result.amount_fen) == (trade.transaction_id, 4321)
    assert (result.merchant_id, result.app_id) == (trade.merchant_id, trade.app_id)
    assert trade.paid_at is not None
    assert result.paid_at == trade.paid_at.replace(microsecond=0)
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["event_type"] == "TRANSACTION.SUCCESS"


def test_callback_headers_are_read_whatever_their_case(provider, sandbox):
    headers, body = sandbox.payment_notify(paid_order(provider))  # type: ignore[misc]

    lower = {name.lower(): value for name, value in headers.items()}
    assert provider.notify_parse(headers=lower, body=body).state == "paid"
    meta = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    assert provider.notify_parse(headers=meta, body=body).state == "paid"


def test_a_tampered_callback_is_refused(provider, sandbox):
    headers, body = sandbox.payment_notify(paid_order(provider))  # type: ignore[misc]
    tampered = body.replace("支付成功".encode(), "支付失败".encode())
    assert tampered != body

    assert rejection(provider, headers, tampered) == "bad_signature"


def test_a_callback_signed_with_another_key_is_refused(provider, sandbox):
    _, body = sandbox.payment_notify(paid_order(provider))  # type: ignore[misc]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert rejection(provider, platform_headers(body, key=other), body) == "bad_signature"


@pytest.mark.parametrize("offset", [-301, 301, -3600, 3600])
def test_a_callback_stamped_five_minutes_off_is_refused(provider, sandbox, offset):
    _, body = sandbox.payment_notify(paid_order(provider))  # type: ignore[misc]
    stamp = int(timezone.now().timestamp()) + offset

    assert rejection(provider, platform_headers(body, timestamp=stamp), body) == "stale_timestamp"


def test_a_callback_stamped_within_the_window_is_read(provider, sandbox):
    _, body = sandbox.payment_notify(paid_order(provider))  # type: ignore[misc]
    stamp = int(timezone.now().timestamp()) - 240

    assert provider.notify_parse(headers=platform_headers(body, timestamp=stamp), body=body)


def test_a_callback_naming_a_key_we_do_not_know_is_refused(provider, sandbox):
    _, body = sandbox.payment_notify(paid_order(provider))  # type: ignore[misc]
    headers = platform_headers(body, serial="PUB_KEY_ID_0114232134912410000000000000000000")

    assert rejection(provider, headers, body) == "unknown_key"


def test_a_callback_for_another_merchant_is_refused(provider, sandbox):
    order_no = new_order_no()
    books.trade_open(
        channel="wechat",
        merchant_id="1900000999",
        app_id=sandbox.app_id,
        order_no=order_no,
        amount_fen=100,
        description="别家的订单",
        notify_url=NOTIFY_URL,
        expires_at=timezone.now() + dt.timedelta(minutes=30),
    )
    trade = books.trade_pay(channel="wechat", order_no=order_no, succeed=True)
    headers, body = sandbox.payment_notify(trade)  # type: ignore[misc]

    assert rejection(provider, headers, body) == "wrong_merchant"


def test_a_callback_for_another_app_is_refused(provider, sandbox):
    trade = paid_order(provider)
    transaction = {**sandbox.transaction(trade), "appid": "wx0000000000000000"}
    body = sealed_body(transaction)

    assert rejection(provider, platform_headers(body), body) == "wrong_merchant"


def test_a_callback_sealed_with_another_key_cannot_be_read(provider, sandbox):
    trade = paid_order(provider)
    body = sealed_body(sandbox.transaction(trade), apiv3_key=secrets.token_hex(16).encode())

    assert rejection(provider, platform_headers(body), body) == "decrypt_failed"


def test_a_callback_sealed_here_reads_like_the_sandboxs(provider, sandbox):
    trade = paid_order(provider)
    body = sealed_body(sandbox.transaction(trade))

    assert provider.notify_parse(headers=platform_headers(body), body=body).state == "paid"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, b"garbage"),
        ({"Wechatpay-Timestamp": "1", "Wechatpay-Nonce": "n"}, b"{}"),
        ({}, b""),
    ],
)
def test_garbage_without_its_headers_is_malformed(provider, headers, body):
    assert rejection(provider, headers, body) == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"[]",
        b'{"resource_type": "encrypt-resource"}',
        json.dumps(
            {"resource_type": "encrypt-resource", "resource": {"algorithm": "RC4"}}
        ).encode(),
        "\udcff".encode("utf-8", "surrogatepass"),
    ],
)
def test_signed_garbage_is_malformed(provider, body):
    assert rejection(provider, platform_headers(body), body) == "malformed"


# Deeper than Python's recursion limit: json.loads raises RecursionError.
DEEP = [b"[" * 5000 + b"]" * 5000, b'{"a": ' * 5000 + b"1" + b"}" * 5000]


@pytest.mark.parametrize("deep", DEEP, ids=["array", "object"])
def test_a_signed_callback_nested_too_deep_is_malformed(provider, deep):
    assert rejection(provider, platform_headers(deep), deep) == "malformed"
    sealed = sealed_body({}, plaintext=deep)
    assert rejection(provider, platform_headers(sealed), sealed) == "malformed"


@pytest.mark.parametrize("deep", DEEP, ids=["array", "object"])
def test_a_callback_nested_too_deep_is_refused_to_wechat_not_a_server_error(api, deep):
    """Through the view and through the layers gunicorn serves (the notify
    fast path)."""
    from config.wsgi import application
    from tests.payments.test_notify_api import post
    from tests.wsgi import environ_for, wsgi_call

    for body in (deep, sealed_body({}, plaintext=deep)):
        headers = platform_headers(body)
        response = post(api, "wechat", {**headers, "Content-Type": "application/json"}, body)
        assert response.status_code == 400 and response.json()["code"] == "FAIL"
        environ = environ_for(
            "/api/v1/payments/notify/wechat/",
            body,
            "application/json",
            **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
        )
        status, _headers, answer = wsgi_call(application, environ)
        assert status == 400 and json.loads(answer)["code"] == "FAIL"


def test_our_reply_to_a_callback_is_wechats(provider, sandbox):
    accepted = provider.notify_reply(accepted=True)
    assert (accepted.status, accepted.body) == (204, b"")

    refused = provider.notify_reply(accepted=False, message="签名错误")
    assert (refused.status, refused.content_type) == (400, "application/json")
    assert json.loads(refused.body) == {"code": "FAIL", "message": "签名错误"}

    assert sandbox.notify_acknowledged(httpx.Response(accepted.status))
    assert sandbox.notify_acknowledged(httpx.Response(200, text="anything"))
    assert not sandbox.notify_acknowledged(httpx.Response(refused.status, content=refused.body))
    assert not sandbox.notify_acknowledged(httpx.Response(500))


def test_wechat_retries_on_its_documented_schedule(sandbox):
    assert sandbox.notify_schedule == (
        15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
    )  # fmt: skip
    assert sum(sandbox.notify_schedule) == 24 * 3600 + 4 * 60  # "24h4m" in WeChat's words


# --- The wechatpayv3 SDK as a third party ----------------------------------------------------


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem_public(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class SandboxRequests:
    """Stands in for ``requests`` inside wechatpayv3: each request the SDK
    makes is prepared by requests itself (so its bytes are what the SDK
    would send) and answered by the sandbox."""

    def __init__(self, sandbox: WechatSandbox) -> None:
        self.sandbox = sandbox

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        prepared = requests.Request(
            method,
            url,
            headers=kwargs.get("headers"),
            json=kwargs.get("json"),
            data=kwargs.get("data"),
        ).prepare()
        body = prepared.body or b""
        answer = self.sandbox.handle(
            httpx.Request(
                method,
                prepared.url or url,
                headers=dict(prepared.headers),
                content=body.encode() if isinstance(body, str) else body,
            )
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(answer.headers.items())
        response._content = answer.content
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.url = url
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("POST", url, **kwargs)


@pytest.fixture
def sdk(sandbox, monkeypatch) -> WeChatPay:
    """The SDK as a merchant configures it in platform-public-key mode (so
    it downloads no certificates), talking to the sandbox."""
    config = settings.PAYMENTS_CHANNELS["wechat"]
    client = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=config["merchant_id"],
        private_key=_pem_private(keys.private_key("wechat.merchant")),
        cert_serial_no=keys.serial("wechat.merchant"),
        appid=config["app_id"],
        apiv3_key=keys.secret("wechat.apiv3").decode(),
        notify_url=NOTIFY_URL,
        public_key=_pem_public(keys.private_key("wechat.platform").public_key()),
        public_key_id=keys.serial("wechat.platform"),
    )
    client._core._gate_way = SANDBOX_HOST
    monkeypatch.setattr(wechatpayv3.core, "requests", SandboxRequests(sandbox))
    return client


def test_the_sdk_verifies_and_decrypts_the_sandboxs_callback(provider, sandbox, sdk):
    trade = paid_order(provider, amount_fen=880)
    headers, body = sandbox.payment_notify(trade)  # type: ignore[misc]

    data = sdk.callback(headers, body)

    assert data is not None
    assert data["event_type"] == "TRANSACTION.SUCCESS"
    assert data["resource"] == sandbox.transaction(trade, state="SUCCESS")
    ours = provider.notify_parse(headers=headers, body=body)
    resource = data["resource"]
    assert (resource["out_trade_no"], resource["transaction_id"]) == (
        ours.order_no,
        ours.transaction_id,
    )
    assert resource["amount"]["total"] == ours.amount_fen == 880
    assert dt.datetime.fromisoformat(resource["success_time"]) == ours.paid_at


def test_the_sdk_refuses_a_tampered_callback(provider, sandbox, sdk):
    headers, body = sandbox.payment_notify(paid_order(provider))  # type: ignore[misc]
    tampered = body.replace(b'"event_type":"TRANSACTION.SUCCESS"', b'"event_type":"TRANSACTION.X"')
    assert tampered != body

    assert sdk.callback(headers, tampered) is None
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert sdk.callback(platform_headers(body, key=other), body) is None


def test_the_sdk_and_our_provider_read_the_same_callback(provider, sandbox, sdk):
    """A callback sealed and signed here, by neither side: both read it alike."""
    trade = paid_order(provider)
    body = sealed_body(sandbox.transaction(trade, state="SUCCESS"))
    headers = platform_headers(body)

    assert sdk.callback(headers, body)["resource"]["out_trade_no"] == trade.order_no
    assert provider.notify_parse(headers=headers, body=body).order_no == trade.order_no


def test_our_authorization_header_is_the_sdks_to_the_byte(provider, sandbox, monkeypatch):
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return sandbox.handle(request)

    ours = provider_through(provider, record)
    order_no = new_order_no()
    ours.checkout_create(
        order_no=order_no, amount_fen=990, description="长沙市公积金提取手续费",
        expires_at=timezone.now() + dt.timedelta(minutes=30), notify_url=NOTIFY_URL,
    )  # fmt: skip
    ours.order_query(order_no=order_no)

    for request in sent:
        authorization = request.headers["Authorization"]
        fields = dict(part.split("=", 1) for part in authorization.split(" ", 1)[1].split(","))
        fields = {name: value.strip('"') for name, value in fields.items()}
        # The SDK stamps with time.time(): give it our request's second.
        monkeypatch.setattr(
            wechatpayv3.utils, "time", types.SimpleNamespace(time=lambda f=fields: f["timestamp"])
        )
        expected = wechatpayv3.utils.build_authorization(
            request.url.raw_path.decode(),
            request.method,
            provider.credentials.merchant_id,
            provider.credentials.merchant_serial,
            provider.credentials.merchant_private_key,
            data=request.content.decode(),
            nonce_str=fields["nonce_str"],
        )
        assert authorization == expected


def test_the_sdk_pays_queries_closes_and_refunds_through_the_sandbox(provider, sdk):
    """The SDK signs its requests its way, the sandbox accepts them, and the
    SDK verifies every answer's signature (it raises when one fails)."""
    order_no = new_order_no()
    code, message = sdk.pay(
        description="长沙市不动产登记费",
        out_trade_no=order_no,
        amount={"total": 1500},
        time_expire=(timezone.localtime() + dt.timedelta(minutes=30)).isoformat(timespec="seconds"),
        pay_type=WeChatPayType.NATIVE,
    )
    assert code == 200, message
    assert json.loads(message)["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")

    code, message = sdk.query(out_trade_no=order_no)
    assert (code, json.loads(message)["trade_state"]) == (200, "NOTPAY")

    trade = books.trade_pay(channel="wechat", order_no=order_no, succeed=True)
    code, message = sdk.query(out_trade_no=order_no)
    assert json.loads(message)["transaction_id"] == trade.transaction_id

    code, message = sdk.close(out_trade_no=order_no)
    assert (code, json.loads(message)["code"]) == (400, "ORDERPAID")

    code, message = sdk.refund(
        out_refund_no="R" + order_no[1:],
        amount={"refund": 500, "total": 1500, "currency": "CNY"},
        out_trade_no=order_no,
    )
    assert (code, json.loads(message)["status"]) == (200, "SUCCESS")
    code, message = sdk.query_refund(out_refund_no="R" + order_no[1:])
    assert (code, json.loads(message)["amount"]["refund"]) == (200, 500)

    other = open_order(provider)
    code, message = sdk.close(out_trade_no=other)
    assert (code, message) == (204, b"")


def test_the_sdk_downloads_and_checks_the_bill(provider, sdk):
    trade = paid_order(provider, amount_fen=1999)

    code, message = sdk.trade_bill(bill_date=timezone.localdate().isoformat())  # tar_type GZIP
    assert code == 200, message
    answer = json.loads(message)
    assert answer["download_url"].startswith(SANDBOX_HOST + "/v3/billdownload/file?token=")

    code, content = sdk.download_bill(answer["download_url"])
    assert code == 200
    assert hashlib.sha1(content).hexdigest() == answer["hash_value"]
    text = gzip.decompress(content).decode("utf-8")
    assert text.startswith("交易时间,公众账号ID,商户号")
    assert f"`{trade.transaction_id},`{trade.order_no}," in text
    assert "`19.99," in text
    assert text.splitlines()[-2].startswith("总交易单数")


def test_the_sandbox_refuses_the_sdk_signing_with_another_merchant_key(sandbox, monkeypatch):
    config = settings.PAYMENTS_CHANNELS["wechat"]
    stranger = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=config["merchant_id"],
        private_key=_pem_private(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        cert_serial_no=keys.serial("wechat.merchant"),
        appid=config["app_id"],
        apiv3_key=keys.secret("wechat.apiv3").decode(),
        notify_url=NOTIFY_URL,
        public_key=_pem_public(keys.private_key("wechat.platform").public_key()),
        public_key_id=keys.serial("wechat.platform"),
    )
    stranger._core._gate_way = SANDBOX_HOST
    monkeypatch.setattr(wechatpayv3.core, "requests", SandboxRequests(sandbox))

    code, message = stranger.query(out_trade_no=new_order_no())
    assert (code, json.loads(message)["code"]) == (401, "SIGN_ERROR")


@pytest.mark.parametrize("success_time", ["", "yesterday", "2026-12-07T08:00:00", 17, None])
def test_a_refund_time_that_does_not_read_leaves_the_refund_succeeded_undated(success_time):
    refund = {
        "out_refund_no": "R1",
        "refund_id": "50000000000000000001",
        "status": "SUCCESS",
        "amount": {"refund": 100, "total": 100},
        "success_time": success_time,
    }
    result = wechat_provider.read_refund(refund)
    assert (result.state, result.refund_no, result.succeeded_at) == ("succeeded", "R1", None)
    refund["success_time"] = "2026-12-07T08:00:00+08:00"
    assert wechat_provider.read_refund(refund).succeeded_at == dt.datetime.fromisoformat(
        "2026-12-07T08:00:00+08:00"
    )

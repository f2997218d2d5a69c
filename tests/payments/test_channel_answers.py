"""What the channels answer our own calls with, when we cannot read it:
nested past Python's recursion limit, not the channel's format, fields of
the wrong type, numbers and times out of range. Every such answer is a
:class:`ProviderError` (the channel failed), never another exception: the
order stays pending and is asked again, the refund is sent again, the
citizen is told the channel could not do it (502 ``payment_provider_error``),
as for any failure of the channel.

The answers come from the channel's edge (the HTTP transport), signed with
the sandbox's platform keys where the channel signs them, so that they reach
the code that reads them."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import secrets
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable

import httpx
import pytest
from django.utils import timezone

from payments.models import Refund
from payments.providers import provider_for
from payments.providers.base import BasePaymentProvider, ProviderError
from payments.sandbox.channels import sandbox_for
from tests.payments.conftest import CHANNELS, open_order

pytestmark = pytest.mark.django_db

NOTIFY_URL = "https://citizen.example/api/v1/payments/notify/"

# Deeper than Python's recursion limit: json raises RecursionError on them.
DEEP_ARRAY = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000
DEEP = {"array": DEEP_ARRAY, "object": DEEP_OBJECT}

CALLS = (
    "checkout_create",
    "order_query",
    "order_close",
    "refund_create",
    "refund_query",
    "statement_download",
)


def new_number(prefix: str) -> str:
    return f"{prefix}{timezone.localdate():%Y%m%d}{secrets.token_hex(7).upper()}"


def call(provider: BasePaymentProvider, name: str) -> object:
    """One of the provider's calls to the channel, about a new order."""
    order_no = new_number("P")
    if name == "checkout_create":
        return provider.checkout_create(
            order_no=order_no,
            amount_fen=2000,
            description="居民身份证换领",
            expires_at=timezone.now() + dt.timedelta(minutes=30),
            notify_url=NOTIFY_URL,
        )
    if name == "order_query":
        return provider.order_query(order_no=order_no)
    if name == "order_close":
        return provider.order_close(order_no=order_no)
    if name == "refund_create":
        return provider.refund_create(
            order_no=order_no, refund_no=new_number("R"), amount_fen=700, total_fen=2000, reason=""
        )
    if name == "refund_query":
        return provider.refund_query(order_no=order_no, refund_no=new_number("R"))
    return provider.statement_download(date=timezone.localdate())


def answered(
    monkeypatch: pytest.MonkeyPatch, channel: str, answer: Callable[[httpx.Request], httpx.Response]
) -> BasePaymentProvider:
    """The channel's provider, every call of it answered by ``answer``."""
    provider = provider_for(channel)
    monkeypatch.setattr(provider.http, "_transport", httpx.MockTransport(answer))
    return provider


def unreadable(provider: BasePaymentProvider, name: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call(provider, name)
    if name == "refund_query":
        # Not "the channel has no such refund": that would fail the refund
        # and free its amount, where the money may have gone back.
        assert not provider.refund_unknown(caught.value)
    return caught.value


# --- WeChat Pay -----------------------------------------------------------------------------


def refund_asked_and_sent(integrator_api, order: dict) -> None:
    """The department asks for 7.00 back; the worker's run after the commit."""
    from payments import tasks

    asked = integrator_api.post(
        f"/api/v1/dept/payments/{order['order_no']}/refunds/",
        {"amount_fen": 700, "reason": "部分退费"},
        format="json",
    )
    assert asked.status_code == 201, asked.json()
    tasks.refund_send.delay(asked.json()["id"])


def refund_waits_then_is_sent_again(integrator_api, order: dict, monkeypatch) -> Refund:
    """With the channel's refund answers spoiled (by ``monkeypatch``), a
    department's refund stays pending with the reason why, and the sweep
    does not send it again before its time; with them mended, the sweep
    sends it again with the same number and it succeeds. The refund as it
    waited."""
    from payments import tasks

    refund_asked_and_sent(integrator_api, order)
    waiting = Refund.objects.get()
    assert waiting.status == "pending" and waiting.failure_reason
    Refund.objects.update(created_at=timezone.now() - dt.timedelta(minutes=1))
    assert tasks.payments_sweep()["refunds"] == 0
    assert Refund.objects.get().status == "pending"

    monkeypatch.undo()
    tasks.payments_sweep()
    tasks.payments_sweep()  # UnionPay settles asynchronously: found by the query
    assert Refund.objects.get().status == "succeeded"
    return waiting


def wechat_signed(status: int, body: bytes) -> httpx.Response:
    from payments.sandbox.wechat import WechatSandbox

    headers = {**WechatSandbox.signed_headers(body), "Content-Type": "application/json"}
    return httpx.Response(status, headers=headers, content=body)


@pytest.mark.parametrize("deep", DEEP)
@pytest.mark.parametrize("name", [c for c in CALLS if c != "order_close"])
def test_a_wechat_answer_nested_too_deep_is_a_provider_error(monkeypatch, name, deep) -> None:
    """Signed as WeChat signs it, so that it is read (a close's answer has
    no body to read)."""
    provider = answered(monkeypatch, "wechat", lambda r: wechat_signed(200, DEEP[deep].encode()))
    error = unreadable(provider, name)
    assert error.retryable and error.code == "BAD_ANSWER"


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("deep", DEEP)
@pytest.mark.parametrize("name", CALLS)
def test_a_wechat_refusal_nested_too_deep_is_a_provider_error(
    monkeypatch, name, deep, status, signed
) -> None:
    """A refusal is read before its signature is checked: read as a refusal
    whose body says nothing (its HTTP status), like one that is not JSON."""
    body = DEEP[deep].encode()

    def refusal(request: httpx.Request) -> httpx.Response:
        if signed:
            return wechat_signed(status, body)
        return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})

    error = unreadable(answered(monkeypatch, "wechat", refusal), name)
    assert error.code in (f"HTTP_{status}", "ANSWER_SIGNATURE")
    assert error.retryable == (status >= 500 or error.code == "ANSWER_SIGNATURE")


WECHAT_BILL_ANSWERS = {
    # Not a hex digest (compare_digest takes ASCII only).
    "hash not ascii": {"hash_type": "SHA1", "hash_value": "é" * 40},
    "url not a url": {"hash_type": "SHA1", "hash_value": "0" * 40, "download_url": "http://[::1"},
    "hash not text": {"hash_type": "SHA1", "hash_value": ["0"]},
}


@pytest.mark.parametrize("answer", WECHAT_BILL_ANSWERS.values(), ids=WECHAT_BILL_ANSWERS)
def test_a_wechat_bill_answer_that_does_not_read_is_a_provider_error(monkeypatch, answer) -> None:
    def bill(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/bill/tradebill":
            url = f"{request.url.scheme}://{request.url.host}/v3/billdownload/file?token=1"
            return wechat_signed(200, json.dumps({"download_url": url, **answer}).encode())
        return httpx.Response(200, content="交易时间\n".encode())

    unreadable(answered(monkeypatch, "wechat", bill), "statement_download")


# --- Alipay ---------------------------------------------------------------------------------


def alipay_method(request: httpx.Request) -> str:
    return request.url.params["method"].replace(".", "_") + "_response"


@pytest.mark.parametrize("deep", DEEP)
@pytest.mark.parametrize("where", ["response", "error_response", "sign"])
@pytest.mark.parametrize("name", CALLS)
def test_an_alipay_answer_nested_too_deep_is_a_provider_error(
    monkeypatch, name, where, deep
) -> None:
    def nested(request: httpx.Request) -> httpx.Response:
        node = {"response": alipay_method(request), "error_response": "error_response"}
        if where == "sign":
            text = f'{{"{alipay_method(request)}":{{"code":"10000"}},"sign":{DEEP[deep]}}}'
        else:
            text = f'{{"{node[where]}":{DEEP[deep]},"sign":"c2lnbg=="}}'
        return httpx.Response(200, text=text)

    error = unreadable(answered(monkeypatch, "alipay", nested), name)
    assert error.retryable


@pytest.mark.parametrize("status", [{"x": 1}, ["REFUND_SUCCESS"], 10000])
def test_an_alipay_refund_status_that_is_not_text_is_a_provider_error(monkeypatch, status) -> None:
    sandbox = sandbox_for("alipay")

    def refund_query(request: httpx.Request) -> httpx.Response:
        node = {"code": "10000", "msg": "Success", "refund_amount": "7.00"}
        return sandbox._answer(alipay_method(request), {**node, "refund_status": status})

    error = unreadable(answered(monkeypatch, "alipay", refund_query), "refund_query")
    assert error.retryable


def zipped(name: str, *, method: int = zipfile.ZIP_STORED, flags: int = 0) -> bytes:
    """A zip of one file ``name``, its compression method and flag bits
    then set to ``method`` and ``flags`` in both of its headers."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as files:
        files.writestr(name, b"x" * 100)
    data = bytearray(archive.getvalue())
    for signature, at_flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + at_flags
        data[at : at + 4] = flags.to_bytes(2, "little") + method.to_bytes(2, "little")
    return bytes(data)


def garbled_deflate(name: str) -> bytes:
    """A zip of one deflated file whose deflated data is garbage."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as files:
        files.writestr(name, secrets.token_bytes(4096))
    data = bytearray(archive.getvalue())
    start = data.index(b"PK\x03\x04") + 30 + len(name.encode())
    data[start : start + 64] = b"\xff" * 64
    return bytes(data)


BILLS: dict[str, Callable[[str], bytes]] = {
    # A compression method zipfile does not have: NotImplementedError.
    "unknown method": lambda name: zipped(name, method=99),
    # Encrypted (flag bit 0): RuntimeError, a password is required.
    "encrypted": lambda name: zipped(name, flags=1),
    # Deflated data that does not inflate: zlib.error, not BadZipFile.
    "garbled deflate": garbled_deflate,
}


@pytest.mark.parametrize("bill", BILLS.values(), ids=BILLS)
def test_an_alipay_bill_zip_that_does_not_unpack_is_a_provider_error(monkeypatch, bill) -> None:
    sandbox = sandbox_for("alipay")

    def bills(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/gateway.do":
            return sandbox._answer(
                alipay_method(request),
                {
                    "code": "10000",
                    "msg": "Success",
                    "bill_download_url": "https://alipay.sandbox.invalid/bill.zip",
                },
            )
        return httpx.Response(200, content=bill("bill.csv"))

    unreadable(answered(monkeypatch, "alipay", bills), "statement_download")


def test_an_alipay_bill_url_that_is_not_one_is_a_provider_error(monkeypatch) -> None:
    sandbox = sandbox_for("alipay")

    def bills(request: httpx.Request) -> httpx.Response:
        node = {"code": "10000", "msg": "Success", "bill_download_url": "http://[::1"}
        return sandbox._answer(alipay_method(request), node)

    unreadable(answered(monkeypatch, "alipay", bills), "statement_download")


# --- UnionPay -------------------------------------------------------------------------------


def unionpay_signed(request: httpx.Request, **fields: str) -> httpx.Response:
    """A signed answer about what ``request`` asked of, a success unless
    ``fields`` say otherwise."""
    from payments.sandbox.unionpay import UnionpaySandbox

    asked = dict(urllib.parse.parse_qsl(request.content.decode()))
    answer = {
        "version": "5.1.0",
        "merId": asked["merId"],
        "orderId": asked.get("orderId", ""),
        "txnType": asked["txnType"],
        "respCode": "00",
        "respMsg": "成功",
        "origRespCode": "00",
        "queryId": "512612061234567890123",
        "txnAmt": "2000",
        "tn": "799999999999999999999",
        **fields,
    }
    return UnionpaySandbox._answer({k: v for k, v in answer.items() if v})


@pytest.mark.parametrize("name", ["order_query", "order_close", "refund_create", "refund_query"])
def test_a_unionpay_amount_of_5000_digits_is_a_provider_error(monkeypatch, name) -> None:
    """int() refuses more than 4300 digits: a ValueError nobody caught."""

    def answer(request: httpx.Request) -> httpx.Response:
        return unionpay_signed(request, txnAmt="9" * 5000)

    unreadable(answered(monkeypatch, "unionpay", answer), name)


@pytest.mark.parametrize("bill", BILLS.values(), ids=BILLS)
def test_a_unionpay_statement_that_does_not_unpack_is_a_provider_error(monkeypatch, bill) -> None:
    provider = provider_for("unionpay")
    name = f"INN{timezone.localdate():%y%m%d}88ZM_{provider.credentials.merchant_id}"
    content = base64.b64encode(zlib.compress(bill(name))).decode()

    def statement(request: httpx.Request) -> httpx.Response:
        return unionpay_signed(request, fileContent=content)

    unreadable(answered(monkeypatch, "unionpay", statement), "statement_download")


# --- Ids and times we could not keep ---------------------------------------------------------


def queried_then_shown(citizen_api, monkeypatch, settings, channel, change, order: dict):
    """The sweep asks the channel about ``order`` (its answer rewritten by
    ``change``), then the citizen looks at the order once it has expired."""
    from payments import tasks
    from payments.models import PaymentOrder

    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    answered(monkeypatch, channel, rewritten(channel, change))
    assert tasks.payments_sweep()["orders"] == 1
    PaymentOrder.objects.filter(pk=order["id"]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    return citizen_api.get(f"/api/v1/payments/{order['id']}/")


def rewritten(channel: str, change: dict[str, str]) -> Callable[[httpx.Request], httpx.Response]:
    """The sandbox's answers, the fields of ``change`` written over (and
    signed again where the channel signs its answers)."""
    sandbox = sandbox_for(channel)
    handle = sandbox.handle

    def answer(request: httpx.Request) -> httpx.Response:
        original = handle(request)
        if channel == "wechat":
            if not original.content:
                return original
            data = json.loads(original.content)
            return wechat_signed(original.status_code, json.dumps({**data, **change}).encode())
        if channel == "alipay":
            if request.url.path != "/gateway.do":
                return original
            key = alipay_method(request)
            return sandbox._answer(key, {**json.loads(original.content)[key], **change})
        fields = dict(pair.split("=", 1) for pair in original.text.split("&"))
        return sandbox._answer({k: v for k, v in {**fields, **change}.items() if k != "signature"})

    return answer


# Each a paid trade's answer that reads, but names an id longer than our
# columns (PostgreSQL refused the row) or a time no zone conversion takes
# (OverflowError where it was stored).
UNKEPT = {
    "wechat id": ("wechat", {"transaction_id": "4" * 65}),
    "wechat time": ("wechat", {"success_time": "9999-12-31T23:59:59-12:00"}),
    "wechat year 1": ("wechat", {"success_time": "0001-01-01T00:00:00+08:00"}),
    "alipay id": ("alipay", {"trade_no": "2" * 65}),
    "alipay year 1": ("alipay", {"send_pay_date": "0001-01-01 00:00:00"}),
    "unionpay id": ("unionpay", {"queryId": "5" * 65}),
}


@pytest.mark.parametrize(("channel", "change"), UNKEPT.values(), ids=UNKEPT)
def test_a_paid_answer_with_an_id_or_time_we_could_not_keep_is_a_provider_error(
    monkeypatch, channel, change
) -> None:
    from payments.sandbox import books

    order_no = new_number("P")
    provider_for(channel).checkout_create(
        order_no=order_no,
        amount_fen=2000,
        description="居民身份证换领",
        expires_at=timezone.now() + dt.timedelta(minutes=30),
        notify_url=NOTIFY_URL,
    )
    books.trade_pay(channel=channel, order_no=order_no, succeed=True)
    provider = answered(monkeypatch, channel, rewritten(channel, change))

    with pytest.raises(ProviderError):
        provider.order_query(order_no=order_no)


@pytest.mark.parametrize(
    "times",
    [
        {"txnTime": "99991231235959", "traceTime": "1231235959"},
        {"txnTime": "19991231235959", "traceTime": "1231235959"},
    ],
    ids=["9999", "1999"],
)
@pytest.mark.parametrize("name", ["order_query", "refund_query"])
def test_a_unionpay_time_out_of_range_dates_nothing(monkeypatch, name, times) -> None:
    """UnionPay's times date a payment or a refund, they do not decide it:
    one out of range is read as one that does not read (dated now)."""
    provider = answered(monkeypatch, "unionpay", lambda r: unionpay_signed(r, **times))
    result = call(provider, name)
    moment = getattr(result, "paid_at", None) or getattr(result, "succeeded_at", None)
    assert moment is None or abs(moment - timezone.now()) < dt.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("channel", "change"),
    [("wechat", {"refund_id": "5" * 65}), ("unionpay", {"queryId": "5" * 65})],
    ids=["wechat", "unionpay"],
)
def test_a_refund_answer_with_an_id_we_could_not_keep_is_a_provider_error(
    monkeypatch, channel, change
) -> None:
    from payments.sandbox import books

    order_no = new_number("P")
    provider = provider_for(channel)
    provider.checkout_create(
        order_no=order_no,
        amount_fen=2000,
        description="居民身份证换领",
        expires_at=timezone.now() + dt.timedelta(minutes=30),
        notify_url=NOTIFY_URL,
    )
    books.trade_pay(channel=channel, order_no=order_no, succeed=True)
    refund_no = new_number("R")
    provider.refund_create(
        order_no=order_no, refund_no=refund_no, amount_fen=700, total_fen=2000, reason=""
    )
    provider = answered(monkeypatch, channel, rewritten(channel, change))

    with pytest.raises(ProviderError) as caught:
        provider.refund_query(order_no=order_no, refund_no=refund_no)
    assert not provider.refund_unknown(caught.value)


@pytest.mark.parametrize(("channel", "change"), UNKEPT.values(), ids=UNKEPT)
def test_a_payment_whose_id_or_time_we_could_not_keep_leaves_the_order_pending(
    citizen_api, awaiting, monkeypatch, settings, channel, change
) -> None:
    """Asked by the sweep and by its payer once expired: neither fails (on
    PostgreSQL the id was a DataError, on SQLite the time an OverflowError,
    both a 500 to the payer and the end of the sweep's orders)."""
    from payments.models import LedgerEntry, PaymentOrder
    from payments.sandbox import books

    order = open_order(citizen_api, awaiting, channel)
    books.trade_pay(channel=channel, order_no=order["order_no"], succeed=True)
    shown = queried_then_shown(citizen_api, monkeypatch, settings, channel, change, order)

    # What the channel says of the trade does not read, and it will not
    # close a paid one (UnionPay's close is a query, unreadable too): the
    # payer sees the order as it stands, open, for the sweep to settle.
    assert shown.status_code == 200, shown.content[:200]
    assert shown.json()["status"] == "pending"
    assert PaymentOrder.objects.get(pk=order["id"]).status == "pending"
    assert not LedgerEntry.objects.exists()


# --- Through the API and the workers ----------------------------------------------------------


def garbled(request: httpx.Request, channel: str) -> httpx.Response:
    """An answer of ``channel`` to ``request`` that we cannot read, signed
    where the channel signs its answers."""
    if channel == "wechat":
        if request.url.path.endswith("/close"):  # its success has no body: a refusal
            return httpx.Response(503, content=DEEP_ARRAY.encode())
        return wechat_signed(200, DEEP_ARRAY.encode())
    if channel == "alipay":
        return httpx.Response(200, text=f'{{"{alipay_method(request)}":{DEEP_OBJECT}}}')
    return unionpay_signed(request, txnAmt="9" * 5000)


def garbling(monkeypatch, channel: str, *, only: Callable[[httpx.Request], bool]) -> None:
    """The channel's answers to the calls ``only`` picks cannot be read;
    the others are the sandbox's. ``monkeypatch.undo()`` mends them."""
    handle = sandbox_for(channel).handle

    def answer(request: httpx.Request) -> httpx.Response:
        return garbled(request, channel) if only(request) else handle(request)

    answered(monkeypatch, channel, answer)


def checkout_call(request: httpx.Request) -> bool:
    return request.url.path.endswith(("/native", "appTransReq.do")) or (
        request.url.params.get("method") == "alipay.trade.precreate"
    )


def query_call(request: httpx.Request) -> bool:
    """A query or a close of an order."""
    return (
        request.url.path.startswith("/v3/pay/transactions/out-trade-no/")
        or request.url.params.get("method") in ("alipay.trade.query", "alipay.trade.close")
        or request.url.path.endswith("queryTrans.do")
    )


def refund_call(request: httpx.Request) -> bool:
    return (
        request.url.path.startswith("/v3/refund/")
        or request.url.params.get("method", "").startswith(
            ("alipay.trade.refund", "alipay.trade.fastpay")
        )
        or request.url.path.endswith(("backTransReq.do", "queryTrans.do"))
    )


@pytest.mark.parametrize("channel", ["wechat", "alipay"])
def test_a_checkout_answer_we_cannot_read_is_a_502_and_no_order(
    citizen_api, awaiting, monkeypatch, channel
) -> None:
    from payments.models import PaymentOrder

    garbling(monkeypatch, channel, only=checkout_call)

    response = citizen_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": channel}, format="json"
    )

    assert response.status_code == 502, response.content[:200]
    assert response.json()["code"] == "payment_provider_error"
    assert not PaymentOrder.objects.exists()


@pytest.mark.parametrize("channel", CHANNELS)
def test_switching_channel_while_the_open_orders_answers_do_not_read(
    citizen_api, awaiting, monkeypatch, channel
) -> None:
    """The open order's channel answers its close with what we cannot read:
    as if it were unreachable, the order closes here (a payment that still
    comes is a late one) and the order asked for is opened."""
    from payments.models import PaymentOrder

    first = open_order(citizen_api, awaiting, channel)
    garbling(monkeypatch, channel, only=query_call)
    then = "alipay" if channel != "alipay" else "wechat"

    switched = citizen_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": then}, format="json"
    )

    assert switched.status_code == 201, switched.content[:200]
    assert PaymentOrder.objects.get(pk=first["id"]).status == "closed"


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_expired_order_whose_channel_answers_what_we_cannot_read_is_closed_by_the_sweep(
    citizen_api, awaiting, monkeypatch, channel
) -> None:
    """Neither its query nor its close reads: its payer sees it pending (the
    wallet may have taken the money); the sweep closes it here, a payment
    that still comes being a late success."""
    from payments import tasks
    from payments.models import PaymentOrder

    order = open_order(citizen_api, awaiting, channel)
    PaymentOrder.objects.filter(pk=order["id"]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    garbling(monkeypatch, channel, only=query_call)

    shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")

    assert shown.status_code == 200, shown.content[:200]
    assert shown.json()["status"] == "pending"
    tasks.payments_sweep()
    assert citizen_api.get(f"/api/v1/payments/{order['id']}/").json()["status"] == "closed"


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_order_whose_query_does_not_read_stays_pending_until_it_does(
    citizen_api, awaiting, monkeypatch, settings, channel
) -> None:
    """The sweep asks, cannot read the answer, leaves the order pending and
    goes on; asked again once the answer reads, the payment is brought in."""
    from payments import tasks
    from payments.models import PaymentOrder
    from payments.sandbox import books

    order = open_order(citizen_api, awaiting, channel)
    books.trade_pay(channel=channel, order_no=order["order_no"], succeed=True)
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    garbling(monkeypatch, channel, only=query_call)

    assert tasks.payments_sweep()["orders"] == 1
    assert PaymentOrder.objects.get(pk=order["id"]).status == "pending"

    monkeypatch.undo()
    tasks.payments_sweep()
    assert PaymentOrder.objects.get(pk=order["id"]).status == "paid"


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_refund_whose_answers_do_not_read_stays_pending_and_is_sent_again(
    citizen_api, awaiting, pay, integrator_api, monkeypatch, settings, channel
) -> None:
    """The worker sending it does not crash: the refund keeps its amount
    (the money may have gone back), shows why it waits, and the sweep sends
    it again with the same number until an answer reads."""
    from payments.models import PaymentOrder

    order = open_order(citizen_api, awaiting, channel)
    pay(order)
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    garbling(monkeypatch, channel, only=refund_call)
    refund_waits_then_is_sent_again(integrator_api, order, monkeypatch)
    assert PaymentOrder.objects.get(pk=order["id"]).refunded_fen == 700


@pytest.mark.parametrize("status", [{"x": 1}, 10000])
def test_an_alipay_refund_whose_status_is_not_text_stays_pending(
    citizen_api, awaiting, pay, integrator_api, monkeypatch, settings, status
) -> None:
    from payments import tasks
    from payments.models import Refund

    order = open_order(citizen_api, awaiting, "alipay")
    pay(order)
    sandbox = sandbox_for("alipay")
    handle = sandbox.handle

    def odd_status(request: httpx.Request) -> httpx.Response:
        method = request.url.params.get("method")
        if method == "alipay.trade.refund":  # a repeated request: no money moved now
            node = {"code": "10000", "msg": "Success", "out_trade_no": order["order_no"]}
            return sandbox._answer(alipay_method(request), {**node, "fund_change": "N"})
        if method == "alipay.trade.fastpay.refund.query":
            node = {"code": "10000", "msg": "Success", "refund_amount": "7.00"}
            return sandbox._answer(alipay_method(request), {**node, "refund_status": status})
        return handle(request)

    answered(monkeypatch, "alipay", odd_status)
    refund_asked_and_sent(integrator_api, order)
    Refund.objects.update(created_at=timezone.now() - dt.timedelta(minutes=1))
    tasks.payments_sweep()

    assert Refund.objects.get().status == "pending"


# --- Text we could not store ------------------------------------------------------------------

# What JSON may carry and a text column may not: NUL (PostgreSQL refuses
# it) and a lone surrogate (not UTF-8).
UNSTORABLE = ["a\u0000b", "a\ud800b"]


@pytest.mark.parametrize("text", UNSTORABLE, ids=["nul", "surrogate"])
def test_a_refusal_whose_message_we_could_not_store_leaves_the_refund_pending(
    citizen_api, awaiting, pay, integrator_api, monkeypatch, text
) -> None:
    """WeChat Pay's refusal is shown as what holds the refund: its text
    fit for the column, the worker not crashed."""
    from payments.models import Refund

    order = open_order(citizen_api, awaiting, "wechat")
    pay(order)
    handle = sandbox_for("wechat").handle

    def refused(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/refund/domestic/refunds":
            body = json.dumps({"code": "SYSTEM_ERROR", "message": text}).encode()
            return httpx.Response(500, content=body, headers={"Content-Type": "application/json"})
        return handle(request)

    answered(monkeypatch, "wechat", refused)
    refund_asked_and_sent(integrator_api, order)

    waiting = Refund.objects.get()
    assert waiting.status == "pending" and "SYSTEM_ERROR" in waiting.failure_reason
    assert "\x00" not in waiting.failure_reason


UNSTORED = {
    "wechat id nul": ("wechat", {"transaction_id": "4200\u00001"}),
    "wechat id surrogate": ("wechat", {"transaction_id": "4200\ud8001"}),
    "alipay id nul": ("alipay", {"trade_no": "2026\u00001"}),
    "unionpay failure nul": ("unionpay", {"origRespCode": "0\x001"}),
    "unionpay id nul": ("unionpay", {"queryId": "5126\x001"}),
}


@pytest.mark.parametrize(("channel", "change"), UNSTORED.values(), ids=UNSTORED)
def test_an_answer_whose_text_we_could_not_store_is_no_server_error(
    citizen_api, awaiting, monkeypatch, settings, channel, change
) -> None:
    """An id is kept as the channel wrote it, or not at all: one we could
    not store does not read (the order stays pending). A state is recorded
    fit for the audit trail."""
    from payments.models import LedgerEntry
    from payments.sandbox import books

    order = open_order(citizen_api, awaiting, channel)
    books.trade_pay(
        channel=channel, order_no=order["order_no"], succeed="origRespCode" not in change
    )
    shown = queried_then_shown(citizen_api, monkeypatch, settings, channel, change, order)

    assert shown.status_code in (200, 502), shown.content[:200]
    assert not LedgerEntry.objects.exists()


def test_a_statement_line_whose_text_we_could_not_store_is_a_difference(monkeypatch) -> None:
    """Reported to the operators as the channel wrote it, fit for the
    report (the run failed storing it, and the day stayed unreconciled)."""
    from payments import reconciliation
    from payments.models import MismatchKind
    from payments.sandbox.unionpay import UnionpaySandbox

    date = timezone.localdate()
    provider = provider_for("unionpay")
    line = UnionpaySandbox._line(
        txnType="01", orderId="P\x00X", queryId="512\x00612", txnAmt=2000, at=timezone.now()
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as files:
        files.writestr(f"INN{date:%y%m%d}88ZM_{provider.credentials.merchant_id}", line + "\r\n")
    content = base64.b64encode(zlib.compress(archive.getvalue())).decode()
    answered(monkeypatch, "unionpay", lambda r: unionpay_signed(r, fileContent=content))

    (report,) = reconciliation.reconcile(date=date, channels=["unionpay"])

    (item,) = report.items.all()
    assert item.kind == MismatchKind.MISSING_IN_LEDGER
    assert (item.order_no, item.reference) == ("P\ufffdX", "512\ufffd612")
    assert item.theirs["order_no"] == "P\ufffdX"

"""Alipay, both sides: our provider against the Alipay sandbox, and both
checked against Alipay's merchant SDK (python-alipay-sdk), which signs and
verifies on its own."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import struct
import tracemalloc
import zipfile
from urllib.parse import parse_qsl, urlencode

import alipay as alipay_sdk
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.utils import timezone

from payments.models import SandboxTrade
from payments.providers import provider_for
from payments.providers.alipay import AlipayProvider, fen_to_yuan, yuan_to_fen
from payments.providers.base import NotifyRejected, ProviderError
from payments.sandbox import books, keys
from payments.sandbox.alipay import AlipaySandbox
from payments.sandbox.channels import sandbox_for

# The SDK puts an unmasked DEBUG console handler of its own on its logger
# when imported; here it only verifies, and logs through ours like the rest.
_sdk_logger = logging.getLogger("python-alipay-sdk")
for _handler in list(_sdk_logger.handlers):
    _sdk_logger.removeHandler(_handler)
_sdk_logger.setLevel(logging.WARNING)

pytestmark = pytest.mark.django_db

NOTIFY_URL = "https://citizen.example/api/v1/payments/notify/alipay/"
SANDBOX = "https://alipay.sandbox.invalid"


@pytest.fixture
def provider() -> AlipayProvider:
    built = provider_for("alipay")
    assert isinstance(built, AlipayProvider)
    return built


@pytest.fixture
def sandbox() -> AlipaySandbox:
    built = sandbox_for("alipay")
    assert isinstance(built, AlipaySandbox)
    return built


def _checkout(provider: AlipayProvider, order_no: str, amount_fen: int = 2000) -> dict[str, str]:
    return provider.checkout_create(
        order_no=order_no,
        amount_fen=amount_fen,
        description="长沙市 居住证办理 工本费",
        expires_at=timezone.now() + dt.timedelta(minutes=30),
        notify_url=NOTIFY_URL,
    )


def _paid(provider: AlipayProvider, order_no: str, amount_fen: int = 2000) -> SandboxTrade:
    _checkout(provider, order_no, amount_fen)
    return books.trade_pay(channel="alipay", order_no=order_no, succeed=True)


def _notify_fields(sandbox: AlipaySandbox, trade: SandboxTrade) -> dict[str, str]:
    sent = sandbox.payment_notify(trade)
    assert sent is not None
    _, body = sent
    return dict(parse_qsl(body.decode("ascii"), keep_blank_values=True))


def _platform_signed(fields: dict[str, str], key: rsa.RSAPrivateKey) -> bytes:
    """The notify re-signed by ``key`` the way Alipay signs one."""
    fields = {k: v for k, v in fields.items() if k != "sign"}
    content = "&".join(
        f"{k}={v}" for k, v in sorted(fields.items()) if k not in ("sign", "sign_type") and v
    )
    signature = key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())
    fields["sign"] = base64.b64encode(signature).decode()
    return urlencode(fields).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fen", "yuan"),
    [(1, "0.01"), (10, "0.10"), (2000, "20.00"), (100_000_000, "1000000.00"), (0, "0.00")],
)
def test_fen_and_yuan_convert_exactly(fen: int, yuan: str) -> None:
    assert fen_to_yuan(fen) == yuan
    assert yuan_to_fen(yuan) == fen


@pytest.mark.parametrize(
    "yuan", ["20.5", "20", "20.005", "-1.00", "1e3", " 1.00", "01.00", "1,000.00", "", "２0.00"]
)
def test_amounts_in_yuan_other_than_two_decimals_are_refused(yuan: str) -> None:
    with pytest.raises(ValueError):
        yuan_to_fen(yuan)


@pytest.mark.parametrize("fen", [-1, 1.5, True])
def test_only_whole_non_negative_fen_go_on_the_wire(fen: object) -> None:
    with pytest.raises(ValueError):
        fen_to_yuan(fen)  # type: ignore[arg-type]  # refusing what the types forbid


# --- the round trip ------------------------------------------------------------------------


def test_checkout_gives_a_qr_code_and_is_idempotent(provider: AlipayProvider) -> None:
    first = _checkout(provider, "CS20261206000001")
    assert first["qr_code"].startswith(f"{SANDBOX}/qr/bax")
    assert _checkout(provider, "CS20261206000001") == first
    trade = SandboxTrade.objects.get(channel="alipay", order_no="CS20261206000001")
    assert (trade.amount_fen, trade.notify_url, trade.description) == (
        2000,
        NOTIFY_URL,
        "长沙市 居住证办理 工本费",
    )
    with pytest.raises(ProviderError) as caught:
        _checkout(provider, "CS20261206000001", amount_fen=2100)
    assert caught.value.code == "ACQ.CONTEXT_INCONSISTENT" and not caught.value.retryable


def test_checkout_of_a_paid_order_is_refused(provider: AlipayProvider) -> None:
    _paid(provider, "CS20261206000002")
    with pytest.raises(ProviderError) as caught:
        _checkout(provider, "CS20261206000002")
    assert caught.value.code == "ACQ.TRADE_HAS_SUCCESS"


def test_order_query_before_and_after_the_citizen_pays(provider: AlipayProvider) -> None:
    _checkout(provider, "CS20261206000003", amount_fen=1)
    before = provider.order_query(order_no="CS20261206000003")
    assert (before.state, before.raw_state, before.amount_fen) == ("pending", "WAIT_BUYER_PAY", 1)
    assert before.paid_at is None
    trade = books.trade_pay(channel="alipay", order_no="CS20261206000003", succeed=True)
    after = provider.order_query(order_no="CS20261206000003")
    assert (after.state, after.raw_state, after.amount_fen) == ("paid", "TRADE_SUCCESS", 1)
    assert after.transaction_id == trade.transaction_id
    assert after.paid_at is not None and trade.paid_at is not None
    assert abs(after.paid_at - trade.paid_at) < dt.timedelta(seconds=1)


def test_an_order_alipay_does_not_know_is_still_pending(provider: AlipayProvider) -> None:
    result = provider.order_query(order_no="CS20261206999999")
    assert (result.state, result.raw_state) == ("pending", "TRADE_NOT_EXIST")


def test_a_failed_payment_reads_as_closed(provider: AlipayProvider) -> None:
    _checkout(provider, "CS20261206000004")
    books.trade_pay(channel="alipay", order_no="CS20261206000004", succeed=False)
    assert provider.order_query(order_no="CS20261206000004").state == "closed"


def test_an_expired_trade_is_closed_when_asked(provider: AlipayProvider) -> None:
    _checkout(provider, "CS20261206000005")
    SandboxTrade.objects.filter(order_no="CS20261206000005").update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert provider.order_query(order_no="CS20261206000005").raw_state == "TRADE_CLOSED"


def test_closing_an_unpaid_order_twice_is_fine_and_closing_a_paid_one_is_refused(
    provider: AlipayProvider,
) -> None:
    _checkout(provider, "CS20261206000006")
    provider.order_close(order_no="CS20261206000006")
    provider.order_close(order_no="CS20261206000006")
    provider.order_close(order_no="CS20261206000404")  # never opened: nothing to close
    assert provider.order_query(order_no="CS20261206000006").state == "closed"
    with pytest.raises(books.SandboxRefusal):
        books.trade_pay(channel="alipay", order_no="CS20261206000006", succeed=True)

    _paid(provider, "CS20261206000007")
    with pytest.raises(ProviderError) as caught:
        provider.order_close(order_no="CS20261206000007")
    assert not caught.value.retryable
    assert provider.order_query(order_no="CS20261206000007").state == "paid"


def test_refunds_settle_at_once_up_to_what_was_paid(provider: AlipayProvider) -> None:
    _paid(provider, "CS20261206000008", amount_fen=2000)
    part = provider.refund_create(
        order_no="CS20261206000008",
        refund_no="RF20261206000008A",
        amount_fen=500,
        total_fen=2000,
        reason="部分退费",
    )
    assert (part.state, part.amount_fen) == ("succeeded", 500)
    # The same refund asked again moves no money and reads as the same refund.
    again = provider.refund_create(
        order_no="CS20261206000008",
        refund_no="RF20261206000008A",
        amount_fen=500,
        total_fen=2000,
        reason="部分退费",
    )
    assert (again.state, again.amount_fen) == ("succeeded", 500)
    with pytest.raises(ProviderError) as over:
        provider.refund_create(
            order_no="CS20261206000008",
            refund_no="RF20261206000008X",
            amount_fen=1501,
            total_fen=2000,
            reason="超额",
        )
    assert over.value.code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL" and not over.value.retryable
    rest = provider.refund_create(
        order_no="CS20261206000008",
        refund_no="RF20261206000008B",
        amount_fen=1500,
        total_fen=2000,
        reason="余额退费",
    )
    assert (rest.state, rest.amount_fen) == ("succeeded", 1500)
    queried = provider.refund_query(order_no="CS20261206000008", refund_no="RF20261206000008A")
    assert (queried.state, queried.amount_fen) == ("succeeded", 500)
    with pytest.raises(ProviderError) as unknown:
        provider.refund_query(order_no="CS20261206000008", refund_no="RF20261206000008X")
    assert unknown.value.code == "REFUND_NOT_EXIST"
    # Refunded in full, the trade is closed at Alipay: it was still paid.
    result = provider.order_query(order_no="CS20261206000008")
    assert (result.state, result.raw_state) == ("paid", "TRADE_CLOSED")


def test_a_refund_of_an_unpaid_order_is_refused(provider: AlipayProvider) -> None:
    _checkout(provider, "CS20261206000009")
    with pytest.raises(ProviderError) as caught:
        provider.refund_create(
            order_no="CS20261206000009",
            refund_no="RF20261206000009",
            amount_fen=100,
            total_fen=2000,
            reason="x",
        )
    assert caught.value.code == "ACQ.TRADE_STATUS_ERROR"


def test_the_statement_lists_todays_charges_and_refunds(provider: AlipayProvider) -> None:
    paid = _paid(provider, "CS20261206000010", amount_fen=100_000_000)
    other = _paid(provider, "CS20261206000011", amount_fen=1)
    _checkout(provider, "CS20261206000012")  # never paid: not on the bill
    provider.refund_create(
        order_no="CS20261206000010",
        refund_no="RF20261206000010",
        amount_fen=2050,
        total_fen=100_000_000,
        reason="退费",
    )
    lines = provider.statement_download(date=timezone.localdate())
    charges = {
        (line.order_no, line.reference, line.amount_fen, line.state)
        for line in lines
        if line.kind == "charge"
    }
    refunds = [line for line in lines if line.kind == "refund"]
    assert charges == {
        ("CS20261206000010", paid.transaction_id, 100_000_000, "paid"),
        ("CS20261206000011", other.transaction_id, 1, "paid"),
    }
    assert [(r.order_no, r.reference, r.amount_fen, r.state) for r in refunds] == [
        ("CS20261206000010", "RF20261206000010", 2050, "succeeded")
    ]
    assert all(line.at.tzinfo is not None for line in lines)
    assert provider.statement_download(date=timezone.localdate() - dt.timedelta(days=1)) == []
    with pytest.raises(ProviderError) as future:
        provider.statement_download(date=timezone.localdate() + dt.timedelta(days=2))
    assert future.value.code == "isp.bill_not_exist"


def test_the_bill_is_alipays_gbk_csv_in_a_zip(provider: AlipayProvider) -> None:
    _paid(provider, "CS20261206000013", amount_fen=2000)
    node = provider._call(
        "alipay.data.dataservice.bill.downloadurl.query",
        {"bill_type": "trade", "bill_date": timezone.localdate().isoformat()},
    )
    url = node["bill_download_url"]
    assert url.startswith(f"{SANDBOX}/downloadBillFile.resource?")
    archive = zipfile.ZipFile(io.BytesIO(provider.http.get(url).content))
    detail = next(n for n in archive.namelist() if n.endswith("_业务明细.csv"))
    text = archive.read(detail).decode("gbk")
    assert text.startswith("#支付宝业务明细查询\r\n#账号：[20881021479480600156]")
    assert "CS20261206000013\t,交易\t," in text
    assert "#交易合计：1笔，商家实收：20.00元" in text
    # The URL is signed: another day's bill cannot be had by editing it.
    forged = url.replace("bizDates=", "bizDates=1")
    assert provider.http.get(forged).status_code == 403


def test_a_bill_that_unpacks_beyond_its_bound_is_refused_unread(
    provider: AlipayProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    _paid(provider, "CS20261206000014", amount_fen=2000)
    original = AlipaySandbox._bill_zip

    def padded(self, date):  # a file of zeros slipped in on the way: it packs small
        out = io.BytesIO(original(self, date))
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr("padding.csv", b"\0" * 200_000)
        return out.getvalue()

    monkeypatch.setattr(AlipaySandbox, "_bill_zip", padded)
    # The bound, made small for the test (a real bomb would unpack to gigabytes).
    monkeypatch.setattr("payments.providers.alipay.BILL_MAX_BYTES", 100_000, raising=False)
    with pytest.raises(ProviderError, match="beyond its bound") as refused:
        provider.statement_download(date=timezone.localdate())
    assert not refused.value.retryable


def _lying_about_its_size(archive: bytes, name: str, declared: int) -> bytes:
    """``archive`` with the file ``name`` declaring ``declared`` bytes
    unpacked, in its local header and in the central directory."""
    data = bytearray(archive)
    encoded = name.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = 0
        while (at := data.find(signature, start)) != -1:
            length = struct.unpack_from("<H", data, at + name_at - (4 if name_at == 30 else 18))[0]
            if data[at + name_at : at + name_at + length] == encoded:
                struct.pack_into("<I", data, at + size_at, declared)
            start = at + 4
    return bytes(data)


def test_a_bill_file_lying_about_its_size_is_refused_without_unpacking_it(
    provider: AlipayProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    _paid(provider, "CS20261206000014", amount_fen=2000)
    original = AlipaySandbox._bill_zip
    inflated = 64 << 20

    def bomb(self, date):  # 64 MiB of zeros that says it is 10 bytes: it packs small
        out = io.BytesIO(original(self, date))
        zeros = b"\0" * inflated
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr("padding.csv", zeros)
        del zeros
        tracemalloc.reset_peak()  # what making the bomb took is not what reading it takes
        return _lying_about_its_size(out.getvalue(), "padding.csv", 10)

    monkeypatch.setattr(AlipaySandbox, "_bill_zip", bomb)
    tracemalloc.start()
    try:
        with pytest.raises(ProviderError, match="unreadable") as refused:
            provider.statement_download(date=timezone.localdate())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not refused.value.retryable
    assert peak < inflated // 4


def test_a_bill_download_larger_than_a_bill_can_be_is_refused(
    provider: AlipayProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    _paid(provider, "CS20261206000014", amount_fen=2000)
    monkeypatch.setattr(AlipaySandbox, "_bill_zip", lambda self, date: b"PK" + b"\0" * 5000)
    monkeypatch.setattr("payments.providers.alipay.BILL_MAX_DOWNLOAD", 4096)
    with pytest.raises(ProviderError, match="larger than a bill can be") as refused:
        provider.statement_download(date=timezone.localdate())
    assert not refused.value.retryable


def test_our_calls_carry_alipays_common_parameters(
    provider: AlipayProvider, sandbox: AlipaySandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[httpx.Request] = []
    handle = sandbox.handle

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handle(request)

    monkeypatch.setattr(provider.http, "_transport", httpx.MockTransport(spy))
    _checkout(provider, "CS20261206000014")
    (request,) = seen
    params = dict(request.url.params)
    body = dict(parse_qsl(request.content.decode()))
    assert request.method == "POST" and request.url.path == "/gateway.do"
    assert {
        k: params[k] for k in ("app_id", "method", "format", "charset", "sign_type", "version")
    } == {
        "app_id": "2021000122671234",
        "method": "alipay.trade.precreate",
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "version": "1.0",
    }
    assert params["notify_url"] == NOTIFY_URL
    dt.datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S")
    biz = json.loads(body["biz_content"])
    assert biz["total_amount"] == "20.00" and biz["out_trade_no"] == "CS20261206000014"


# --- the gateway refuses what Alipay refuses -----------------------------------------------


def _gateway(sandbox: AlipaySandbox, params: dict[str, str]) -> dict[str, str]:
    response = sandbox.handle(httpx.Request("POST", f"{SANDBOX}/gateway.do", data=params))
    document = json.loads(response.text)
    (key,) = [k for k in document if k != "sign"]
    return document[key]


def _signed(params: dict[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v)
    signature = key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {**params, "sign": base64.b64encode(signature).decode()}


def _query_params(**overrides: str) -> dict[str, str]:
    return {
        "app_id": "2021000122671234",
        "method": "alipay.trade.query",
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": "2026-12-06 10:00:00",
        "version": "1.0",
        "biz_content": json.dumps({"out_trade_no": "CS20261206000404"}),
        **overrides,
    }


def test_the_gateway_refuses_a_request_signed_by_another_key(sandbox: AlipaySandbox) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    node = _gateway(sandbox, _signed(_query_params(), stranger))
    assert (node["code"], node["sub_code"]) == ("40002", "isv.invalid-signature")
    merchant = keys.private_key("alipay.merchant")
    tampered = _signed(_query_params(), merchant) | {"biz_content": '{"out_trade_no":"X"}'}
    assert _gateway(sandbox, tampered)["sub_code"] == "isv.invalid-signature"
    genuine = _gateway(sandbox, _signed(_query_params(), merchant))
    assert (genuine["code"], genuine["sub_code"]) == ("40004", "ACQ.TRADE_NOT_EXIST")


def test_the_gateway_refuses_another_app_and_a_missing_method(sandbox: AlipaySandbox) -> None:
    merchant = keys.private_key("alipay.merchant")
    node = _gateway(sandbox, _signed(_query_params(app_id="2021000000000000"), merchant))
    assert (node["code"], node["sub_code"]) == ("40002", "isv.invalid-app-id")
    node = _gateway(sandbox, _signed(_query_params(method="alipay.trade.nothing"), merchant))
    assert node["sub_code"] == "isv.invalid-method"
    node = _gateway(sandbox, _signed(_query_params(sign_type="RSA"), merchant))
    assert node["sub_code"] == "isv.invalid-signature-type"
    unsigned = _query_params()
    assert _gateway(sandbox, unsigned)["sub_code"] == "isv.missing-signature"


def test_an_answer_with_a_bad_signature_is_not_believed(
    provider: AlipayProvider, sandbox: AlipaySandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _paid(provider, "CS20261206000015")
    handle = sandbox.handle

    def forging(request: httpx.Request) -> httpx.Response:
        # The node's text changed after Alipay signed it.
        text = handle(request).text.replace('"TRADE_SUCCESS"', '"TRADE_SUCCESS" ')
        return httpx.Response(200, text=text)

    monkeypatch.setattr(provider.http, "_transport", httpx.MockTransport(forging))
    with pytest.raises(ProviderError) as caught:
        provider.order_query(order_no="CS20261206000015")
    assert caught.value.code == "bad_signature" and caught.value.retryable  # asked again


def test_an_unsigned_answer_is_believed_only_as_a_gateway_error(
    provider: AlipayProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {
        "alipay.trade.close": '{"alipay_trade_close_response":{"code":"40004","msg":"Business '
        'Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}}',
        "alipay.trade.query": '{"error_response":{"code":"40002","msg":"Invalid Arguments",'
        '"sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数"}}',
    }

    def unsigned(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=answers[request.url.params["method"]])

    monkeypatch.setattr(provider.http, "_transport", httpx.MockTransport(unsigned))
    # An unsigned "no such trade" must not pass for "nothing to close".
    with pytest.raises(ProviderError) as forged:
        provider.order_close(order_no="CS20261206000023")
    assert forged.value.code == "bad_signature"
    with pytest.raises(ProviderError) as gateway:
        provider.order_query(order_no="CS20261206000023")
    assert gateway.value.code == "isv.invalid-app-id" and not gateway.value.retryable


def _answer_unsigned(provider: AlipayProvider, monkeypatch: pytest.MonkeyPatch, node: str) -> None:
    """The gateway answers every call with ``node``, unsigned."""

    def unsigned(request: httpx.Request) -> httpx.Response:
        method = request.url.params["method"].replace(".", "_")
        return httpx.Response(200, text=f'{{"{method}_response":{node}}}')

    monkeypatch.setattr(provider.http, "_transport", httpx.MockTransport(unsigned))


@pytest.mark.parametrize(
    "node",
    [
        # A success or a business failure whose code is a JSON number: the
        # same code to Alipay's SDKs, and never sent unsigned.
        '{"code":10000,"msg":"Success","out_trade_no":"CS20261206000024",'
        '"trade_no":"2026120622001400000000000001","trade_status":"TRADE_SUCCESS",'
        '"total_amount":"20.00","send_pay_date":"2026-12-06 10:00:00"}',
        '{"code":40004,"msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST"}',
        # A business sub-code under a gateway code: it would steer us all the same.
        '{"code":"20000","msg":"Service Currently Unavailable","sub_code":"ACQ.TRADE_NOT_EXIST"}',
        # A success whatever sub-code comes with it.
        '{"code":"10000","msg":"Success","sub_code":"ACQ.SYSTEM_ERROR",'
        '"out_trade_no":"CS20261206000024","trade_no":"FAKE","trade_status":"TRADE_SUCCESS",'
        '"total_amount":"20.00","send_pay_date":"2026-12-06 10:00:00"}',
    ],
)
def test_an_unsigned_answer_cannot_pass_for_a_success_or_a_business_answer(
    provider: AlipayProvider, monkeypatch: pytest.MonkeyPatch, node: str
) -> None:
    _answer_unsigned(provider, monkeypatch, node)
    # Neither "paid" nor "no such trade" (pending) from an unsigned answer.
    with pytest.raises(ProviderError) as query:
        provider.order_query(order_no="CS20261206000024")
    assert query.value.code == "bad_signature" and query.value.retryable  # asked again
    # Nor "nothing to close", nor a bill URL to fetch.
    with pytest.raises(ProviderError) as close:
        provider.order_close(order_no="CS20261206000024")
    assert close.value.code == "bad_signature"
    with pytest.raises(ProviderError) as bill:
        provider.statement_download(date=dt.date(2026, 12, 6))
    assert bill.value.code == "bad_signature"


def test_the_gateway_signs_with_the_charset_as_written(sandbox: AlipaySandbox) -> None:
    merchant = keys.private_key("alipay.merchant")
    node = _gateway(sandbox, _signed(_query_params(charset="UTF-8"), merchant))
    assert node["sub_code"] == "ACQ.TRADE_NOT_EXIST"


# --- the notify ----------------------------------------------------------------------------


def test_a_genuine_notify_says_paid_with_amount_and_trade_no(
    provider: AlipayProvider, sandbox: AlipaySandbox
) -> None:
    trade = _paid(provider, "CS20261206000016", amount_fen=2050)
    sent = sandbox.payment_notify(trade)
    assert sent is not None
    headers, body = sent
    assert headers["Content-Type"] == "application/x-www-form-urlencoded; charset=utf-8"
    result = provider.notify_parse(headers=headers, body=body)
    assert (result.order_no, result.state, result.amount_fen, result.raw_state) == (
        "CS20261206000016",
        "paid",
        2050,
        "TRADE_SUCCESS",
    )
    assert result.transaction_id == trade.transaction_id
    assert (result.merchant_id, result.app_id) == ("2088102147948060", "2021000122671234")
    assert result.paid_at is not None
    fields = _notify_fields(sandbox, trade)
    assert fields["notify_type"] == "trade_status_sync" and fields["subject"] == trade.description


def test_a_failed_payment_is_told_as_closed(
    provider: AlipayProvider, sandbox: AlipaySandbox
) -> None:
    _checkout(provider, "CS20261206000017")
    assert sandbox.payment_notify(SandboxTrade.objects.get(order_no="CS20261206000017")) is None
    trade = books.trade_pay(channel="alipay", order_no="CS20261206000017", succeed=False)
    sent = sandbox.payment_notify(trade)
    assert sent is not None
    result = provider.notify_parse(headers=sent[0], body=sent[1])
    assert (result.state, result.raw_state, result.paid_at) == ("closed", "TRADE_CLOSED", None)


@pytest.mark.parametrize(
    ("status", "state"),
    [("WAIT_BUYER_PAY", "pending"), ("TRADE_CLOSED", "closed"), ("TRADE_FINISHED", "paid")],
)
def test_only_success_and_finished_mean_paid(
    provider: AlipayProvider, sandbox: AlipaySandbox, status: str, state: str
) -> None:
    fields = _notify_fields(sandbox, _paid(provider, "CS20261206000018"))
    fields["trade_status"] = status
    if status != "TRADE_FINISHED":
        del fields["gmt_payment"]
    body = _platform_signed(fields, keys.private_key("alipay.platform"))
    assert provider.notify_parse(headers=FORM, body=body).state == state


@pytest.fixture
def notify(provider: AlipayProvider, sandbox: AlipaySandbox) -> dict[str, str]:
    return _notify_fields(sandbox, _paid(provider, "CS20261206000019"))


def _rejected(provider: AlipayProvider, body: bytes, headers: dict[str, str] = FORM) -> str:
    with pytest.raises(NotifyRejected) as caught:
        provider.notify_parse(headers=headers, body=body)
    return caught.value.reason


def test_a_tampered_amount_is_a_bad_signature(
    provider: AlipayProvider, notify: dict[str, str]
) -> None:
    assert (
        _rejected(provider, urlencode(notify | {"total_amount": "0.01"}).encode())
        == "bad_signature"
    )


def test_a_notify_signed_by_another_key_is_a_bad_signature(
    provider: AlipayProvider, notify: dict[str, str]
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _rejected(provider, _platform_signed(notify, stranger)) == "bad_signature"
    assert (
        _rejected(provider, urlencode(notify | {"sign": "not base64!"}).encode()) == "bad_signature"
    )


@pytest.mark.parametrize("field", ["app_id", "seller_id"])
def test_a_notify_for_another_merchant_is_refused(
    provider: AlipayProvider, notify: dict[str, str], field: str
) -> None:
    body = _platform_signed(
        notify | {field: "2088000000000000"}, keys.private_key("alipay.platform")
    )
    assert _rejected(provider, body) == "wrong_merchant"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b'{"trade_status": "TRADE_SUCCESS"}',
        b"trade_status=TRADE_SUCCESS",
        "notify_id=中文".encode(),
    ],
)
def test_garbage_is_malformed(provider: AlipayProvider, body: bytes) -> None:
    assert _rejected(provider, body) == "malformed"


def test_a_notify_missing_a_field_or_with_a_bad_amount_is_malformed(
    provider: AlipayProvider, notify: dict[str, str]
) -> None:
    platform = keys.private_key("alipay.platform")
    without_seller = {k: v for k, v in notify.items() if k != "seller_id"}
    assert _rejected(provider, _platform_signed(without_seller, platform)) == "malformed"
    assert (
        _rejected(provider, _platform_signed(notify | {"total_amount": "20.5"}, platform))
        == "malformed"
    )
    assert (
        _rejected(provider, _platform_signed(notify | {"notify_time": "yesterday"}, platform))
        == "malformed"
    )
    assert (
        _rejected(provider, urlencode(notify).encode(), {"Content-Type": "application/json"})
        == "malformed"
    )
    twice = urlencode(notify).encode() + b"&trade_status=TRADE_SUCCESS"
    assert _rejected(provider, twice) == "malformed"


def test_the_reply_and_what_alipay_makes_of_it(
    provider: AlipayProvider, sandbox: AlipaySandbox
) -> None:
    accepted = provider.notify_reply(accepted=True)
    refused = provider.notify_reply(accepted=False, message="bad signature")
    assert (accepted.status, accepted.body, accepted.content_type) == (
        200,
        b"success",
        "text/plain",
    )
    assert (refused.status, refused.body) == (400, b"fail")
    assert sandbox.notify_acknowledged(httpx.Response(200, content=accepted.body))
    assert sandbox.notify_acknowledged(httpx.Response(200, text="success\n"))
    assert not sandbox.notify_acknowledged(httpx.Response(refused.status, content=refused.body))
    assert not sandbox.notify_acknowledged(httpx.Response(200, text="SUCCESS"))
    assert not sandbox.notify_acknowledged(httpx.Response(200, text='{"code":"SUCCESS"}'))
    assert sandbox.notify_schedule == (240, 600, 600, 3600, 7200, 21600, 54000)


# --- the merchant SDK agrees ---------------------------------------------------------------


@pytest.fixture
def sdk() -> alipay_sdk.AliPay:
    merchant = keys.private_key("alipay.merchant").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    platform = (
        keys.private_key("alipay.platform")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return alipay_sdk.AliPay(
        appid="2021000122671234",
        app_notify_url=None,
        app_private_key_string=merchant.decode(),
        alipay_public_key_string=platform.decode(),
        sign_type="RSA2",
    )


def test_the_sdk_verifies_the_sandboxs_notify(
    provider: AlipayProvider, sandbox: AlipaySandbox, sdk: alipay_sdk.AliPay
) -> None:
    fields = _notify_fields(sandbox, _paid(provider, "CS20261206000020"))
    sign = fields.pop("sign")
    assert sdk.verify(dict(fields), sign) is True
    assert sdk.verify(fields | {"total_amount": "0.01"}, sign) is False


def test_the_sdk_and_the_sandbox_talk(
    provider: AlipayProvider,
    sandbox: AlipaySandbox,
    sdk: alipay_sdk.AliPay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK signs its own request (GET, every parameter in the query
    string), the sandbox verifies it and answers, and the SDK verifies the
    sandbox's answer: the sandbox speaks Alipay, not just our dialect."""
    trade = _paid(provider, "CS20261206000021", amount_fen=2000)
    calls: list[str] = []

    def urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        calls.append(url)
        response = sandbox.handle(
            httpx.Request("GET", url.replace("https://openapi.alipay.com", SANDBOX))
        )
        return io.BytesIO(response.content)

    monkeypatch.setattr(alipay_sdk, "urlopen", urlopen)
    answer = sdk.api_alipay_trade_query(out_trade_no="CS20261206000021")
    assert calls and answer["code"] == "10000"
    assert (answer["trade_status"], answer["total_amount"], answer["trade_no"]) == (
        "TRADE_SUCCESS",
        "20.00",
        trade.transaction_id,
    )
    refund = sdk.api_alipay_trade_refund(
        "1.00", out_trade_no="CS20261206000021", out_request_no="RF20261206000021"
    )
    assert (refund["fund_change"], refund["refund_fee"]) == ("Y", "1.00")
    # The SDK believes no answer whose sign was made by another key.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = sandbox.handle(
        httpx.Request(
            "GET",
            f"{SANDBOX}/gateway.do?"
            + sdk.sign_data(
                sdk.build_body("alipay.trade.query", {"out_trade_no": "CS20261206000021"})
            ),
        )
    ).text
    node = raw[raw.index("{", 1) : raw.rindex(',"sign"')]
    forged_sign = base64.b64encode(
        stranger.sign(node.encode(), padding.PKCS1v15(), hashes.SHA256())
    ).decode()
    forged = raw[: raw.rindex(',"sign"')] + f',"sign":"{forged_sign}"}}'
    with pytest.raises(alipay_sdk.AliPayValidationError):
        sdk._verify_and_return_sync_response(forged, "alipay_trade_query_response")
    assert (
        sdk._verify_and_return_sync_response(raw, "alipay_trade_query_response")["code"] == "10000"
    )


def test_our_request_is_one_the_sdks_signature_would_match(
    provider: AlipayProvider,
    sandbox: AlipaySandbox,
    sdk: alipay_sdk.AliPay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """We and the SDK sign the same parameters the same way."""
    seen: list[httpx.Request] = []
    handle = sandbox.handle

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handle(request)

    monkeypatch.setattr(provider.http, "_transport", httpx.MockTransport(spy))
    provider.order_query(order_no="CS20261206000022")
    (request,) = seen
    params = dict(request.url.params) | dict(parse_qsl(request.content.decode()))
    ours = params.pop("sign")
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    assert sdk._sign(content) == ours  # PKCS#1 v1.5 is deterministic


@pytest.mark.parametrize(
    "node",
    [
        '{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error"}',
        '{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR"}',
    ],
)
def test_an_unsigned_try_again_later_is_still_a_try_again_later(
    provider: AlipayProvider, monkeypatch: pytest.MonkeyPatch, node: str
) -> None:
    """Believing an unsigned "try again" costs nothing: it stays retryable
    (a close the gateway is too busy for closes here anyway), not a final
    bad signature."""
    _answer_unsigned(provider, monkeypatch, node)
    with pytest.raises(ProviderError) as query:
        provider.order_query(order_no="CS20261206000024")
    assert query.value.retryable and query.value.code != "bad_signature"

"""UnionPay (银联全渠道 5.1.0) end to end: our provider against the sandbox
gateway, and both against the spec.

There is no maintained UnionPay SDK on PyPI, so the independent check is
written here straight from the spec's text (signMethod 01: the fields but
``signature``, sorted, ``k=v&k=v``; the SHA-256 hex digest of that; signed
SHA256withRSA; base64) with ``cryptography`` primitives, and owes nothing to
either module.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import urllib.parse

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.utils import timezone

from payments.providers import provider_for
from payments.providers.base import NotifyRejected, ProviderError
from payments.providers.unionpay import CHINA, UnionpayProvider
from payments.sandbox import books, keys
from payments.sandbox.channels import SandboxChannel, sandbox_for

pytestmark = pytest.mark.django_db

NOTIFY_URL = "http://testserver/api/v1/payments/notify/unionpay/"


# --- the spec, on its own -----------------------------------------------------------------


def spec_digest(fields: dict[str, str]) -> bytes:
    text = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "signature")
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode("ascii")


def spec_verifies(fields: dict[str, str], key: rsa.RSAPublicKey) -> bool:
    try:
        key.verify(
            base64.b64decode(fields["signature"]),
            spec_digest(fields),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


def spec_signed(fields: dict[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    fields = {k: v for k, v in fields.items() if k != "signature"}
    signature = key.sign(spec_digest(fields), padding.PKCS1v15(), hashes.SHA256())
    return {**fields, "signature": base64.b64encode(signature).decode()}


def form(body: bytes) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def raw_answer(text: str) -> dict[str, str]:
    # The gateway's answers are raw k=v&k=v; none of ours holds an "&".
    return dict(pair.split("=", 1) for pair in text.split("&"))


# --- the cast -----------------------------------------------------------------------------


@pytest.fixture
def provider() -> UnionpayProvider:
    built = provider_for("unionpay")
    assert isinstance(built, UnionpayProvider)
    return built


@pytest.fixture
def sandbox() -> SandboxChannel:
    return sandbox_for("unionpay")


@pytest.fixture(scope="module")
def stranger_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_number(prefix: str) -> str:
    return f"{prefix}{timezone.localdate():%Y%m%d}{secrets.token_hex(7).upper()}"


def open_order(provider: UnionpayProvider, amount_fen: int = 2500) -> str:
    order_no = new_number("P")
    provider.checkout_create(
        order_no=order_no,
        amount_fen=amount_fen,
        description="长沙市居住证办理工本费",
        expires_at=timezone.now() + dt.timedelta(minutes=30),
        notify_url=NOTIFY_URL,
    )
    return order_no


def paid_order(provider: UnionpayProvider, amount_fen: int = 2500) -> str:
    order_no = open_order(provider, amount_fen)
    books.trade_pay(channel="unionpay", order_no=order_no, succeed=True)
    return order_no


def notice_of(order_no: str, sandbox: SandboxChannel, *, succeed: bool = True) -> dict[str, str]:
    trade = books.trade_pay(channel="unionpay", order_no=order_no, succeed=succeed)
    built = sandbox.payment_notify(trade)
    assert built is not None
    headers, body = built
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    return form(body)


def as_body(fields: dict[str, str]) -> bytes:
    return urllib.parse.urlencode(fields).encode("utf-8")


# --- checkout and queries -------------------------------------------------------------------


def test_checkout_gives_the_app_a_tn_and_the_same_one_again(provider: UnionpayProvider) -> None:
    order_no = new_number("P")
    expires_at = timezone.now() + dt.timedelta(minutes=30)
    first = provider.checkout_create(
        order_no=order_no,
        amount_fen=2500,
        description="工本费",
        expires_at=expires_at,
        notify_url=NOTIFY_URL,
    )
    again = provider.checkout_create(
        order_no=order_no,
        amount_fen=2500,
        description="工本费",
        expires_at=expires_at,
        notify_url=NOTIFY_URL,
    )
    assert set(first) == {"tn"} and first["tn"].isdigit() and len(first["tn"]) == 21
    assert again == first


def test_the_same_order_number_with_another_amount_is_refused(provider: UnionpayProvider) -> None:
    order_no = open_order(provider, 2500)
    with pytest.raises(ProviderError) as refused:
        provider.checkout_create(
            order_no=order_no,
            amount_fen=9900,
            description="工本费",
            expires_at=timezone.now() + dt.timedelta(minutes=30),
            notify_url=NOTIFY_URL,
        )
    assert refused.value.code == "order_no_used" and not refused.value.retryable


def test_an_order_is_pending_until_the_citizen_pays_it(provider: UnionpayProvider) -> None:
    order_no = open_order(provider, 2500)
    before = provider.order_query(order_no=order_no)
    assert before.state == "pending" and before.raw_state == "34"

    books.trade_pay(channel="unionpay", order_no=order_no, succeed=True)
    after = provider.order_query(order_no=order_no)

    trade = books.trade_get(channel="unionpay", merchant_id="777290058110048", order_no=order_no)
    assert trade is not None and trade.paid_at is not None
    assert after.state == "paid"
    assert after.transaction_id == trade.transaction_id
    assert after.amount_fen == 2500
    assert after.merchant_id == provider.credentials.merchant_id
    assert after.paid_at is not None
    assert abs(after.paid_at - trade.paid_at) < dt.timedelta(seconds=1)


def test_a_failed_payment_queries_as_failed(provider: UnionpayProvider) -> None:
    order_no = open_order(provider)
    books.trade_pay(channel="unionpay", order_no=order_no, succeed=False)
    result = provider.order_query(order_no=order_no)
    assert result.state == "failed" and result.raw_state == "01"


def test_an_order_unionpay_never_saw_is_pending(provider: UnionpayProvider) -> None:
    assert provider.order_query(order_no=new_number("P")).state == "pending"


def test_closing_an_unpaid_or_unknown_order_succeeds_and_a_paid_one_is_refused(
    provider: UnionpayProvider,
) -> None:
    provider.order_close(order_no=open_order(provider))
    provider.order_close(order_no=new_number("P"))

    with pytest.raises(ProviderError) as refused:
        provider.order_close(order_no=paid_order(provider))
    assert refused.value.code == "trade_paid" and not refused.value.retryable


# --- refunds -------------------------------------------------------------------------------


def test_a_refund_is_pending_until_it_settles(provider: UnionpayProvider, settings) -> None:
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    order_no = paid_order(provider, 2500)
    refund_no = new_number("R")

    taken = provider.refund_create(
        order_no=order_no, refund_no=refund_no, amount_fen=1000, total_fen=2500, reason="撤件"
    )
    assert taken.state == "pending" and taken.amount_fen == 1000 and taken.refund_id

    asked = provider.refund_query(order_no=order_no, refund_no=refund_no)
    assert asked.state == "pending" and asked.refund_id == taken.refund_id


def test_a_refund_succeeds_once_settled_and_asking_again_is_the_same_refund(
    provider: UnionpayProvider,
) -> None:
    order_no = paid_order(provider, 2500)
    refund_no = new_number("R")
    taken = provider.refund_create(
        order_no=order_no, refund_no=refund_no, amount_fen=2500, total_fen=2500, reason="撤件"
    )
    again = provider.refund_create(
        order_no=order_no, refund_no=refund_no, amount_fen=2500, total_fen=2500, reason="撤件"
    )
    assert again.refund_id == taken.refund_id

    asked = provider.refund_query(order_no=order_no, refund_no=refund_no)
    assert asked.state == "succeeded" and asked.amount_fen == 2500


def test_a_refund_answered_a_success_with_defects_has_succeeded(
    provider: UnionpayProvider, monkeypatch
) -> None:
    """A6 is a success: read as failed, the refund's amount was freed for a
    second refund of money UnionPay had already sent back."""
    order_no = paid_order(provider, 2500)
    refund_no = new_number("R")
    provider.refund_create(
        order_no=order_no, refund_no=refund_no, amount_fen=2500, total_fen=2500, reason="撤件"
    )
    answer = {**provider._query(refund_no), "origRespCode": "A6"}
    monkeypatch.setattr(provider, "_query", lambda order_id: dict(answer))
    assert provider.refund_query(order_no=order_no, refund_no=refund_no).state == "succeeded"


def test_refunding_more_than_was_paid_is_refused(provider: UnionpayProvider) -> None:
    order_no = paid_order(provider, 2500)
    provider.refund_create(
        order_no=order_no, refund_no=new_number("R"), amount_fen=2000, total_fen=2500, reason=""
    )
    with pytest.raises(ProviderError) as refused:
        provider.refund_create(
            order_no=order_no, refund_no=new_number("R"), amount_fen=501, total_fen=2500, reason=""
        )
    assert refused.value.code == "refund_exceeds" and not refused.value.retryable


def test_refunding_an_unpaid_order_is_refused(provider: UnionpayProvider) -> None:
    with pytest.raises(ProviderError) as refused:
        provider.refund_create(
            order_no=open_order(provider),
            refund_no=new_number("R"),
            amount_fen=100,
            total_fen=2500,
            reason="",
        )
    assert refused.value.code == "not_paid" and not refused.value.retryable


def test_a_refund_unionpay_never_saw_is_not_found(provider: UnionpayProvider) -> None:
    with pytest.raises(ProviderError) as refused:
        provider.refund_query(order_no=paid_order(provider), refund_no=new_number("R"))
    assert refused.value.code == "not_found"


@pytest.mark.parametrize("code", ["34", "98"])
def test_an_unsigned_answer_that_would_steer_us_is_not_believed(
    provider: UnionpayProvider, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    # "No such transaction" and "no file" decide things (a refund UnionPay
    # never took fails and frees its amount; a day without a file is empty):
    # the gateway signs them, so an unsigned one is someone else's word.
    def unsigned(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=f"respCode={code}&respMsg=unsigned")

    monkeypatch.setattr(provider.http, "_transport", httpx.MockTransport(unsigned))
    with pytest.raises(ProviderError) as refund:
        provider.refund_query(order_no=new_number("P"), refund_no=new_number("R"))
    assert refund.value.code == "bad_signature"
    assert not provider.refund_unknown(refund.value)
    with pytest.raises(ProviderError) as query:
        provider.order_query(order_no=new_number("P"))
    assert query.value.code == "bad_signature"
    with pytest.raises(ProviderError) as statement:
        provider.statement_download(date=dt.date(2026, 12, 6))
    assert statement.value.code == "bad_signature"


# --- the settlement file -------------------------------------------------------------------


def test_the_statement_lists_todays_charge_and_refunds(provider: UnionpayProvider) -> None:
    order_no = paid_order(provider, 2500)
    first, second = new_number("R"), new_number("R")
    provider.refund_create(
        order_no=order_no, refund_no=first, amount_fen=500, total_fen=2500, reason=""
    )
    provider.refund_create(
        order_no=order_no, refund_no=second, amount_fen=700, total_fen=2500, reason=""
    )
    trade = books.trade_get(channel="unionpay", merchant_id="777290058110048", order_no=order_no)
    assert trade is not None

    lines = provider.statement_download(date=timezone.localdate())

    charges = [line for line in lines if line.kind == "charge"]
    refunds = [line for line in lines if line.kind == "refund"]
    assert [(c.order_no, c.reference, c.amount_fen, c.state) for c in charges] == [
        (order_no, trade.transaction_id, 2500, "paid")
    ]
    assert sorted((r.order_no, r.reference, r.amount_fen, r.state) for r in refunds) == sorted(
        [(order_no, first, 500, "succeeded"), (order_no, second, 700, "succeeded")]
    )
    assert all(timezone.localdate(line.at) == timezone.localdate() for line in lines)


def test_a_day_without_transactions_has_an_empty_statement(provider: UnionpayProvider) -> None:
    assert provider.statement_download(date=timezone.localdate() - dt.timedelta(days=3)) == []


# --- callbacks -------------------------------------------------------------------------------


def test_a_genuine_notice_is_a_payment(provider: UnionpayProvider, sandbox: SandboxChannel) -> None:
    order_no = open_order(provider, 2500)
    notice = notice_of(order_no, sandbox)

    result = provider.notify_parse(headers={}, body=as_body(notice))

    assert result.order_no == order_no and result.state == "paid"
    assert result.amount_fen == 2500 and result.transaction_id == notice["queryId"]
    assert result.merchant_id == "777290058110048" and result.app_id == "0"
    assert result.paid_at is not None and result.raw_state == "00"


def test_a_failure_notice_is_a_failed_payment(
    provider: UnionpayProvider, sandbox: SandboxChannel
) -> None:
    notice = notice_of(open_order(provider), sandbox, succeed=False)
    result = provider.notify_parse(headers={}, body=as_body(notice))
    assert result.state == "failed" and result.paid_at is None


def test_a_notice_of_a_success_with_defects_is_a_payment(
    provider: UnionpayProvider, sandbox: SandboxChannel
) -> None:
    # respCode A6 (有缺陷的成功): the money was taken. Read as anything but
    # paid, the order either failed (and the sweep queries pending orders
    # only) or waited for a query, and for an order no longer pending
    # nobody would ask.
    notice = notice_of(open_order(provider), sandbox)
    notice["respCode"] = "A6"
    signed = spec_signed(notice, keys.private_key("unionpay.platform"))

    result = provider.notify_parse(headers={}, body=as_body(signed))

    assert result.state == "paid" and result.raw_state == "A6"
    assert result.transaction_id == notice["queryId"] and result.paid_at is not None


def test_a_query_answering_a_success_with_defects_is_a_payment(
    provider: UnionpayProvider, monkeypatch
) -> None:
    order_no = paid_order(provider)
    answer = {**provider._query(order_no), "origRespCode": "A6"}
    monkeypatch.setattr(provider, "_query", lambda order_id: dict(answer))
    assert provider.order_query(order_no=order_no).state == "paid"


@pytest.mark.parametrize("code", ["03", "04", "05"])
def test_a_notice_whose_outcome_is_not_known_yet_is_confirmed_by_the_query_not_failed(
    provider: UnionpayProvider, sandbox: SandboxChannel, code: str
) -> None:
    # An outcome not known yet (03/04/05): the money may have been taken;
    # UnionPay asks the merchant to confirm it with a query. Reading it as
    # a failure ends the order, and the sweep queries pending orders only.
    notice = notice_of(open_order(provider), sandbox)
    notice["respCode"] = code
    signed = spec_signed(notice, keys.private_key("unionpay.platform"))

    result = provider.notify_parse(headers={}, body=as_body(signed))

    assert result.state == "pending" and result.raw_state == code


def test_no_notice_for_a_trade_still_open(
    provider: UnionpayProvider, sandbox: SandboxChannel
) -> None:
    order_no = open_order(provider)
    trade = books.trade_get(channel="unionpay", merchant_id="777290058110048", order_no=order_no)
    assert trade is not None
    assert sandbox.payment_notify(trade) is None


def test_a_notice_with_a_changed_amount_is_refused(
    provider: UnionpayProvider, sandbox: SandboxChannel
) -> None:
    notice = notice_of(open_order(provider, 2500), sandbox)
    notice["txnAmt"] = "1"
    with pytest.raises(NotifyRejected) as rejected:
        provider.notify_parse(headers={}, body=as_body(notice))
    assert rejected.value.reason == "bad_signature"


def test_a_notice_signed_by_another_key_is_refused(
    provider: UnionpayProvider,
    sandbox: SandboxChannel,
    stranger_key: rsa.RSAPrivateKey,
) -> None:
    notice = spec_signed(notice_of(open_order(provider), sandbox), stranger_key)
    with pytest.raises(NotifyRejected) as rejected:
        provider.notify_parse(headers={}, body=as_body(notice))
    assert rejected.value.reason == "bad_signature"


def test_a_notice_from_an_unknown_certificate_is_refused(
    provider: UnionpayProvider,
    sandbox: SandboxChannel,
    stranger_key: rsa.RSAPrivateKey,
) -> None:
    notice = notice_of(open_order(provider), sandbox)
    notice["certId"] = "69026276696"
    with pytest.raises(NotifyRejected) as rejected:
        provider.notify_parse(headers={}, body=as_body(spec_signed(notice, stranger_key)))
    assert rejected.value.reason == "unknown_key"


@pytest.mark.parametrize(("field", "value"), [("merId", "898111948161234"), ("accessType", "1")])
def test_a_notice_for_another_merchant_is_refused(
    provider: UnionpayProvider,
    sandbox: SandboxChannel,
    field: str,
    value: str,
) -> None:
    notice = notice_of(open_order(provider), sandbox)
    notice[field] = value
    forged = spec_signed(notice, keys.private_key("unionpay.platform"))
    with pytest.raises(NotifyRejected) as rejected:
        provider.notify_parse(headers={}, body=as_body(forged))
    assert rejected.value.reason == "wrong_merchant"


def test_a_signed_notice_with_an_amount_that_is_not_digits_is_malformed(
    provider: UnionpayProvider,
    sandbox: SandboxChannel,
) -> None:
    notice = notice_of(open_order(provider), sandbox)
    notice["txnAmt"] = "25.00"
    forged = spec_signed(notice, keys.private_key("unionpay.platform"))
    with pytest.raises(NotifyRejected) as rejected:
        provider.notify_parse(headers={}, body=as_body(forged))
    assert rejected.value.reason == "malformed"


def test_a_payment_notice_without_its_query_id_is_malformed(
    provider: UnionpayProvider, sandbox: SandboxChannel
) -> None:
    # Without it there is no transaction to book the money under (nor to
    # tell it from the order's charge): UnionPay always sends one.
    notice = notice_of(open_order(provider), sandbox)
    del notice["queryId"]
    signed = spec_signed(notice, keys.private_key("unionpay.platform"))
    with pytest.raises(NotifyRejected) as rejected:
        provider.notify_parse(headers={}, body=as_body(signed))
    assert rejected.value.reason == "malformed"


def test_a_paid_query_answer_without_its_query_id_is_no_payment(
    provider: UnionpayProvider, monkeypatch
) -> None:
    order_no = paid_order(provider)
    answer = provider._query(order_no)
    del answer["queryId"]
    monkeypatch.setattr(provider, "_query", lambda order_id: dict(answer))
    with pytest.raises(ProviderError) as refused:
        provider.order_query(order_no=order_no)
    assert refused.value.code == "malformed"


@pytest.mark.parametrize(
    ("txn_time", "trace_time", "paid_at"),
    [
        # Sent on 31 December, paid on 1 January: the new year.
        ("20261231235000", "0101000500", dt.datetime(2027, 1, 1, 0, 5)),
        # Sent a second into the new year by our clock, paid a second before
        # it by UnionPay's: the old year, not the end of the new one.
        ("20270101000001", "1231235959", dt.datetime(2026, 12, 31, 23, 59, 59)),
        ("20260615120000", "0615120130", dt.datetime(2026, 6, 15, 12, 1, 30)),
    ],
)
def test_the_payment_time_is_the_trace_time_nearest_the_order(
    provider: UnionpayProvider, sandbox: SandboxChannel, txn_time, trace_time, paid_at
) -> None:
    notice = notice_of(open_order(provider), sandbox)
    notice.update({"txnTime": txn_time, "traceTime": trace_time})
    signed = spec_signed(notice, keys.private_key("unionpay.platform"))

    result = provider.notify_parse(headers={}, body=as_body(signed))

    assert result.paid_at == paid_at.replace(tzinfo=CHINA)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"not a form at all",
        b'{"respCode": "00"}',
        b"respCode=00&txnAmt=1",
        b"respCode=00&respCode=01",
    ],
)
def test_garbage_is_malformed(provider: UnionpayProvider, body: bytes) -> None:
    with pytest.raises(NotifyRejected) as rejected:
        provider.notify_parse(headers={}, body=body)
    assert rejected.value.reason == "malformed"


def test_replies_and_acknowledgements_speak_unionpay(
    provider: UnionpayProvider, sandbox: SandboxChannel
) -> None:
    accepted = provider.notify_reply(accepted=True)
    refused = provider.notify_reply(accepted=False, message="bad signature")
    assert (accepted.status, accepted.body) == (200, b"ok")
    assert (refused.status, refused.body) == (400, b"fail")
    assert sandbox.notify_acknowledged(httpx.Response(200, content=b"anything"))
    assert not sandbox.notify_acknowledged(httpx.Response(400, content=b"fail"))
    assert not sandbox.notify_acknowledged(httpx.Response(500))
    assert sandbox.notify_schedule == (60, 120, 240, 480, 960)


# --- both sides against the spec ----------------------------------------------------------


def test_the_sandbox_notice_verifies_by_the_spec(
    provider: UnionpayProvider, sandbox: SandboxChannel
) -> None:
    notice = notice_of(open_order(provider, 2500), sandbox)
    assert notice["certId"] == keys.serial("unionpay.platform")
    assert spec_verifies(notice, keys.private_key("unionpay.platform").public_key())
    assert notice["version"] == "5.1.0" and notice["signMethod"] == "01"
    assert notice["txnAmt"] == "2500" and notice["currencyCode"] == "156"
    assert len(notice["txnTime"]) == 14 and len(notice["traceTime"]) == 10
    assert notice["accNo"] == "6216***********0018"


def test_every_request_of_the_provider_verifies_by_the_spec(
    provider: UnionpayProvider, sandbox: SandboxChannel
) -> None:
    sent: list[tuple[str, dict[str, str]]] = []
    answered: list[dict[str, str]] = []

    def recorder(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, form(request.content)))
        response = sandbox.handle(request)
        answered.append(raw_answer(response.content.decode("utf-8")))
        return response

    watched = UnionpayProvider(
        provider.credentials,
        httpx.Client(
            base_url="https://unionpay.sandbox.invalid", transport=httpx.MockTransport(recorder)
        ),
    )
    order_no = open_order(watched, 2500)
    books.trade_pay(channel="unionpay", order_no=order_no, succeed=True)
    watched.order_query(order_no=order_no)
    refund_no = new_number("R")
    watched.refund_create(
        order_no=order_no, refund_no=refund_no, amount_fen=100, total_fen=2500, reason=""
    )
    watched.refund_query(order_no=order_no, refund_no=refund_no)
    watched.statement_download(date=timezone.localdate())

    paths = {path for path, _ in sent}
    assert paths == {
        "/gateway/api/appTransReq.do",
        "/gateway/api/queryTrans.do",
        "/gateway/api/backTransReq.do",
        "/gateway/api/fileTransReq.do",
    }
    merchant_key = keys.private_key("unionpay.merchant").public_key()
    for path, fields in sent:
        assert fields["certId"] == keys.serial("unionpay.merchant"), path
        assert spec_verifies(fields, merchant_key), path
        assert fields["merId"] == "777290058110048" and fields["accessType"] == "0", path
        assert fields["version"] == "5.1.0" and fields["encoding"] == "UTF-8", path
        assert len(fields["txnTime"]) == 14 and fields["txnTime"].isdigit(), path
    consume = next(fields for path, fields in sent if path.endswith("appTransReq.do"))
    assert consume["txnType"] == "01" and consume["txnSubType"] == "01"
    assert consume["bizType"] == "000201" and consume["channelType"] == "08"
    assert consume["txnAmt"] == "2500" and consume["backUrl"] == NOTIFY_URL
    refund = next(fields for path, fields in sent if path.endswith("backTransReq.do"))
    assert refund["txnType"] == "04" and refund["orderId"] == refund_no
    platform_key = keys.private_key("unionpay.platform").public_key()
    for answer in answered:
        assert answer["respCode"] in ("00", "34")
        assert spec_verifies(answer, platform_key)


def test_the_sandbox_refuses_a_request_signed_by_another_key(
    provider: UnionpayProvider,
    sandbox: SandboxChannel,
    stranger_key: rsa.RSAPrivateKey,
) -> None:
    fields = {
        "version": "5.1.0",
        "encoding": "UTF-8",
        "signMethod": "01",
        "certId": keys.serial("unionpay.merchant"),
        "txnType": "00",
        "txnSubType": "00",
        "bizType": "000000",
        "accessType": "0",
        "merId": "777290058110048",
        "orderId": new_number("P"),
        "txnTime": timezone.localtime().strftime("%Y%m%d%H%M%S"),
    }
    request = httpx.Request(
        "POST",
        "https://unionpay.sandbox.invalid/gateway/api/queryTrans.do",
        content=as_body(spec_signed(fields, stranger_key)),
        headers={"Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"},
    )
    answer = raw_answer(sandbox.handle(request).content.decode("utf-8"))
    assert answer["respCode"] == "11"
    assert spec_verifies(answer, keys.private_key("unionpay.platform").public_key())

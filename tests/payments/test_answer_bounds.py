"""What the channels answer, read never beyond what an answer can be.

httpx undoes ``Content-Encoding: gzip``/``deflate`` by itself: a few KB of a
hostile or broken answer can inflate to gigabytes (a decompression bomb),
and a plain answer of gigabytes would be read whole too. Every answer is
read in bounded steps, its coding undone step by step, and one past its
bound is refused unread: to the citizen and the operator it is the channel
failing, as an answer we cannot read is (502 ``payment_provider_error``,
the order or refund left for the sweep, the channel not reconciled).

The answers come from the channel's edge (the HTTP transport standing for
the channel), their bodies as streams, as they come off the network."""

from __future__ import annotations

import functools
import gzip
import io
import json
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.core.management import CommandError, call_command

from payments import selectors
from payments.models import PaymentOrder, ReconciliationReport
from payments.providers import provider_for
from payments.providers.base import ProviderError
from payments.sandbox.channels import sandbox_for
from tests.payments.conftest import CHANNELS, open_order
from tests.payments.test_channel_answers import (
    CALLS,
    alipay_method,
    answered,
    checkout_call,
    refund_call,
    refund_waits_then_is_sent_again,
    unreadable,
    wechat_signed,
)

pytestmark = pytest.mark.django_db

# What the bombs inflate to and the huge answers hold: far beyond any real
# answer (a few KB), far below a real bomb (gigabytes), so that reading it
# whole shows and the test stays light.
INFLATED = 64 << 20
# Read as far as a bound and one step beyond it at most.
STEP = 64 << 10
# An API call's bound is a few hundred KB: reading more than this is reading whole.
API_READ_AT_MOST = 1 << 20
# The statements' bounds, made small for the test as the bombs are.
STATEMENT_BOUND = INFLATED // 16

# Every call, but UnionPay's statement: its file travels in its API answer,
# under the statement's bound (below).
API_CALLS = [
    (channel, name)
    for channel in CHANNELS
    for name in CALLS
    if (channel, name) != ("unionpay", "statement_download")
]


@functools.cache
def gzip_bomb() -> bytes:
    """Some 64 KB of gzip inflating to INFLATED bytes (that are not UTF-8:
    read whole, the answer fails at its first byte, not after a long parse)."""
    packer = zlib.compressobj(9, wbits=zlib.MAX_WBITS | 16)
    chunk = b"\xff" * (1 << 20)
    packed = b"".join(packer.compress(chunk) for _ in range(INFLATED // len(chunk)))
    return packed + packer.flush()


def bomb_answer(status: int = 200) -> httpx.Response:
    """The bomb, as the network gives it: a stream httpx inflates as it reads."""
    return httpx.Response(
        status,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        stream=httpx.ByteStream(gzip_bomb()),
    )


class HugeBody(httpx.SyncByteStream):
    """A plain body of INFLATED bytes, made as it is read; ``read`` counts
    what was taken of it."""

    def __init__(self) -> None:
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        piece = b"\xff" * STEP
        while self.read < INFLATED:
            self.read += len(piece)
            yield piece


def huge_answer(body: HugeBody) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "application/json"}, stream=body)


def peak_of(action: Callable[[], object]) -> int:
    """The most memory ``action`` held at once (the bomb itself made before)."""
    gzip_bomb()
    tracemalloc.start()
    try:
        action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


# --- Every call to a channel -------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "name"), API_CALLS)
def test_an_answer_inflating_far_beyond_any_real_one_is_refused_unread(
    monkeypatch, channel, name
) -> None:
    provider = answered(monkeypatch, channel, lambda request: bomb_answer())
    refused: list[ProviderError] = []

    peak = peak_of(lambda: refused.append(unreadable(provider, name)))

    assert peak < INFLATED // 16
    # As an answer we cannot read: asked again, never taken as the channel's word.
    assert refused[0].retryable
    assert "larger than an answer can be" in str(refused[0])


@pytest.mark.parametrize(("channel", "name"), API_CALLS)
def test_a_plain_answer_larger_than_any_real_one_is_refused_unread(
    monkeypatch, channel, name
) -> None:
    body = HugeBody()
    provider = answered(monkeypatch, channel, lambda request: huge_answer(body))

    refused = unreadable(provider, name)

    assert body.read <= API_READ_AT_MOST
    assert refused.retryable
    assert "larger than an answer can be" in str(refused)


class Bombing(BaseHTTPRequestHandler):
    """A channel over a real socket answering every call with the bomb."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(gzip_bomb())))
        self.end_headers()
        self.wfile.write(gzip_bomb())

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def bombing_server() -> Iterator[str]:
    gzip_bomb()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Bombing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_answer_inflating_beyond_any_real_one_over_the_network_is_refused_unread(
    bombing_server, channel
) -> None:
    """As the bytes come off a socket, in the pieces the network gives."""
    ours = provider_for(channel)
    with httpx.Client(base_url=bombing_server, timeout=10.0, trust_env=False) as http:
        provider = type(ours)(ours.credentials, http)
        refused: list[ProviderError] = []

        peak = peak_of(lambda: refused.append(unreadable(provider, "order_query")))

    assert peak < INFLATED // 16
    assert "larger than an answer can be" in str(refused[0])


@pytest.mark.parametrize("status", [400, 503])
def test_a_wechat_refusal_inflating_beyond_any_real_one_is_refused_unread(
    monkeypatch, status
) -> None:
    """A refusal's body is read too (its code and message)."""
    provider = answered(monkeypatch, "wechat", lambda request: bomb_answer(status))
    refused: list[ProviderError] = []

    peak = peak_of(lambda: refused.append(unreadable(provider, "order_query")))

    assert peak < INFLATED // 16
    assert refused[0].retryable


def encoded(coding: str, content: bytes) -> bytes:
    if coding == "gzip":
        return gzip.compress(content)
    if coding == "deflate":
        return zlib.compress(content)
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # raw deflate, as some servers send it
    return packer.compress(content) + packer.flush()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw deflate"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_a_channel_answering_compressed_is_read_and_believed_as_before(
    citizen_api, awaiting, pay, monkeypatch, channel, coding
) -> None:
    """The signatures hold over the answer's own bytes, once decoded."""
    handle = sandbox_for(channel).handle

    def compressed(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "gzip, deflate"
        plain = handle(request)
        headers = {
            name: value
            for name, value in plain.headers.items()
            if name.lower() not in ("content-length", "content-encoding")
        }
        headers["Content-Encoding"] = "deflate" if coding == "raw deflate" else coding
        body = encoded(coding, plain.content)
        return httpx.Response(plain.status_code, headers=headers, stream=httpx.ByteStream(body))

    provider = answered(monkeypatch, channel, compressed)
    order = open_order(citizen_api, awaiting, channel)
    pay(order)

    assert provider.order_query(order_no=order["order_no"]).state == "paid"
    [line] = provider.statement_download(date=selectors.china_today())
    assert line.order_no == order["order_no"]


@pytest.mark.parametrize("coding", ["br", "compress", "gzip, br"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_an_answer_in_a_coding_we_did_not_ask_for_is_a_provider_error(
    monkeypatch, channel, coding
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Encoding": coding}, stream=httpx.ByteStream(b"\x0b\x02\x80")
        )

    refused = unreadable(answered(monkeypatch, channel, answer), "order_query")
    assert refused.retryable
    assert "not asked for" in str(refused)  # refused for its coding, not its bytes


# --- Statements and bills ----------------------------------------------------------------------


def reconciled(channel: str) -> str:
    """``reconcile`` of today for ``channel``, refused: what the operator reads."""
    err = io.StringIO()
    with pytest.raises(CommandError, match=f"{channel}: not reconciled"):
        call_command(
            "reconcile",
            "--date",
            selectors.china_today().isoformat(),
            "--channel",
            channel,
            stdout=io.StringIO(),
            stderr=err,
        )
    assert not ReconciliationReport.objects.exists()
    return err.getvalue()


def statement_answered(monkeypatch, channel: str, file: Callable[[], httpx.Response]) -> None:
    """The channel's statement file (WeChat's and Alipay's bill download,
    UnionPay's file answer) is ``file()``; the channel's bound on it made
    small for the test."""
    from payments.providers import alipay, unionpay, wechat

    monkeypatch.setattr(wechat, "BILL_MAX_BYTES", STATEMENT_BOUND, raising=False)
    monkeypatch.setattr(alipay, "BILL_MAX_DOWNLOAD", STATEMENT_BOUND)
    monkeypatch.setattr(unionpay, "STATEMENT_MAX_BYTES", STATEMENT_BOUND)
    sandbox = sandbox_for(channel)

    def answer(request: httpx.Request) -> httpx.Response:
        if channel == "wechat" and request.url.path == "/v3/bill/tradebill":
            url = f"{request.url.scheme}://{request.url.host}/v3/billdownload/file?token=1"
            return wechat_signed(
                200,
                json.dumps(
                    {"download_url": url, "hash_type": "SHA1", "hash_value": "0" * 40}
                ).encode(),
            )
        if channel == "alipay" and request.url.path == "/gateway.do":
            return sandbox._answer(
                alipay_method(request),
                {
                    "code": "10000",
                    "msg": "Success",
                    "bill_download_url": "https://alipay.sandbox.invalid/bill.zip",
                },
            )
        return file()

    answered(monkeypatch, channel, answer)


KIND = {"wechat": "a bill", "alipay": "a bill", "unionpay": "a statement"}


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_statement_inflating_beyond_any_days_is_refused_unread(monkeypatch, channel) -> None:
    statement_answered(monkeypatch, channel, bomb_answer)
    said: list[str] = []

    peak = peak_of(lambda: said.append(reconciled(channel)))

    assert peak < INFLATED // 4
    assert f"{channel}: statement not downloaded:" in said[0]
    assert f"larger than {KIND[channel]} can be" in said[0]


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_plain_statement_larger_than_any_days_is_refused_unread(monkeypatch, channel) -> None:
    body = HugeBody()
    statement_answered(monkeypatch, channel, lambda: huge_answer(body))

    said = reconciled(channel)

    # UnionPay's answer carries its file in base64: 4/3 of it, and the fields.
    assert body.read <= STATEMENT_BOUND * 4 // 3 + API_READ_AT_MOST
    assert f"larger than {KIND[channel]} can be" in said


# --- Through the API and the workers ----------------------------------------------------------


def bombing(monkeypatch, channel: str, *, only: Callable[[httpx.Request], bool]) -> None:
    """The channel answers the calls ``only`` picks with a bomb, the others
    as the sandbox does; ``monkeypatch.undo()`` mends them."""
    handle = sandbox_for(channel).handle

    def answer(request: httpx.Request) -> httpx.Response:
        return bomb_answer() if only(request) else handle(request)

    answered(monkeypatch, channel, answer)


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_checkout_answer_inflating_beyond_any_real_one_is_a_502_and_no_order(
    citizen_api, awaiting, monkeypatch, channel
) -> None:
    bombing(monkeypatch, channel, only=checkout_call)
    responses: list = []

    peak = peak_of(
        lambda: responses.append(
            citizen_api.post(
                "/api/v1/payments/",
                {"application": awaiting["id"], "channel": channel},
                format="json",
            )
        )
    )

    response = responses[0]
    assert response.status_code == 502, response.content[:200]
    assert response.json()["code"] == "payment_provider_error"
    assert not PaymentOrder.objects.exists()
    assert peak < INFLATED // 4  # the request's own work included


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_refund_whose_answers_inflate_beyond_any_real_one_stays_pending_and_is_sent_again(
    citizen_api, awaiting, pay, integrator_api, monkeypatch, settings, channel
) -> None:
    """The money may have gone back: the refund keeps its amount, says why
    it waits, and is sent again with the same number once answers read."""
    order = open_order(citizen_api, awaiting, channel)
    pay(order)
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    bombing(monkeypatch, channel, only=refund_call)
    waiting = refund_waits_then_is_sent_again(integrator_api, order, monkeypatch)
    assert "larger than an answer can be" in waiting.failure_reason

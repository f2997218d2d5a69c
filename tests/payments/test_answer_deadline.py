"""What the channels answer, read within a time as well as within a size.

httpx's timeout is per read: a channel (or anything between) that gives its
answer a byte every few seconds, or its head as slowly, or its head only
after a long wait, would hold the caller (a citizen's request, the sweep,
the refund worker, a statement download) for as long as it likes. A call
ends at its deadline, from sending to the answer's last byte: past it, it
is given up as an answer we cannot read is (502 ``payment_provider_error``,
the refund left pending and sent again, the channel not reconciled).

The channel here is a real HTTP server on a local socket, reached through
the client the providers are built with, answering what the sandbox would
answer, slowly. The bounds are made small for the test; so is the drip,
which still takes several times the bound."""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.core.management import CommandError, call_command

from payments import selectors
from payments.models import PaymentOrder, ReconciliationReport
from payments.providers import base, channel_http, provider_for
from payments.providers.base import BasePaymentProvider, ProviderError
from payments.sandbox.channels import sandbox_for
from tests.payments.conftest import CHANNELS, open_order
from tests.payments.test_channel_answers import (
    answered,
    checkout_call,
    refund_call,
    refund_waits_then_is_sent_again,
)

pytestmark = pytest.mark.django_db

# The bounds, made small for the test.
SECONDS = 1.0
# A slow answer comes in PIECES pieces, GAP seconds apart: several times
# the bound in all. Each gap is well within the per-read timeout (10 s):
# only a bound on the whole call ends it.
PIECES = 20
GAP = 0.25
# How the channel is slow: its body dripped, its head dripped, or its head
# sent only after as long as a dripped answer takes.
SLOW = ("body", "head", "late head")


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    slow: str | None  # one of SLOW, or None: at once


class Channel(ThreadingHTTPServer):
    """The channel's host: answers each request with the next of
    ``answers``, and counts what it has written."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Dripping)
        self.answers: queue.Queue[Answer] = queue.Queue()
        self.written = 0  # bytes of slow answers written (head and body)
        self.whole = 0  # bytes of slow answers there were to write
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Dripping(BaseHTTPRequestHandler):
    server: Channel
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.server.answers.get(timeout=10)
        head = [f"HTTP/1.1 {answer.status} OK\r\n".encode()]
        head += [f"{name}: {value}\r\n".encode() for name, value in answer.headers]
        head += [f"Content-Length: {len(answer.body)}\r\n\r\n".encode()]
        whole = b"".join(head) + answer.body
        if answer.slow is None:
            self.wfile.write(whole)
            return
        self.server.whole += len(whole)
        if answer.slow == "late head":
            pieces = [whole]
            if self.server.stop.wait(PIECES * GAP):
                return
        else:
            cut = len(whole) - len(answer.body)
            slowly = whole[:cut] if answer.slow == "head" else answer.body
            step = -(-len(slowly) // PIECES)
            pieces = [slowly[start : start + step] for start in range(0, len(slowly), step)]
            pieces = [*pieces, answer.body] if answer.slow == "head" else [whole[:cut], *pieces]
        for number, piece in enumerate(pieces):
            if number and self.server.stop.wait(GAP):
                return
            try:
                self.wfile.write(piece)
                self.wfile.flush()
            except OSError:  # the caller gave up: nothing more is sent
                return
            self.server.written += len(piece)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def channel() -> Iterator[Channel]:
    server = Channel()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


def slowly(
    monkeypatch,
    server: Channel,
    name: str,
    *,
    slow: str = "body",
    only: Callable[[httpx.Request], bool] = lambda request: True,
) -> BasePaymentProvider:
    """Channel ``name``'s provider reaching ``server`` through a client
    made as the providers' are, every call answered there as the sandbox
    answers it, the calls ``only`` picks slowly; the bounds made small.
    ``monkeypatch.undo()`` mends it all."""
    from payments.providers import alipay, unionpay, wechat

    monkeypatch.setattr(base, "ANSWER_SECONDS", SECONDS, raising=False)
    for module in (wechat, alipay, unionpay):
        monkeypatch.setattr(module, "STATEMENT_SECONDS", SECONDS, raising=False)
    # Alipay's bill is downloaded from a URL of its own host.
    monkeypatch.setattr(sandbox_for("alipay"), "base_url", server.url)
    sandbox = sandbox_for(name)

    def channel_says(request: httpx.Request) -> None:
        # The sandbox's answer, worked out here (it keeps its books in the
        # test's database) and given to the server to send.
        said = sandbox.handle(request)
        headers = [
            (header, value)
            for header, value in said.headers.multi_items()
            if header.lower() not in ("content-length", "content-encoding", "transfer-encoding")
        ]
        server.answers.put(
            Answer(said.status_code, headers, said.content, slow if only(request) else None)
        )

    http = channel_http(server.url)
    http.event_hooks["request"].append(channel_says)
    provider = provider_for(name)
    monkeypatch.setattr(provider, "http", http)
    return provider


def given_up(server: Channel) -> None:
    """The slow answer was not read to its end: the caller hung up first."""
    server.stop.set()
    assert server.whole > 0
    assert server.written < server.whole


# --- One call ---------------------------------------------------------------------------------


@pytest.mark.parametrize("slow", SLOW)
@pytest.mark.parametrize("name", CHANNELS)
def test_an_answer_slower_than_any_real_one_is_given_up(
    citizen_api, awaiting, pay, monkeypatch, channel, name, slow
) -> None:
    order = open_order(citizen_api, awaiting, name)
    pay(order)
    provider = slowly(monkeypatch, channel, name, slow=slow)

    with pytest.raises(ProviderError) as caught:
        provider.order_query(order_no=order["order_no"])

    assert caught.value.code == "answer_too_slow"
    # As an answer we cannot read: asked again, never taken as the channel's word;
    # and as a channel that cannot be reached (the sweep leaves its others for later).
    assert caught.value.retryable
    assert caught.value.unreachable
    assert "not answered in full within" in str(caught.value)
    given_up(channel)

    monkeypatch.undo()
    assert provider_for(name).order_query(order_no=order["order_no"]).state == "paid"


class Trickle(httpx.SyncByteStream):
    """A body given a piece at a time, slowly, by the transport itself."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.given = 0

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), 16):
            time.sleep(GAP)
            self.given += 1
            yield self.body[start : start + 16]


def test_an_answer_a_transport_gives_slowly_is_given_up(monkeypatch) -> None:
    """Whatever the transport (one without sockets too), the answer's time
    is checked between its pieces."""
    body = Trickle(b"{}" * 8 * PIECES)
    provider = answered(monkeypatch, "wechat", lambda request: httpx.Response(200, stream=body))
    monkeypatch.setattr(base, "ANSWER_SECONDS", SECONDS, raising=False)

    with pytest.raises(ProviderError) as caught:
        provider.order_query(order_no="MC20260101000000000001")

    assert caught.value.code == "answer_too_slow"
    assert body.given < PIECES


# --- Statements and bills ---------------------------------------------------------------------


FILES = {
    "wechat": lambda request: request.url.path == "/v3/billdownload/file",
    "alipay": lambda request: request.url.path == "/downloadBillFile.resource",
    "unionpay": lambda request: request.url.path.endswith("fileTransReq.do"),
}


@pytest.mark.parametrize("name", CHANNELS)
def test_a_statement_slower_than_any_days_is_given_up_and_not_reconciled(
    citizen_api, awaiting, pay, monkeypatch, channel, name
) -> None:
    pay(open_order(citizen_api, awaiting, name))
    slowly(monkeypatch, channel, name, only=FILES[name])
    err = io.StringIO()

    with pytest.raises(CommandError, match=f"{name}: not reconciled"):
        call_command(
            "reconcile",
            "--date",
            selectors.china_today().isoformat(),
            "--channel",
            name,
            stdout=io.StringIO(),
            stderr=err,
        )

    assert f"{name}: statement not downloaded:" in err.getvalue()
    assert f"not answered in full within {SECONDS:g} seconds" in err.getvalue()
    assert not ReconciliationReport.objects.exists()
    given_up(channel)


# --- Through the API and the workers ----------------------------------------------------------


@pytest.mark.parametrize("name", CHANNELS)
def test_a_checkout_answer_slower_than_any_real_one_is_a_502_and_no_order(
    citizen_api, awaiting, monkeypatch, channel, name
) -> None:
    slowly(monkeypatch, channel, name, only=checkout_call)

    response = citizen_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": name}, format="json"
    )

    assert response.status_code == 502, response.content[:200]
    assert response.json()["code"] == "payment_provider_error"
    assert not PaymentOrder.objects.exists()
    given_up(channel)


@pytest.mark.parametrize("name", CHANNELS)
def test_a_refund_whose_answers_are_slower_than_any_real_one_stays_pending_and_is_sent_again(
    citizen_api, awaiting, pay, integrator_api, monkeypatch, settings, channel, name
) -> None:
    order = open_order(citizen_api, awaiting, name)
    pay(order)
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    slowly(monkeypatch, channel, name, only=refund_call)

    waiting = refund_waits_then_is_sent_again(integrator_api, order, monkeypatch)

    assert "not answered in full within" in waiting.failure_reason
    given_up(channel)

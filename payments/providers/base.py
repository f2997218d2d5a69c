"""What a payment provider is to the rest of the platform.

A provider is the merchant's side of one payment channel (WeChat Pay API v3,
Alipay, UnionPay): it opens a checkout, authenticates and reads the
channel's callbacks, queries orders and refunds, refunds, and downloads the
daily statement. It speaks the channel's own wire format over HTTP through
``self.http`` (an ``httpx.Client``); in sandbox mode that client's transport
is the channel's sandbox (:mod:`payments.sandbox`), which answers exactly as
the channel does, so everything on our side is what production runs.

Everything a provider returns is one of the small value types below; what it
cannot accept it raises as :class:`NotifyRejected` (callbacks) or
:class:`ProviderError` (calls to the channel); an authentic callback about
something else than a payment as :class:`NotifyNotAPayment`. Providers keep no state of
their own: :mod:`payments.orders` and :mod:`payments.refunds` own the rules.

Every answer of a channel is read through :func:`answer_read` (or
:func:`answer_stream` and :func:`answer_chunks`, for a file spooled as it
comes), never whole: it undoes the answer's content coding itself, in
bounded steps, and refuses an answer past its bound unread. A call has a
bound in time too, from sending the request to the answer's last byte
(:data:`ANSWER_SECONDS`, a statement's longer): past it, the call is given
up as an answer we cannot read is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import httpcore
import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from config.deadlines import DeadlineBackend, deadline_set

# Our view of a trade at the channel. "pending": not paid yet (NOTPAY,
# WAIT_BUYER_PAY, USERPAYING); "paid": money taken (SUCCESS, TRADE_SUCCESS,
# TRADE_FINISHED, respCode 00); "closed": closed unpaid; "failed": the
# payment failed (PAYERROR) and will not succeed.
TradeState = Literal["pending", "paid", "closed", "failed"]
RefundState = Literal["pending", "succeeded", "failed"]

# The longest transaction or refund id a channel's answer may give: what
# our columns keep (PaymentOrder.provider_transaction_id, LedgerEntry.reference,
# Refund.provider_refund_id). The channels' own are 32 (WeChat Pay), 64
# (Alipay) and 21 (UnionPay) characters.
REFERENCE_MAX = 64
# The years a channel's time may fall in. Any other is no moment of a
# trade, and one near datetime's own bounds cannot even be moved to
# another zone (OverflowError where it is stored or shown).
CHANNEL_YEARS = range(2000, 2100)

# What a channel's answer to one API call may hold once its content coding
# is undone. A real one is a few KB (UnionPay's, carrying the gateway's
# certificate, some 3 KB), so this is generous a hundred times; past it the
# answer is refused unread, as one we cannot read is: a decompression bomb
# (a few KB of gzip inflating to gigabytes) or a broken channel never fills
# a worker's memory. Statements and bills have their own bounds, by channel.
ANSWER_MAX_BYTES = 256 << 10
# The content codings we accept and undo ourselves, step by step: httpx
# would inflate each chunk that arrives at once (one chunk of a bomb, or
# a whole answer from a transport that gives it in one piece).
ANSWER_ENCODINGS = "gzip, deflate"
_ANSWER_STEP = 64 << 10

# How long one API call may take in all, from sending the request to the
# last byte of the answer (connecting, sending, waiting for the head,
# reading the body). The client's timeout (10 s) is per read: a channel, or
# anything between, giving its answer a byte every few seconds would hold
# the caller (a citizen's request, the sweep, the refund worker) for as
# long as it liked. A real answer comes within a few seconds; past this the
# call is given up, as an answer we cannot read is (:func:`answer_stream`).
ANSWER_SECONDS = 30.0
# The same for a day's statement or bill (megabytes, from a file server
# slower than the API): passed by the providers' ``statement_download``.
STATEMENT_SECONDS = 300.0


def storable(text: str, limit: int) -> str:
    """Text from a channel or a caller we do not trust, fit for a text
    column and JSON: no NUL (PostgreSQL refuses it), no lone surrogates
    (not UTF-8), bounded."""
    return text[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def channel_reference(value: str, name: str) -> str:
    """``value``, a channel's transaction or refund id, if it fits
    :data:`REFERENCE_MAX` and is printable text (no NUL, control character
    or lone surrogate: an id is kept as the channel wrote it, or not at
    all); ValueError otherwise."""
    if len(value) > REFERENCE_MAX:
        raise ValueError(f"{name} of {len(value)} characters")
    if not value.isprintable():
        raise ValueError(f"{name} {storable(value, REFERENCE_MAX)!r} is not printable")
    return value


def channel_time(value: dt.datetime) -> dt.datetime:
    """``value``, a time a channel wrote (aware), if its year is one of
    :data:`CHANNEL_YEARS`; ValueError otherwise."""
    if value.year not in CHANNEL_YEARS:
        raise ValueError(f"time out of range: {value.isoformat()}")
    return value


@dataclass(frozen=True)
class Credentials:
    """A merchant's account at one channel.

    ``merchant_private_key`` signs our requests; ``platform_public_key``
    (named ``platform_serial`` by the channel) verifies the channel's
    callbacks and answers. ``api_v3_key`` is WeChat Pay's symmetric key that
    encrypts callback resources (empty for the other channels).
    """

    merchant_id: str
    app_id: str
    merchant_private_key: RSAPrivateKey
    merchant_serial: str
    platform_public_key: RSAPublicKey
    platform_serial: str
    api_v3_key: bytes = b""
    api_base_url: str = ""


@dataclass(frozen=True)
class PaymentResult:
    """The channel's word on one order, from a callback or a query."""

    order_no: str
    state: TradeState
    transaction_id: str = ""
    amount_fen: int = 0
    merchant_id: str = ""
    app_id: str = ""
    paid_at: dt.datetime | None = None
    raw_state: str = ""  # the channel's own state name, for the notify log


@dataclass(frozen=True)
class RefundResult:
    """The channel's word on one refund."""

    refund_no: str
    state: RefundState
    refund_id: str = ""
    amount_fen: int = 0
    failure_reason: str = ""
    # When the channel says the money went back (a succeeded refund): the
    # moment its statement lists the refund under, whenever we hear of it.
    succeeded_at: dt.datetime | None = None


@dataclass(frozen=True)
class StatementLine:
    """One line of the channel's daily statement (对账单)."""

    kind: Literal["charge", "refund"]
    order_no: str
    # A charge's transaction id, or our refund number for a refund.
    reference: str
    amount_fen: int
    state: str  # "paid" / "succeeded", or the channel's other word
    at: dt.datetime


@dataclass(frozen=True)
class NotifyReply:
    """What we answer a callback, in the channel's own success/failure format."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


class NotifyRejected(Exception):
    """A callback that is not authentic or not readable. ``reason`` is a
    stable snake_case word for the notify log (``bad_signature``,
    ``stale_timestamp``, ``malformed``, ``unknown_key``, ``decrypt_failed``,
    ``wrong_merchant``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class NotifyNotAPayment(Exception):
    """An authentic callback about something other than a payment (UnionPay
    posts a refund's notice to the same back URL): acknowledged and logged,
    nothing applied (refunds are settled by their query)."""


class ProviderError(Exception):
    """A call to the channel failed or was refused; ``retryable`` says
    whether trying the same call later may succeed: the network, the
    channel's own fault, a refusal it means as "later" (a refund beyond the
    merchant's balance), or an answer that is not its word (its signature
    does not hold: the call may or may not have reached it).

    ``unreachable`` says the channel could not be reached, or not in time:
    the connection failed, dropped or timed out, the answer did not come
    in full within the call's bound (``answer_too_slow``), or the answer
    was the HTTP layer's own refusal of any call (:func:`unreached_status`:
    5xx, 408, 429). Every other call to the channel would fail the same
    way now, each waiting out its time: the payments sweep leaves the
    channel's other rows for its next run. A refusal in the channel's own
    words, "later" included (WeChat Pay's ``NOT_ENOUGH``, Alipay's
    ``ACQ.SYSTEM_ERROR``, UnionPay's respCode 06), is about the one call
    and is not. Set where the providers turn an httpx failure or an HTTP
    status into this error (:func:`unreached`, :func:`unreached_status`),
    and by the call's deadline."""

    def __init__(
        self, message: str, *, retryable: bool = True, code: str = "", unreachable: bool = False
    ) -> None:
        # Often the channel's own words, shown where a refund waits.
        super().__init__(storable(message, 2000))
        self.retryable = retryable
        self.code = code
        self.unreachable = unreachable


def unreached(error: httpx.HTTPError) -> bool:
    """Whether an httpx failure of a call to a channel is one of reaching
    it (connecting, a TLS handshake, reading, writing, a timeout, the
    connection dropped, a proxy's refusal), not of an answer that came (a
    content coding that does not undo, too many redirects)."""
    return isinstance(error, httpx.TransportError)


def unreached_status(status: int) -> bool:
    """Whether an HTTP status from a channel is its HTTP layer's failure or
    refusal of any call now (5xx, 408 Request Timeout, 429 Too Many
    Requests), not an answer about the call's order or refund."""
    return status >= 500 or status in (408, 429)


@dataclass(frozen=True)
class _Deadline:
    """The end of the call under way in this thread (``time.monotonic()``)."""

    at: float
    seconds: float
    what: str
    retryable: bool

    def left(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> ProviderError:
        return ProviderError(
            f"{self.what}: not answered in full within {self.seconds:g} seconds: given up",
            retryable=self.retryable,
            code="answer_too_slow",
            unreachable=True,
        )


# The deadline of the call under way in this thread, set by answer_stream
# for as long as its answer is read (its end also set for config.deadlines,
# which every connect, read and write of a channel client's connections
# honours: see deadline_bound); answer_chunks checks it between the pieces
# of the answer.
_under_way = threading.local()


def _deadline() -> _Deadline | None:
    return getattr(_under_way, "deadline", None)


def deadline_bound(http: httpx.Client) -> httpx.Client:
    """``http``, every connect, TLS handshake, read and write of its
    connections waiting no longer than the call under way has left
    (:func:`answer_stream`): a head that never comes, or comes a byte at a
    time, ends at the call's deadline as a dripped body does.

    httpx gives no say in the network backend of the connection pools it
    makes: ours is put around theirs in each (the client's own and those of
    any proxy taken from the environment). A test holds this to httpx's
    make (tests/payments/test_answer_deadline.py, a head given slowly)."""
    for transport in (http._transport, *http._mounts.values()):
        pool = getattr(transport, "_pool", None)
        if isinstance(pool, httpcore.ConnectionPool):
            pool._network_backend = DeadlineBackend(pool._network_backend)
    return http


class _Inflater:
    """One content coding (``gzip``, ``deflate``) undone in steps of at most
    :data:`_ANSWER_STEP` bytes, however much a step of input inflates to."""

    def __init__(self, coding: str) -> None:
        gzip = coding in ("gzip", "x-gzip")
        self.decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)
        # "deflate" is zlib's format by the RFC, raw deflate by some servers:
        # the first step tells (as httpx and the browsers do).
        self.raw_deflate_possible = not gzip

    def undo(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        fed = False
        for piece in pieces:
            fed = fed or bool(piece)
            if self.decompressor.eof:
                continue  # past the end of the coded data: not the answer's (as httpx)
            pending = piece
            while True:
                try:
                    out = self.decompressor.decompress(pending, _ANSWER_STEP)
                except zlib.error:
                    if not self.raw_deflate_possible:
                        raise
                    self.raw_deflate_possible = False
                    self.decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                self.raw_deflate_possible = False
                yield out
                pending = self.decompressor.unconsumed_tail
                if self.decompressor.eof or (not pending and len(out) < _ANSWER_STEP):
                    break
        if fed and not self.decompressor.eof:
            raise zlib.error("the coded answer is cut short")


def _raw_steps(
    response: httpx.Response, *, limit: int, too_large: ProviderError
) -> Iterator[bytes]:
    """The answer's bytes as they came, in steps of at most :data:`_ANSWER_STEP`
    (a transport may give the whole answer in one piece), never more than
    ``limit`` of them."""
    deadline = _deadline()
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read > limit:
            raise too_large
        # However the transport gives it (one without sockets too), the
        # answer is not read past the call's deadline.
        if deadline is not None and deadline.left() <= 0:
            raise deadline.passed()
        for start in range(0, len(chunk), _ANSWER_STEP):
            yield chunk[start : start + _ANSWER_STEP]


def answer_chunks(
    response: httpx.Response,
    *,
    what: str,
    limit: int = ANSWER_MAX_BYTES,
    kind: str = "an answer",
    retryable: bool = True,
) -> Iterator[bytes]:
    """The body of ``response`` (sent with ``stream=True``, see
    :func:`answer_stream`) as it is read, its content coding undone, in
    pieces of at most 64 KiB.

    Past ``limit`` bytes, decoded or as they came, it stops reading and
    raises :class:`ProviderError` (code ``answer_too_large``; ``retryable``
    as the caller treats an answer it cannot read) with the message
    "``what``: larger than ``kind`` can be". Past the deadline of the call
    (:func:`answer_stream`) it stops reading too, and raises that call's
    ``answer_too_slow``. A coding other than
    :data:`ANSWER_ENCODINGS` (none was asked for), or one that does not
    undo, raises ``httpx.DecodingError``, as httpx does for a broken one:
    the caller's handling of a failed call applies."""
    too_large = ProviderError(
        f"{what}: larger than {kind} can be (over {limit} bytes once decoded): refused unread",
        retryable=retryable,
        code="answer_too_large",
    )
    if response.is_stream_consumed:
        # Made whole in this process (an httpx.Response(content=...) of an
        # in-process transport, the sandbox's): read and decoded already,
        # by whoever made it; the bound holds all the same.
        if len(response.content) > limit:
            raise too_large
        for start in range(0, len(response.content), _ANSWER_STEP):
            yield response.content[start : start + _ANSWER_STEP]
        return
    codings = [
        coding.strip().lower()
        for coding in response.headers.get_list("content-encoding", split_commas=True)
    ]
    pieces = _raw_steps(response, limit=limit, too_large=too_large)
    # Codings are listed in the order they were applied: undone from the last.
    for coding in reversed([coding for coding in codings if coding not in ("", "identity")]):
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise httpx.DecodingError(
                f"{what}: content coding {coding!r} not asked for", request=response.request
            )
        pieces = _Inflater(coding).undo(pieces)
    decoded = 0
    try:
        for piece in pieces:
            decoded += len(piece)
            if decoded > limit:
                raise too_large
            if piece:
                yield piece
    except zlib.error as exc:
        raise httpx.DecodingError(f"{what}: {exc}", request=response.request) from exc


@contextlib.contextmanager
def answer_stream(
    http: httpx.Client,
    request: httpx.Request,
    *,
    what: str,
    seconds: float | None = None,
    retryable: bool = True,
) -> Iterator[httpx.Response]:
    """``request`` sent, its answer's head read and its body left to
    :func:`answer_chunks`; the codings it can undo the only ones asked for.

    The whole call, from sending ``request`` to the answer's last byte read
    in the block, takes at most ``seconds`` (:data:`ANSWER_SECONDS` unless
    given): every connect, read and write waits at most the time left (see
    :func:`deadline_bound`), and the answer is not read past it. Past it,
    the call raises :class:`ProviderError` (code ``answer_too_slow``;
    ``retryable`` as the caller treats an answer it cannot read) with the
    message "``what``: not answered in full within ``seconds`` seconds"."""
    if seconds is None:
        seconds = ANSWER_SECONDS
    request.headers["Accept-Encoding"] = ANSWER_ENCODINGS
    deadline = _Deadline(time.monotonic() + seconds, seconds, what, retryable)
    outer = _deadline()
    _under_way.deadline = deadline
    outer_at = deadline_set(deadline.at)
    try:
        response = http.send(request, stream=True)
        try:
            yield response
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        # A timeout that came with the deadline is the deadline's; one
        # before it (a read's own timeout) is left to the caller as it was.
        if deadline.left() <= 0:
            raise deadline.passed() from exc
        raise
    finally:
        _under_way.deadline = outer
        deadline_set(outer_at)


def answer_read(
    http: httpx.Client,
    request: httpx.Request,
    *,
    what: str,
    limit: int = ANSWER_MAX_BYTES,
    kind: str = "an answer",
    seconds: float | None = None,
    retryable: bool = True,
) -> httpx.Response:
    """Send ``request`` and read its answer whole, as ``http.send`` would,
    but never beyond ``limit`` bytes (see :func:`answer_chunks`) nor beyond
    ``seconds`` (see :func:`answer_stream`). The answer comes back with its
    body read (``content`` is the exact bytes the channel signed, decoded)
    and its ``Content-Encoding`` gone. Raises ``httpx.HTTPError`` as
    ``http.send`` does, and :class:`ProviderError` for an answer past
    either bound."""
    with answer_stream(http, request, what=what, seconds=seconds, retryable=retryable) as response:
        body = b"".join(
            answer_chunks(response, what=what, limit=limit, kind=kind, retryable=retryable)
        )
    read = httpx.Headers(
        [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
    )
    return httpx.Response(response.status_code, headers=read, content=body, request=request)


class BasePaymentProvider:
    """The merchant's side of one payment channel.

    Subclasses set :attr:`identifier` (the ``channel`` of orders and the
    ``{channel}`` of ``/api/v1/payments/notify/{channel}/``) and
    :attr:`verbose_name`, and implement every method below. They are built
    with the merchant's :class:`Credentials` and an ``httpx.Client`` whose
    base URL is the channel's API host (or the sandbox's transport). Every
    answer is read through :func:`answer_read` or :func:`answer_stream` and
    :func:`answer_chunks`, never with ``http.send``/``.post`` and
    ``.content`` alone: they bound it in bytes and in time (a statement's
    download is given :data:`STATEMENT_SECONDS`).

    Amounts are integer fen on both sides of every method, whatever the
    channel writes on the wire (Alipay speaks yuan with two decimals).
    """

    identifier: ClassVar[str]
    verbose_name: ClassVar[str]

    def __init__(self, credentials: Credentials, http: httpx.Client) -> None:
        self.credentials = credentials
        self.http = http

    def checkout_create(
        self,
        *,
        order_no: str,
        amount_fen: int,
        description: str,
        expires_at: dt.datetime,
        notify_url: str,
    ) -> dict[str, str]:
        """Open the order at the channel and return what the citizen's app
        needs to pay it (WeChat's ``code_url``, Alipay's signed order
        string, UnionPay's ``tn``): JSON-ready, shown to the client as
        ``checkout``. Must be idempotent for one ``order_no`` (the channel
        refuses a second order with the same number and another amount).
        Raises :class:`ProviderError`."""
        raise NotImplementedError

    def notify_parse(self, *, headers: Mapping[str, str], body: bytes) -> PaymentResult:
        """Authenticate a payment callback and read it.

        Checks everything the channel offers to check (signature with the
        platform key, timestamps, our merchant and app ids, decryption) and
        raises :class:`NotifyRejected` on any failure; an authentic callback
        that is not about a payment (UnionPay's refund notice) raises
        :class:`NotifyNotAPayment`. ``headers`` are case-insensitive. The
        amount is returned, not judged: the caller compares it with the
        order."""
        raise NotImplementedError

    def notify_reply(self, *, accepted: bool, message: str = "") -> NotifyReply:
        """The channel's acknowledgement: ``accepted`` means "do not send this
        again"; anything else makes the channel retry on its schedule. The
        caller may give a refusal another 4xx status (401 for a bad
        signature, 404 for an unknown order): the body stays the channel's."""
        raise NotImplementedError

    def order_query(self, *, order_no: str) -> PaymentResult:
        """Ask the channel where an order stands (主动查单); used for pending
        orders that saw no callback. Raises :class:`ProviderError`."""
        raise NotImplementedError

    def order_close(self, *, order_no: str) -> None:
        """Close an unpaid order at the channel so it can no longer be paid.
        Closing one that is already closed or was never opened is fine.
        Raises :class:`ProviderError` (for instance: it was paid)."""
        raise NotImplementedError

    def refund_create(
        self, *, order_no: str, refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundResult:
        """Ask for ``amount_fen`` of a paid order back. Idempotent on
        ``refund_no`` at the channel. Most channels answer ``pending``
        and settle later (see :meth:`refund_query`). Raises
        :class:`ProviderError`."""
        raise NotImplementedError

    def refund_query(self, *, order_no: str, refund_no: str) -> RefundResult:
        """Where a refund stands at the channel. Raises :class:`ProviderError`;
        one whose ``code`` is in :attr:`refund_unknown_codes` when the
        channel has no such refund."""
        raise NotImplementedError

    #: The codes of the :class:`ProviderError` :meth:`refund_query` raises
    #: when the channel has no such refund (it never took the request).
    #: Only that answer lets a refund the channel refused count as failed
    #: and free its amount; any other error leaves it pending, since the
    #: money may have gone back already.
    refund_unknown_codes: ClassVar[frozenset[str]] = frozenset()

    def refund_unknown(self, error: ProviderError) -> bool:
        """Whether ``error``, raised by :meth:`refund_query`, says the
        channel has no such refund."""
        return not error.retryable and error.code in self.refund_unknown_codes

    def statement_download(self, *, date: dt.date) -> list[StatementLine]:
        """The channel's statement of ``date`` (China time): every charge
        and every refund it settled that day. Raises :class:`ProviderError`."""
        raise NotImplementedError

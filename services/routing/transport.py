"""HTTP to department systems: URL rules (SSRF), signing, bounded sends.

Endpoint URLs are checked when registered and again, on the resolved
address, at every delivery: the request then goes to exactly the address
that was checked (Host header and TLS name kept), so a DNS answer that
changes between check and connect cannot steer it into the private network.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import datetime as dt
import functools
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
import idna
from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from standardwebhooks import Webhook

from config.deadlines import DeadlineBackend, deadline_set

logger = logging.getLogger(__name__)

USER_AGENT = "MyChangsha-Webhooks/1.0"
RESPONSE_KEEP_BYTES = 2048
RESPONSE_READ_LIMIT = 64 * 1024


class UrlNotAllowed(Exception):
    """The URL may not receive events; the message says why (user-facing)."""

    def __init__(self, message: str, *, shape: bool = False) -> None:
        super().__init__(message)
        # True: malformed (the message says how); False: does not resolve or
        # points somewhere forbidden (one message for both).
        self.shape = shape


class LookupsBusy(UrlNotAllowed):
    """The host was not looked up at all: too many lookups are under way in
    this process, or for this caller (see :data:`MAX_LOOKUPS_PER_CALLER`).
    Nothing is known about the URL; asking again later may succeed. A
    subclass, so that a caller that only knows refusals (a delivery's try)
    takes it as one."""


def _ascii_host(hostname: str) -> str:
    """The host as DNS knows it. A name in other scripts goes by IDNA 2008
    with UTS 46 mapping, as browsers take it: Python's own codec (IDNA 2003)
    turns ``faß.de`` into ``fass.de`` and ``βόλος.com`` into another Greek
    name, domains of other owners."""
    if hostname.isascii():
        return hostname.encode("idna").decode("ascii")
    return idna.encode(hostname, uts46=True).decode("ascii")


def url_shape_check(url: str) -> tuple[str, str, int]:
    """(scheme, ASCII host, port) of an acceptable URL, or :class:`UrlNotAllowed`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(_("地址格式不正确"), shape=True) from exc
    if parts.scheme not in ("http", "https"):
        raise UrlNotAllowed(_("只支持 http 和 https 地址"), shape=True)
    if not parts.hostname:
        raise UrlNotAllowed(_("地址缺少主机名"), shape=True)
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed(_("地址中不能包含用户名或密码"), shape=True)
    if parts.fragment:
        raise UrlNotAllowed(_("地址中不能包含 # 片段"), shape=True)
    if port == 0:  # no server listens on port 0
        raise UrlNotAllowed(_("地址的端口不能是 0"), shape=True)
    try:
        host = _ascii_host(parts.hostname)  # 例子.中国 → xn--fsqu00a.xn--fiqs8s
    except (UnicodeError, idna.IDNAError) as exc:
        raise UrlNotAllowed(_("地址格式不正确"), shape=True) from exc
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def url_normalize(url: str) -> str:
    """``url`` with its host in ASCII, as it is stored and sent."""
    scheme, host, _port = url_shape_check(url)
    parts = urlsplit(url)
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


# Written out rather than left to ``is_global`` alone: Python's tables differ
# between versions (3.11 counts site-local and local-use NAT64 as global).
# From the IANA special-purpose registries, every range not globally reachable.
_NOT_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)
_NOT_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(cidr)
    for cidr in (
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates into private networks
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 segment identifiers
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still routed by some stacks)
        "ff00::/8",  # multicast
    )
)
# The only IPv6 space allocated for global unicast; the ranges that embed an
# IPv4 address (below) are judged by that address instead.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 7915)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix (RFC 6052)
_CARRY_IPV4 = (_IPV4_MAPPED, _IPV4_TRANSLATED, _NAT64)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries, which a translator or tunnel
    on the way may deliver to: mapped, SIIT-translated, NAT64 (in the last 32
    bits) and 6to4. (Teredo lies in 2001::/23, refused as a whole.)"""
    found = []
    if any(ip in net for net in _CARRY_IPV4):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    return found


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in net for net in _NOT_PUBLIC_V4)


def address_is_public(address: str) -> bool:
    """Whether an endpoint may be reached at ``address``: the one rule used at
    registration and before every send."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_v4(ip)
    if ip.scope_id:  # fe80::1%eth0: an interface of this machine
        return False
    embedded = _embedded_ipv4(ip)
    if any(ip in net for net in _CARRY_IPV4):
        return all(_public_v4(v4) for v4 in embedded)
    return (
        ip in _GLOBAL_UNICAST_V6
        and ip.is_global
        and not any(ip in net for net in _NOT_PUBLIC_V6)
        and all(_public_v4(v4) for v4 in embedded)
    )


# One answer whether the host does not resolve or resolves somewhere
# forbidden: two answers would let an integrator tell the city's internal
# names from names that do not exist. The reason goes to the log only.
REFUSED = gettext_lazy("主机名无法解析，或解析到内网、本机或保留地址")


def _refused() -> UrlNotAllowed:
    return UrlNotAllowed(str(REFUSED))


BUSY = gettext_lazy("暂时无法检查地址的主机名，请稍后再试")


# How long a host's lookup may take (the system resolver's own limit can be
# tens of seconds, for a name whose servers never answer).
LOOKUP_SECONDS = 5.0
# Each lookup runs on a thread of its own, so that the caller can stop
# waiting; one that hangs holds only its thread, until the resolver gives up.
# Callers asking for a name whose lookup is under way share it: a name that
# never answers holds one thread, however many deliveries go to it, and
# never the lookups of other names (a shared pool of threads would fill
# with one department's silent names and refuse every department's).
_under_way: dict[tuple[str, int], concurrent.futures.Future[Any]] = {}
# The lookups each caller (a department) started that have not ended yet,
# hung ones included: the threads it holds.
_started_by: collections.Counter[str] = collections.Counter()
_under_way_lock = threading.Lock()


# What a name resolved to for a send, kept this long: the deliveries of a
# batch, and the batches after it, to one department's host take one lookup
# between them (the system resolver keeps nothing; each lookup was a query
# to the name servers and a thread). Only answers are kept, never failures;
# each send still checks the addresses and connects to the one checked, so a
# name that changes to a private address is refused once its answer expires.
# Registration and other checks of a URL always look up afresh.
LOOKUP_KEEP_SECONDS = 10.0
_LOOKUPS_KEPT = 1024
_answers: dict[tuple[str, int], tuple[float, list[str]]] = {}


def lookups_forget() -> None:
    """Forget the answers kept (:data:`LOOKUP_KEEP_SECONDS`)."""
    _answers.clear()


def _forget_lookups() -> None:
    """In a forked process: the lookups listed are its parent's, whose
    threads it does not have (and the lock may have been held by one)."""
    global _under_way_lock
    _under_way_lock = threading.Lock()
    _under_way.clear()
    _started_by.clear()
    _answers.clear()


os.register_at_fork(after_in_child=_forget_lookups)


def _resolve_into(
    key: tuple[str, int], future: concurrent.futures.Future[Any], caller: str | None
) -> None:
    answer: Any = None
    failure: BaseException | None = None
    try:
        answer = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
    except BaseException as exc:  # handed to every caller waiting on it
        failure = exc
    # Off the list before anyone waiting hears the outcome: a caller asking
    # again at once starts a new lookup, not this ended one.
    with _under_way_lock:
        if _under_way.get(key) is future:
            del _under_way[key]
        _count_off(caller)
    if failure is None:
        future.set_result(answer)
    else:
        future.set_exception(failure)


def _count_off(caller: str | None) -> None:
    """A lookup ``caller`` started has ended (under the lock)."""
    if caller is not None:
        _started_by[caller] -= 1
        if _started_by[caller] <= 0:
            del _started_by[caller]


# Names being looked up at once in one process, at most (each silent one
# holds its thread until the resolver gives up); past it a new name is not
# looked up (:class:`LookupsBusy`).
MAX_LOOKUPS_UNDER_WAY = 256
# Of those, the most one caller may have started (a department registering
# names whose servers never answer): one caller cannot take every thread and
# leave the other departments' new names unchecked.
MAX_LOOKUPS_PER_CALLER = 8


def _lookup(host: str, port: int, caller: str | None) -> concurrent.futures.Future[Any]:
    """The lookup of ``host`` under way in this process, or a new one
    started for ``caller`` (a lookup that cannot start is one that failed
    with :class:`LookupsBusy`, never one left pending)."""
    key = (host, port)
    with _under_way_lock:
        future = _under_way.get(key)
        if future is not None:
            return future
        future = concurrent.futures.Future()
        if len(_under_way) >= MAX_LOOKUPS_UNDER_WAY:
            future.set_exception(LookupsBusy("too many endpoint lookups under way"))
            return future
        if caller is not None and _started_by[caller] >= MAX_LOOKUPS_PER_CALLER:
            future.set_exception(LookupsBusy(f"too many endpoint lookups under way for {caller}"))
            return future
        _under_way[key] = future
        if caller is not None:
            _started_by[caller] += 1  # before the thread runs: its end counts it off
        try:
            threading.Thread(
                target=_resolve_into,
                args=(key, future, caller),
                name="endpoint-lookup",
                daemon=True,
            ).start()
        except RuntimeError as exc:  # no thread to be had
            del _under_way[key]
            _count_off(caller)
            future.set_exception(LookupsBusy(f"lookup not started: {exc}"))
        return future


def host_resolve(
    host: str,
    port: int,
    *,
    timeout: float | None = None,
    caller: str | None = None,
    keep: bool = False,
) -> list[str]:
    """Every address ``host`` resolves to within ``timeout`` seconds
    (:data:`LOOKUP_SECONDS` unless given), or :class:`UrlNotAllowed` (a name
    that does not answer in time is refused like one that does not resolve),
    or :class:`LookupsBusy` if it could not be looked up now. A new lookup
    counts against ``caller``'s share until it ends (see
    :data:`MAX_LOOKUPS_PER_CALLER`; None: no share). With ``keep``, an answer
    kept from a lookup less than :data:`LOOKUP_KEEP_SECONDS` ago serves, and a
    new one is kept."""
    key = (host, port)
    if keep:
        kept = _answers.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
    if timeout is None:
        timeout = LOOKUP_SECONDS
    try:
        infos = _lookup(host, port, caller).result(timeout=timeout)
    except LookupsBusy as exc:
        logger.warning("endpoint host %s not looked up: %s", host, exc)
        raise LookupsBusy(str(BUSY)) from exc
    except concurrent.futures.TimeoutError as exc:
        logger.warning("endpoint host %s did not resolve within %.1f s", host, timeout)
        raise _refused() from exc
    except (OSError, UnicodeError, ValueError) as exc:
        logger.warning("endpoint host %s does not resolve: %s", host, exc)
        raise _refused() from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        logger.warning("endpoint host %s resolves to nothing", host)
        raise _refused()
    if keep:
        if len(_answers) >= _LOOKUPS_KEPT:
            _answers.pop(next(iter(_answers)), None)  # the oldest kept
        _answers[key] = (time.monotonic() + LOOKUP_KEEP_SECONDS, addresses)
    return addresses


def url_resolve(
    url: str, *, timeout: float | None = None, caller: str | None = None, keep: bool = False
) -> tuple[str, str, int, list[str]]:
    """Check ``url`` and resolve it within ``timeout`` seconds: (scheme,
    host, port, addresses to use).

    Unless ``ROUTING_ALLOW_PRIVATE_ENDPOINTS``, every resolved address must
    be publicly routable (:func:`address_is_public`). A host that does not
    resolve and one that resolves somewhere forbidden get the same refusal.
    """
    scheme, host, port = url_shape_check(url)
    addresses = host_resolve(host, port, timeout=timeout, caller=caller, keep=keep)
    if not settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS:
        forbidden = [a for a in addresses if not address_is_public(a)]
        if forbidden:
            logger.warning("endpoint host %s resolves to non-public %s", host, forbidden)
            raise _refused()
    return scheme, host, port, addresses


# --- Signing -------------------------------------------------------------------------


def secret_generate() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_headers(
    *, msg_id: str, body: str, keys: list[str], now: dt.datetime
) -> dict[str, str]:
    """Standard Webhooks headers; one ``v1`` signature per live secret."""
    signatures = [Webhook(key).sign(msg_id, now, body) for key in keys]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


# --- Sending -------------------------------------------------------------------------


@dataclass
class SendResult:
    status_code: int | None
    # The excerpt of the answer kept on record (RESPONSE_KEEP_BYTES at most).
    body: str
    duration_ms: int
    error: str = ""
    retry_after: float | None = None
    # A success's whole answer as read (RESPONSE_READ_LIMIT bytes at most),
    # which the department's reference is read from: an answer longer than
    # the excerpt still names it. Empty for any other answer (never read).
    answer: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_clients: dict[tuple[str, str, int], httpcore.ConnectionPool] = {}
_clients_lock = threading.Lock()  # a batch's sender threads ask at once
_MAX_CLIENTS = 256


def _http(scheme: str, host: str, port: int) -> httpcore.ConnectionPool:
    """A pool of kept-alive connections per endpoint host. Requests go to the
    checked IP address, and a pool is keyed by address: shared, a keep-alive
    connection opened (and its certificate checked) for one department's
    host could carry another's events to the same address.

    httpcore's pool, not an httpx client around it: a webhook needs none of
    the client's request building, cookie jar or redirect handling, which
    cost more CPU per POST than the exchange itself."""
    key = (scheme, host, port)
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client
        if len(_clients) >= _MAX_CLIENTS:
            # The oldest is forgotten, not closed: another thread may be
            # sending through it; its connections close when it is collected.
            del _clients[next(iter(_clients))]
        client = _clients[key] = httpcore.ConnectionPool(
            # The trust store httpx would use (certifi's).
            ssl_context=httpx.create_ssl_context(),
            # As many kept-alive connections as a batch sends at once.
            max_connections=max(20, settings.ROUTING_SEND_CONCURRENCY),
            max_keepalive_connections=max(10, settings.ROUTING_SEND_CONCURRENCY),
            # Headers and body leave as separate writes: without TCP_NODELAY
            # the body waits for the peer's delayed ACK (40 ms on Linux).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            network_backend=DeadlineBackend(tcp_only=True),
        )
    return client


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> bytes:
    """The request target (path and query) of ``url``, percent-encoded as
    httpx encodes it (an endpoint's path may hold spaces or other scripts)."""
    return httpx.URL(url).raw_path


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """A response header's value (several joined by commas), or None."""
    values = [v.decode("latin-1") for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class _AnswerBody:
    """The first ``limit`` bytes of an answer's body, unpacked (gzip,
    deflate) no further than that: a few kilobytes on the wire may unpack to
    gigabytes, in the delivery worker's memory. We ask for no compression;
    a body packed in any other way is not read."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self.limit = limit
        self.data = bytearray()
        self._unpacker: Any = None
        self._readable = True
        if codings in (["gzip"], ["x-gzip"]):
            self._unpacker = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif codings == ["deflate"]:
            self._unpacker = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip framing
        elif codings:
            self._readable = False
        # Some servers send "deflate" without its zlib framing.
        self._bare_deflate_possible = codings == ["deflate"]

    @property
    def full(self) -> bool:
        return len(self.data) >= self.limit or not self._readable

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room <= 0 or not self._readable:
            return
        if self._unpacker is None:
            self.data += chunk[:room]
            return
        try:
            self.data += self._unpacker.decompress(chunk, room)
        except zlib.error:
            if self._bare_deflate_possible:
                self._bare_deflate_possible = False
                self._unpacker = zlib.decompressobj(-zlib.MAX_WBITS)
                self.feed(chunk)
                return
            self._readable = False  # what was unpacked before stays
        self._bare_deflate_possible = False


def _text(data: bytes | bytearray) -> str:
    """An answer's bytes as text a database column holds (no NUL)."""
    return bytes(data).decode("utf-8", errors="replace").replace("\x00", "\ufffd")


# What can go wrong on the wire, recorded as the try's error (httpcore's own
# exceptions have no common base).
_SEND_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
    httpcore.ProxyError,
)


def webhook_post(url: str, *, body: str, headers: dict[str, str], timeout: float) -> SendResult:
    """POST ``body`` to ``url`` within ``timeout`` seconds in all (connect,
    send, wait, read), to the address that passed the checks.

    Never raises: every outcome, however odd, comes back as a result the
    caller records as an attempt, so no delivery can be lost in between."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    deadline = started + timeout
    try:
        # The lookup is part of the try's time, not in front of it.
        scheme, host, port, addresses = url_resolve(
            url, timeout=min(LOOKUP_SECONDS, timeout), keep=True
        )
    except UrlNotAllowed as exc:
        return SendResult(None, "", elapsed(), error=str(exc))
    left = deadline - time.monotonic()
    if left <= 0:
        return SendResult(None, "", elapsed(), error=_("响应超时"))
    parts = urlsplit(url)
    address = addresses[0]
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header = f"{host_header}:{parts.port}"
    # The whole exchange ends at the deadline, as the lease counts.
    outer = deadline_set(deadline)
    try:
        content = body.encode()
        request = httpcore.Request(
            b"POST",
            # To the checked address (an IPv6 one bare, as sockets take it).
            httpcore.URL(
                scheme=scheme.encode(), host=address.encode(), port=port, target=_target(url)
            ),
            headers=[
                (b"Host", host_header.encode()),
                (b"User-Agent", USER_AGENT.encode()),
                (b"Accept", b"*/*"),
                (b"Accept-Encoding", b"identity"),
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(content)).encode()),
                *((key.encode(), value.encode()) for key, value in headers.items()),
            ],
            content=content,
            extensions={
                "timeout": {"connect": min(5.0, left), "read": left, "write": left, "pool": left},
                "sni_hostname": host,
            },
        )
        response = _http(scheme, host, port).handle_request(request)
        try:
            # Read as it came, at most RESPONSE_READ_LIMIT bytes of it,
            # unpacked no further than that.
            answer = _AnswerBody(
                _header(response.headers, b"content-encoding") or "", RESPONSE_READ_LIMIT
            )
            size = 0
            for chunk in response.iter_stream():
                answer.feed(chunk)
                size += len(chunk)
                if size >= RESPONSE_READ_LIMIT or answer.full:
                    break
                if time.monotonic() > deadline:
                    return SendResult(None, "", elapsed(), error=_("响应超时"))
        finally:
            response.close()
        if time.monotonic() > deadline:
            return SendResult(None, "", elapsed(), error=_("响应超时"))
        return SendResult(
            response.status,
            _text(answer.data[:RESPONSE_KEEP_BYTES]),
            elapsed(),
            retry_after=_retry_after(_header(response.headers, b"retry-after")),
            answer=_text(answer.data) if 200 <= response.status < 300 else "",
        )
    except httpcore.TimeoutException:
        return SendResult(None, "", elapsed(), error=_("响应超时"))
    except _SEND_ERRORS as exc:
        return SendResult(None, "", elapsed(), error=f"{type(exc).__name__}: {exc}"[:500])
    except Exception as exc:  # the contract above: a failure to record, not to raise
        logger.exception("delivery to %s failed unexpectedly", host)
        return SendResult(None, "", elapsed(), error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        deadline_set(outer)

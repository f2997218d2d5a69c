"""HTTP to department systems: URL rules (SSRF), signing, bounded sends.

Endpoint URLs are checked when registered and again, on the resolved
address, at every delivery: the request then goes to exactly the address
that was checked (Host header and TLS name kept), so a DNS answer that
changes between check and connect cannot steer it into the private network.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings
from django.utils.translation import gettext as _
from standardwebhooks import Webhook

logger = logging.getLogger(__name__)

USER_AGENT = "MyChangsha-Webhooks/1.0"
RESPONSE_KEEP_BYTES = 2048
RESPONSE_READ_LIMIT = 64 * 1024


class UrlNotAllowed(Exception):
    """The URL may not receive events; the message says why (user-facing)."""

    def __init__(self, message: str, *, shape: bool = False) -> None:
        super().__init__(message)
        self.shape = shape  # True: malformed; False: points somewhere forbidden


def check_url_shape(url: str) -> tuple[str, str, int]:
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
    try:
        host = parts.hostname.encode("idna").decode("ascii")  # 例子.中国 → xn--fsqu00a.xn--fiqs8s
    except UnicodeError as exc:
        raise UrlNotAllowed(_("地址格式不正确"), shape=True) from exc
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def normalize_url(url: str) -> str:
    """``url`` with its host in ASCII, as it is stored and sent."""
    scheme, host, _port = check_url_shape(url)
    parts = urlsplit(url)
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64,
    IPv4-compatible): routers may deliver to those."""
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _routable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
    return _routable(ip) and all(_routable(v4) for v4 in embedded)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, or :class:`UrlNotAllowed`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlNotAllowed(_("无法解析主机名 %(host)s") % {"host": host}) from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


def allowed_addresses(url: str) -> tuple[str, str, int, list[str]]:
    """Check ``url`` and resolve it: (scheme, host, port, addresses to use).

    Unless ``ROUTING_ALLOW_PRIVATE_ENDPOINTS``, every resolved address must
    be publicly routable: no loopback, private, link-local (cloud metadata),
    shared, reserved or multicast ranges.
    """
    scheme, host, port = check_url_shape(url)
    addresses = resolve(host, port)
    if not settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS:
        forbidden = [a for a in addresses if not is_public_address(a)]
        if forbidden:
            # The address stays in the log: telling the caller would let an
            # integrator map the internal network through registration.
            logger.warning("endpoint host %s resolves to non-public %s", host, forbidden)
            raise UrlNotAllowed(_("%(host)s 解析到非公网地址") % {"host": host})
    return scheme, host, port, addresses


# --- Signing -------------------------------------------------------------------------


def new_secret() -> str:
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
    body: str
    duration_ms: int
    error: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_clients: dict[tuple[str, str, int], httpx.Client] = {}
_MAX_CLIENTS = 256


def _http(scheme: str, host: str, port: int) -> httpx.Client:
    """A client per endpoint host. Requests go to the checked IP address, and
    a pool is keyed by address: shared, a keep-alive connection opened (and
    its certificate checked) for one department's host could carry another's
    events to the same address."""
    key = (scheme, host, port)
    client = _clients.get(key)
    if client is None:
        if len(_clients) >= _MAX_CLIENTS:
            for old in _clients.values():
                old.close()
            _clients.clear()
        client = _clients[key] = httpx.Client(
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            # Headers and body leave as separate writes: without TCP_NODELAY
            # the body waits for the peer's delayed ACK (40 ms on Linux).
            transport=httpx.HTTPTransport(
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            ),
        )
    return client


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


def post(url: str, *, body: str, headers: dict[str, str], timeout: float) -> SendResult:
    """POST ``body`` to ``url`` within ``timeout`` seconds in all (connect,
    send, wait, read), to the address that passed the checks.

    Never raises: every outcome, however odd, comes back as a result the
    caller records as an attempt, so no delivery can be lost in between."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        scheme, host, port, addresses = allowed_addresses(url)
    except UrlNotAllowed as exc:
        return SendResult(None, "", elapsed(), error=str(exc))
    parts = urlsplit(url)
    address = addresses[0]
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    target = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header = f"{host_header}:{parts.port}"
    deadline = started + timeout
    try:
        with _http(scheme, host, port).stream(
            "POST",
            target,
            content=body.encode(),
            headers={**headers, "Host": host_header, "Content-Type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            extensions={"sni_hostname": host},
        ) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= RESPONSE_READ_LIMIT:
                    break
                if time.monotonic() > deadline:
                    return SendResult(None, "", elapsed(), error=_("响应超时"))
            if time.monotonic() > deadline:
                return SendResult(None, "", elapsed(), error=_("响应超时"))
            text = (
                b"".join(chunks)[:RESPONSE_KEEP_BYTES]
                .decode("utf-8", errors="replace")
                .replace("\x00", "\ufffd")  # no database text column holds NUL
            )
            return SendResult(
                response.status_code,
                text,
                elapsed(),
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
    except httpx.TimeoutException:
        return SendResult(None, "", elapsed(), error=_("响应超时"))
    except httpx.HTTPError as exc:
        return SendResult(None, "", elapsed(), error=f"{type(exc).__name__}: {exc}"[:500])
    except Exception as exc:  # the contract above: a failure to record, not to raise
        logger.exception("delivery to %s failed unexpectedly", host)
        return SendResult(None, "", elapsed(), error=f"{type(exc).__name__}: {exc}"[:500])

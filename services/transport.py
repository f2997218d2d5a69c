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

USER_AGENT = "MyChangsha-Webhooks/1.0"
RESPONSE_KEEP_BYTES = 2048
RESPONSE_READ_LIMIT = 64 * 1024


class UrlNotAllowed(Exception):
    """The URL may not receive events; the message says why (user-facing)."""

    def __init__(self, message: str, *, shape: bool = False) -> None:
        super().__init__(message)
        self.shape = shape  # True: malformed; False: points somewhere forbidden


def check_url_shape(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL, or :class:`UrlNotAllowed`."""
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
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


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
            raise UrlNotAllowed(
                _("%(host)s 解析到非公网地址 %(address)s") % {"host": host, "address": forbidden[0]}
            )
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


_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client
    if _client is None:
        _client = httpx.Client(
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            # Headers and body leave as separate writes: without TCP_NODELAY
            # the body waits for the peer's delayed ACK (40 ms on Linux).
            transport=httpx.HTTPTransport(
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            ),
        )
    return _client


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def post(url: str, *, body: str, headers: dict[str, str], timeout: float) -> SendResult:
    """POST ``body`` to ``url`` within ``timeout`` seconds in all (connect,
    send, wait, read), to the address that passed the checks."""
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
    host_header = parts.netloc.rsplit("@", 1)[-1]
    deadline = started + timeout
    try:
        with _http().stream(
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
            text = b"".join(chunks)[:RESPONSE_KEEP_BYTES].decode("utf-8", errors="replace")
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

"""What the WSGI fast paths in front of Django share (qr's verify and
issuance, payments' callbacks): the headers Django's middleware and DRF put
on an API answer of a POST-only view, so a fast answer carries the same
ones, and which requests are plain enough to be answered without them."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from config.middleware import charset_not_text

# After Content-Type, in the order the full cycle writes them (the parity
# tests of each fast path compare them with the view's).
API_HEADERS = [
    ("Allow", "POST, OPTIONS"),
    ("X-Frame-Options", "DENY"),
    ("Vary", "Accept-Language"),
    ("Content-Language", "zh-hans"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]


# No Accept-Language, or one naming Chinese alone (the views answer those in
# zh-hans, the language of the headers above).
_CHINESE = re.compile(r"zh(-[A-Za-z]{2,8})*|zh-[A-Za-z]+;q=1(\.0*)?|\*?", re.IGNORECASE)


def plain_request(environ: dict[str, Any]) -> bool:
    """Whether the full cycle would treat this request as the fast paths
    assume: no query string or cookie, Chinese or no language asked for, no
    charset that is not a text encoding (refused, 415), an allowed host, and
    no HTTPS switch of SecurityMiddleware on (a redirect or an HSTS header
    the fast answer would lack)."""
    if (
        environ.get("QUERY_STRING")
        or environ.get("HTTP_COOKIE")
        or not _CHINESE.fullmatch(environ.get("HTTP_ACCEPT_LANGUAGE", "zh"))
        or charset_not_text(str(environ.get("CONTENT_TYPE", ""))) is not None
        or settings.SECURE_SSL_REDIRECT
        or settings.SECURE_HSTS_SECONDS
    ):
        return False
    # As HttpRequest.get_host: a Host header sent empty is refused (400),
    # not replaced by the server's name, which only stands in for none.
    if "HTTP_HOST" in environ:
        raw_host = str(environ["HTTP_HOST"])
    else:
        raw_host = str(environ.get("SERVER_NAME", ""))
    host, _port = split_domain_port(raw_host)
    return bool(host) and validate_host(host, settings.ALLOWED_HOSTS)


def bodiless(environ: dict[str, Any]) -> bool:
    """Whether a GET comes without a body, as the fast GET answers assume:
    Django's request limits refuse a chunked body without a length (411)
    and a length that is not a number, negative (400) or over the bound
    (413), on a GET as on any API request."""
    return not environ.get("HTTP_TRANSFER_ENCODING") and environ.get("CONTENT_LENGTH") in (
        None,
        "",
        "0",
    )

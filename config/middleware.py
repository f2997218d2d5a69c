"""Middleware for the API surface and the pages."""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse
from django.utils.http import parse_header_parameters
from django.utils.translation import gettext as _

from config.errors import (
    INVALID,
    LENGTH_REQUIRED,
    MALFORMED_REQUEST,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    problem_http_response,
)
from config.home import PAGE_POLICY


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path:
        return True
    return any(
        "\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()
    )


# Bytes no text encoding is bound to take, decoded as Django's form parsers
# decode (errors="replace"): a codec that raises on them cannot read a body.
_TRIAL = b"\xff\x00a-\xc3\xa9\x80"


@functools.lru_cache(maxsize=64)
def _codec_reads_text(name: str) -> bool:
    """Whether the codec ``name`` (as :func:`codecs.lookup` names it) turns
    any bytes into text: not bz2, zlib, base64, hex, rot13, uu (not text
    encodings), nor undefined, idna, punycode (text encodings that raise on
    bytes they do not expect, even when asked to replace them)."""
    if not getattr(codecs.lookup(name), "_is_text_encoding", True):
        return False
    try:
        codecs.decode(_TRIAL, name, "replace")
    except (UnicodeError, ValueError, TypeError):
        return False
    return True


def _codec_not_text(request: HttpRequest) -> str | None:
    """The body's charset, if it names a codec Python knows that cannot
    read a body as text (:func:`_codec_reads_text`), else None.

    Django takes any codec :func:`codecs.lookup` finds as the request's
    encoding, and the JSON parser reads the body through it: a few hundred
    bytes named ``bz2`` became gigabytes, past every bound on the body's
    size, and others failed inside the parsers (500). A charset Python does
    not know is ignored, as Django ignores it (the body is read as UTF-8)."""
    charset = request.content_params.get("charset") if request.content_params else None
    return _not_text(charset)


@functools.lru_cache(maxsize=256)
def charset_not_text(content_type: str) -> str | None:
    """:func:`_codec_not_text` for a ``Content-Type`` header as the WSGI
    environ holds it (the fast paths in front of Django: a request Django
    would refuse is handed to it). Kept per header: parsing one costs the
    fast paths about 10 µs, and their callers send the same few."""
    if "charset" not in content_type.lower():
        return None
    _media_type, params = parse_header_parameters(content_type)
    return _not_text(params.get("charset"))


def _not_text(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        return None
    return None if _codec_reads_text(name) else charset


_django_content_type_params = HttpRequest._set_content_type_params  # type: ignore[attr-defined]  # private, not in the stubs


def _content_type_params(request: HttpRequest, meta: dict[str, Any]) -> None:
    """Django's own, but a charset that is a codec and not a text encoding
    (:func:`_codec_not_text`) is not made the request's encoding, as one
    Python does not know is not: the request is refused for it
    (:class:`RequestCharsetMiddleware`).

    Django decodes the query string with the encoding too, and the
    encoding's setter decodes it at once: a request naming ``zlib`` or
    ``idna`` with a query string failed as Django built it, before any
    middleware ran (500, on every route).
    Nothing can read the query string or the body through such a codec,
    whatever reads it first."""
    content_type = meta.get("CONTENT_TYPE", "")
    if charset_not_text(content_type) is None:
        _django_content_type_params(request, meta)
    else:
        request.content_type, request.content_params = parse_header_parameters(content_type)


# Installed with the middleware that refuses such a charset: every request
# handler loads it (this module) before it builds its first request.
HttpRequest._set_content_type_params = _content_type_params  # type: ignore[attr-defined]  # as above


class RequestCharsetMiddleware:
    """Refuses a body whose charset is a codec but not a text encoding
    (:func:`_codec_not_text`), before anything reads it: 415
    ``unsupported_media_type`` for the API, 400 on the site's error page for
    the pages. Listed after :class:`SameOriginPagesMiddleware` (the error
    page carries the pages' policy) and :class:`ApiRequestLimitsMiddleware`
    (the problem is kept out of caches), which read no body (the query
    string is read as UTF-8: :func:`_content_type_params`); every later
    layer may read it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        charset = _codec_not_text(request)
        if charset is None:
            return self.get_response(request)
        if request.path.startswith("/api/"):
            return problem_http_response(
                UNSUPPORTED_MEDIA_TYPE,
                _("不支持的字符集 %(charset)s：请求体须为文本编码（如 UTF-8）")
                % {"charset": charset[:40]},
            )
        raise BadRequest(f"charset {charset[:40]!r} is not a text encoding")


class ApiRequestLimitsMiddleware:
    """Refuses oversized API bodies before anything reads them and NUL
    characters in paths and query strings, and keeps API answers out of
    shared caches unless a view says otherwise.

    Django and DRF read at most ``CONTENT_LENGTH`` bytes (a body without one
    is read as empty), so checking the header bounds what a request can make
    the process buffer; a chunked body without one is refused with 411
    rather than answered as if it were empty. The bound is
    ``API_MAX_BODY_BYTES``, or the setting a view names in its
    ``max_body_setting`` (a batch upload's is larger); it is checked once
    the view is known, before any middleware or view reads the body.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/"):
            return self.get_response(request)
        response = self._refused(request)
        if response is None:
            response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response

    def _refused(self, request: HttpRequest) -> HttpResponse | None:
        """The problem for a request refused before its view is known, else
        None (and the body's length noted for :meth:`process_view`)."""
        if _has_nul(request):
            return problem_http_response(MALFORMED_REQUEST, _("请求中含有不允许的 NUL 字符"))
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not request.META.get("CONTENT_LENGTH"):
            return problem_http_response(LENGTH_REQUIRED)
        raw_length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0:
            return problem_http_response(INVALID, _("Content-Length 无效"))
        request._api_body_length = length  # type: ignore[attr-defined]  # for process_view
        return None

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        length = getattr(request, "_api_body_length", None)
        if length is None:  # not an API request
            return None
        name = getattr(getattr(view_func, "cls", None), "max_body_setting", "API_MAX_BODY_BYTES")
        limit = getattr(settings, name)
        if length > limit:
            return problem_http_response(
                PAYLOAD_TOO_LARGE,
                _("请求体不能超过 %(limit)s 字节") % {"limit": limit},
            )
        return None


class PagesRefuseNulMiddleware:
    """Refuses a NUL character in the path or query string of a page (the
    admin, its key picker, the receipts) as the admin refuses a lookup it
    does not allow: 400, on the site's error page. No database column of
    text can hold one (PostgreSQL refuses it outright), so a list filtered
    or searched by one was a server error. The API refuses them too, as
    problem details (:class:`ApiRequestLimitsMiddleware`).

    Listed after :class:`SameOriginPagesMiddleware`, so that the error page
    carries the same policy as every page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/") and _has_nul(request):
            raise BadRequest("a NUL character in the path or query string")
        return self.get_response(request)


class SameOriginPagesMiddleware:
    """Every HTML page this server answers (the admin, the error code pages,
    Django's own error pages) tells the browser to load nothing from another
    host and to run no inline script: :data:`config.home.PAGE_POLICY`,
    unless the view set a policy of its own (the docs, which need inline
    scripts; the receipts, a stricter one). With ``DEBUG`` on, Django's
    error pages for developers (their inline script and styles) go without."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html") and not (
            settings.DEBUG and response.status_code >= 400
        ):
            response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        return response

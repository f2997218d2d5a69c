"""Shared DRF plumbing: the one exception handler that renders every error
(the apps' :class:`config.errors.DomainError`, DRF's and Django's) as problem
details, the client's address and the throttles keyed by it, strict fields
and parsing, pagination with :func:`paginated`, and the OpenAPI helpers."""

from __future__ import annotations

import codecs
import copy
import datetime as dt
import functools
import ipaddress
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from django import db
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, Value
from django.db.models.lookups import GreaterThan, LessThan, Lookup
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import BasePagination, CursorPagination, PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import (
    BaseThrottle,
    SimpleRateThrottle,
    UserRateThrottle,
)
from rest_framework.utils import json as drf_json

from config.errors import (
    ACCOUNT_INACTIVE,
    AUTHENTICATION_FAILED,
    ERROR_CODES,
    INVALID,
    MALFORMED_REQUEST,
    METHOD_NOT_ALLOWED,
    NOT_ACCEPTABLE,
    NOT_AUTHENTICATED,
    NOT_FOUND,
    PAGINATION_INVALID,
    PAYLOAD_TOO_LARGE,
    PERMISSION_DENIED,
    PROBLEM_CONTENT_TYPE,
    PROBLEM_EXTENSIONS,
    SERVER_ERROR,
    SERVICE_UNAVAILABLE,
    THROTTLED,
    TOKEN_INVALID,
    UNSUPPORTED_MEDIA_TYPE,
    DomainError,
    ErrorCode,
    problem_body,
    problem_http_response,
)
from config.queries import Row
from config.redis_client import REDIS_ERRORS, LuaScript, redis_enabled, redis_key

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

logger = logging.getLogger(__name__)

_BY_STATUS = {
    400: INVALID,
    401: AUTHENTICATION_FAILED,
    403: PERMISSION_DENIED,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    406: NOT_ACCEPTABLE,
    413: PAYLOAD_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
    429: THROTTLED,
    503: SERVICE_UNAVAILABLE,
}

# simplejwt's codes and ours. Its refusals are told in our words (the
# code's title, in the request's language): its own details are English
# only, as its catalogue is not one this project loads.
_AUTH_CODES = {
    "token_not_valid": TOKEN_INVALID,
    "user_inactive": ACCOUNT_INACTIVE,
    "user_not_found": ACCOUNT_INACTIVE,
    "no_active_account": ACCOUNT_INACTIVE,
    "password_changed": TOKEN_INVALID,
    "bad_authorization_header": AUTHENTICATION_FAILED,
}


def problem_response(
    error: ErrorCode,
    detail: StrOrPromise | None = None,
    *,
    errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """A DRF response carrying problem details."""
    return Response(
        problem_body(error, detail, errors=errors, extra=extra),
        status=error.status,
        headers=headers,
        content_type=PROBLEM_CONTENT_TYPE,
    )


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as ``{"field.sub.0": [messages]}``."""
    out: dict[str, list[str]] = defaultdict(list)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, dict | list):
                    walk(value, f"{path}.{index}" if path else str(index))
                else:
                    out[path or "non_field_errors"].append(str(value))
        else:
            out[path or "non_field_errors"].append(str(node))

    walk(detail, prefix)
    return dict(out)


def _leaf_codes(codes: Any) -> Iterable[str]:
    if isinstance(codes, dict):
        for value in codes.values():
            yield from _leaf_codes(value)
    elif isinstance(codes, list):
        for value in codes:
            yield from _leaf_codes(value)
    elif isinstance(codes, str):
        yield codes


def _translate(exc: exceptions.APIException) -> tuple[ErrorCode, Any, dict[str, list[str]]]:
    """(error code, detail, field errors) for one of DRF's exceptions."""
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        codes = set(_leaf_codes(exc.get_codes()))
        error = INVALID
        if len(codes) == 1:
            known = ERROR_CODES.get(codes.pop())
            if known is not None and known.status == 400:
                error = known
        field, messages = next(iter(errors.items()), ("", [""]))
        first = f"{field}: {messages[0]}" if field and field != "non_field_errors" else messages[0]
        return error, first or None, errors
    if isinstance(exc, exceptions.ParseError):
        return MALFORMED_REQUEST, exc.detail, {}
    if isinstance(exc, exceptions.NotAuthenticated):
        return NOT_AUTHENTICATED, exc.detail, {}
    if isinstance(exc, exceptions.Throttled):
        wait = math.ceil(exc.wait) if exc.wait is not None else None  # type: ignore[attr-defined]  # set by Throttled.__init__, missing from the stubs
        message = _("请求过于频繁，请 %(seconds)s 秒后再试") % {"seconds": wait} if wait else None
        return THROTTLED, message, {}
    detail: Any = exc.detail
    if isinstance(detail, dict):  # simplejwt: {"detail", "code", "messages"}
        code = str(detail.get("code", ""))
        detail = detail.get("detail", "")
    else:
        code = next(iter(_leaf_codes(exc.get_codes())), "")
    if isinstance(exc, exceptions.AuthenticationFailed):
        if code in _AUTH_CODES:
            return _AUTH_CODES[code], None, {}
        return _registered(code, 401) or AUTHENTICATION_FAILED, detail, {}
    error = _registered(code, exc.status_code) or _BY_STATUS.get(exc.status_code, INVALID)
    return error, detail, {}


def _registered(code: str, status: int) -> ErrorCode | None:
    error = ERROR_CODES.get(code)
    return error if error is not None and error.status == status else None


# A dependency that is down or busy, not a fault of ours: the request may be
# tried again as it was (service_unavailable, with a Retry-After).
OUTAGES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # BusyLoadingError too
    redis.TimeoutError,
    redis.ReadOnlyError,  # a replica that was the primary, mid-failover
    db.OperationalError,  # unreachable, "database is locked", statement timeout
    db.InterfaceError,  # a connection closed under us
)
OUTAGE_RETRY_AFTER_SECONDS = 5


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: every error leaves as problem details."""
    # Imported here: rest_framework.views reads DRF's settings when it loads,
    # and they name this module's parser and pagination classes.
    from rest_framework.views import set_rollback

    # A problem is JSON whatever renders the view's answers (the schema's
    # YAML, the docs' HTML): DRF renders it with the request's renderer.
    request = context.get("request")
    if request is not None:
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = PROBLEM_CONTENT_TYPE

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, DomainError):
        set_rollback()
        return problem_response(
            exc.error, exc.detail, errors=exc.errors, headers=exc.headers, extra=exc.extra
        )

    if isinstance(exc, exceptions.APIException):
        headers: dict[str, str] = {}
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        wait = getattr(exc, "wait", None)
        if wait is not None:
            headers["Retry-After"] = str(math.ceil(wait))
        error, detail, errors = _translate(exc)
        set_rollback()
        return problem_response(error, detail, errors=errors, headers=headers)

    view = context.get("view")
    logger.exception("unhandled error in %s", type(view).__name__ if view else "view")
    set_rollback()
    if isinstance(exc, OUTAGES):
        response = problem_response(
            SERVICE_UNAVAILABLE, headers={"Retry-After": str(OUTAGE_RETRY_AFTER_SECONDS)}
        )
    else:
        response = problem_response(SERVER_ERROR)
    # Logged above with its traceback: Django's request logger would log
    # the 500 a second time ("Internal Server Error: ...") without it.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


# --- The client's address -----------------------------------------------------------


def _ip_or_none(value: str | None) -> str | None:
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None  # "fe80::1%<anything>": no client has a zone on our side
    return str(address)


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address, for throttles, OTP limits and the audit trail.

    ``NUM_PROXIES=0`` (the default): the socket's address, and
    ``X-Forwarded-For`` is ignored, whatever it says. ``N``: the N-th address
    from the right of that header, the one our outermost proxy saw (the
    leftmost when the header is shorter). Anything that is not an IP address
    counts as absent, never as an address.
    """
    remote = _ip_or_none(request.META.get("REMOTE_ADDR"))
    proxies = settings.NUM_PROXIES
    if proxies <= 0:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if not hops:
        return remote
    return _ip_or_none(hops[-min(proxies, len(hops))]) or remote


def client_block(address: str | None) -> str | None:
    """What per-address throttles count a client by: an IPv4 address as it
    is (an IPv4-mapped IPv6 one too); an IPv6 address by its /64, the
    network one subscriber is given, in which a host may take any address
    at will (counted one by one, they would lift every per-address rate)."""
    if address is None:
        return None
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
    return address


def lockout_address(request: HttpRequest) -> str | None:
    """What admin log-in lock-outs (django-axes, ``AXES_CLIENT_IP_CALLABLE``)
    count a client by: its :func:`client_block`, as an address, since axes
    keeps it in an IP address field (an IPv6 /64 by its first address,
    ``2001:db8:1:2::``, which is also what ``manage.py axes_reset_ip`` takes).
    The audit trail keeps :func:`client_ip`, the full address."""
    block = client_block(client_ip(request))
    return None if block is None else block.split("/", 1)[0]


class _ClientAddress:
    """DRF throttles keyed by :func:`client_block` of :func:`client_ip` for
    anonymous callers."""

    def get_ident(self, request: HttpRequest) -> str:
        return client_block(client_ip(request)) or "unknown"


class ClientUserRateThrottle(_ClientAddress, UserRateThrottle):
    """Per user, or per client address before login."""


class ClientSimpleRateThrottle(_ClientAddress, SimpleRateThrottle):
    """Base of the project's own throttles."""


class OneCheckAtATime(SimpleRateThrottle):
    """A DRF rate whose check a caller's simultaneous requests make one
    after the other (mixed in before the throttle class).

    DRF reads the caller's request history, checks it and writes it back:
    requests arriving together all read the same history, and all pass.
    Where each request costs (the identity bureau bills every real-name
    check) the check holds a short lock per caller; a request that cannot
    take it within :attr:`lock_wait_seconds` is throttled."""

    lock_wait_seconds = 2.0
    _busy = False

    def allow_request(self, request: Any, view: Any) -> bool:
        key = self.get_cache_key(request, view) if self.rate is not None else None
        if key is None:
            return super().allow_request(request, view)
        lock = f"{key}:checking"
        deadline = time.monotonic() + self.lock_wait_seconds
        # A lock left by a killed process goes after a few seconds.
        while not self.cache.add(lock, 1, timeout=5):
            if time.monotonic() >= deadline:
                self._busy = True
                return False
            time.sleep(0.01)
        try:
            return super().allow_request(request, view)
        finally:
            self.cache.delete(lock)

    def wait(self) -> float | None:
        return 1.0 if self._busy else super().wait()


# KEYS: a window's counter; ARGV: its lifetime. The count with this request
# (the window's first request gives the counter its lifetime: atomic, and
# without EXPIRE's NX option, which Redis has only since 7.0).
_COUNT_IN_WINDOW = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return count
"""


_count_in_window = LuaScript(_COUNT_IN_WINDOW)


@dataclass(frozen=True, slots=True)
class ThrottleWindow:
    """One caller's current window of a :class:`FixedWindowThrottle`."""

    name: str  # the counter's cache key
    allowed: int
    period: int
    scope: str

    def admits(self, count: int) -> bool:
        return count <= self.allowed

    def admit(self) -> bool:
        """Count this request on its own; whether it is within the rate.
        With Redis it is one round trip (Django's cache would ask whether
        the key exists first); with Redis away, the throttle lets callers
        through rather than refusing them all, and logs it."""
        if redis_enabled():
            try:
                count = _count_in_window(keys=[redis_key(self.name)], args=[self.period + 1])
                return self.admits(int(count))
            except REDIS_ERRORS as exc:
                logger.warning("%s throttle unavailable, not counting: %s", self.scope, exc)
                return True
        try:
            count = cache.incr(self.name)
        except ValueError:  # the window's first request
            count = 1 if cache.add(self.name, 1, timeout=self.period + 1) else cache.incr(self.name)
        return self.admits(count)


class FixedWindowThrottle(_ClientAddress, BaseThrottle):
    """Requests per client address (or per :meth:`get_ident`) in fixed
    windows: one counter increment a request, whatever the rate. For hot
    endpoints (the payment channels' callbacks, star-code issuance), where
    DRF's throttles, which read and rewrite every request time of the
    window, cost two round trips and grow with the rate. Subclasses set
    ``scope`` and :meth:`get_rate` (DRF notation)."""

    scope = ""
    # The methods it counts (None: every one); the others pass uncounted.
    methods: frozenset[str] | None = None
    clock = staticmethod(time.time)

    def get_rate(self) -> str | None:
        raise NotImplementedError

    def window(self, request: Any) -> ThrottleWindow | None:
        """The caller's current window (None: no limit is set)."""
        return self.window_of(self.get_ident(request))

    def window_of(self, ident: str) -> ThrottleWindow | None:
        """The current window of the caller known as ``ident`` (what
        :meth:`get_ident` gives for its requests)."""
        allowed, period = SimpleRateThrottle.parse_rate(self, self.get_rate())  # type: ignore[arg-type]  # parse_rate reads nothing of self
        if allowed is None or period is None:
            return None
        now = self.clock()
        number = int(now // period)
        self._wait = (number + 1) * period - now
        return ThrottleWindow(
            name=f"throttle-fw:{self.scope}:{ident}:{number}",
            allowed=allowed,
            period=period,
            scope=self.scope,
        )

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.methods is not None and request.method not in self.methods:
            return True
        window = self.window(request)
        return window is None or window.admit()

    def wait(self) -> float:
        return getattr(self, "_wait", None) or 0.0


class ClientScopedRateThrottle(FixedWindowThrottle):
    """The rate of the view's ``throttle_scope`` (DRF's
    ``DEFAULT_THROTTLE_RATES``) per client address, in fixed windows: one
    atomic count a request, so requests sent side by side cannot all pass
    on one reading of the history, as they did DRF's ``ScopedRateThrottle``
    (which reads it and writes it back)."""

    THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES

    def allow_request(self, request: Any, view: Any) -> bool:
        self.scope = getattr(view, "throttle_scope", "")
        return super().allow_request(request, view)

    def get_rate(self) -> str | None:
        rate = self.THROTTLE_RATES.get(self.scope)
        return None if rate is None else str(rate)


# --- Fields ----------------------------------------------------------------------------


class ModelSerializer(serializers.ModelSerializer):
    """DRF's ``ModelSerializer``, with the fields it works out from the
    model (a walk over the model's fields and their options, redone for
    every serializer made: about half of rendering an application) worked
    out once per class and language and copied for each instance, as DRF
    copies the fields a serializer declares. Per language: DRF decides in
    the active language whether a field needs a label of its own. A
    subclass whose fields depend on the instance or the context must not
    use it."""

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        kept: dict[str | None, dict[str, serializers.Field]] | None = cls.__dict__.get(
            "_fields_from_model"
        )
        if kept is None:
            kept = {}
            cls._fields_from_model = kept  # type: ignore[attr-defined]  # a per-class cache
        language = translation.get_language()
        built = kept.get(language)
        if built is None:
            built = kept[language] = super().get_fields()
        return copy.deepcopy(built)


class AnyAccept(BaseContentNegotiation):
    """For views whose answer has one form whatever ``Accept`` says (images,
    the JWKS, a receipt's SVG, the payment channels' callbacks): the first
    renderer, the first parser; errors still leave as problem details."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else (DRF's CharField would take ``123`` as
    ``"123"``): for fields whose value is scanned or signed text."""

    default_error_messages = {"not_a_string": _("必须是字符串")}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


# --- Parsing ---------------------------------------------------------------------


# No form, event or list this API takes nests deeper; everything that walks
# a body later (serializers, JSON Schema, encryption) stays far from
# Python's recursion limit.
MAX_JSON_DEPTH = 64


def _text_problem(text: str) -> StrOrPromise | None:
    if "\x00" in text:
        return _("请求中含有不允许的 NUL 字符")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no UTF-8 text holds one
        return _("请求中含有无效的 Unicode 字符")
    return None


def json_problem(value: Any) -> StrOrPromise | None:
    """Why a parsed body is refused (NUL characters, lone surrogates,
    nesting), or None. Iterative, so no body can exhaust the stack here."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            problem = _text_problem(node)
            if problem is not None:
                return problem
        elif isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                return _("JSON 嵌套层数过多")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str):
                    problem = _text_problem(key)
                    if problem is not None:
                        return problem
                stack.append((child, depth + 1))
    return None


class NameGivenTwice(ValueError):
    """A JSON object names a member twice (see :func:`json_object_once`)."""


def json_object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for every JSON body we read from a client: an
    object naming a member twice raises :class:`NameGivenTwice` (which of
    its values counts would be up to each reader)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for name, _value in pairs:
            if name in seen:
                raise NameGivenTwice(name)
            seen.add(name)
    return data


class StrictJSONParser(JSONParser):
    """JSON bodies, refusing NUL characters anywhere (no database text column
    can hold them, and no legitimate client sends them), nesting deeper than
    :data:`MAX_JSON_DEPTH`, and a name given twice in one object (which of
    its values counts is up to each reader: the last here, the first in a
    department's log or a proxy)."""

    def parse(self, stream, media_type=None, parser_context=None):
        # As JSONParser.parse (its encoding, its strict constants), with
        # each object's names checked.
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = drf_json.loads(
                codecs.getreader(encoding)(stream).read(),
                parse_constant=drf_json.strict_constant if self.strict else None,
                object_pairs_hook=json_object_once,
            )
        except NameGivenTwice as exc:
            raise exceptions.ParseError(
                str(_("JSON 对象中的名称重复：%(name)s") % {"name": str(exc)[:64]})
            ) from exc
        except RecursionError as exc:  # "[[[[…" nested past Python's limit
            raise exceptions.ParseError(str(_("JSON 嵌套层数过多"))) from exc
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from exc
        problem = json_problem(data)
        if problem is not None:
            raise exceptions.ParseError(str(problem))
        return data


# --- Django-level error views (requests that never reach DRF) -----------------


def _wants_problem(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Catch-all for unknown ``/api/`` routes, any method, in DEBUG as in
    production. CSRF-exempt: there is no form here to protect, and a POST
    must learn that the route does not exist, not that a cookie is missing."""
    return problem_http_response(NOT_FOUND, _("没有这个接口：%(path)s") % {"path": request.path})


def api_read_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A plain Django view under ``/api/`` that answers GET (and HEAD) only;
    any other method is a 405 problem, never a CSRF page."""

    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return problem_http_response(METHOD_NOT_ALLOWED, headers={"Allow": "GET, HEAD"})
        return view(request, *args, **kwargs)

    return wrapper


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: a problem under ``/api/``, Django's page elsewhere."""
    if _wants_problem(request):
        return problem_http_response(PERMISSION_DENIED)
    from django.views.csrf import csrf_failure as django_csrf_failure

    return django_csrf_failure(request, reason)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_problem(request):
        return problem_http_response(INVALID)
    from django.views.defaults import bad_request

    return bad_request(request, exception or Exception())


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_problem(request):
        return problem_http_response(PERMISSION_DENIED)
    from django.views.defaults import permission_denied

    return permission_denied(request, exception or Exception())


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_problem(request):
        return problem_http_response(NOT_FOUND)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if _wants_problem(request):
        return problem_http_response(SERVER_ERROR)
    from django.views.defaults import server_error

    return server_error(request)


# --- Pagination -----------------------------------------------------------------


def _paginated_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["results", "next", "previous"],
        "properties": {
            "results": schema,
            "next": {"type": "string", "nullable": True, "format": "uri"},
            "previous": {"type": "string", "nullable": True, "format": "uri"},
        },
    }


class _ListShape(BasePagination):
    """Every list is ``{"results", "next", "previous"}``; a page or cursor
    that does not exist is a 400 ``pagination_invalid``, not a 404."""

    page_size: int | None = 20
    page_size_query_param: str | None = "page_size"
    max_page_size: int | None = 100

    if TYPE_CHECKING:
        # Given by the paginator this is mixed into (declared here for the
        # type checker only: a method here would come first in the MRO).
        def get_next_link(self) -> str | None: ...
        def get_previous_link(self) -> str | None: ...

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound as exc:
            raise DomainError(PAGINATION_INVALID, str(exc.detail)) from exc

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "results": data,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return _paginated_schema(schema)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == "page":  # pages count from 1
                parameter["schema"]["minimum"] = 1
        return parameters


class PagePagination(_ListShape, PageNumberPagination):
    """Page numbers, for the catalog."""


class _KeysetCursor(CursorPagination):
    """DRF's cursor pagination with a position made of every ordering field.

    DRF's cursor holds the first ordering field's value and, when rows share
    it, how many of them the client has already seen. Counting them again
    lands on the same rows only if they come in the same order every time,
    which the database does not promise for equal values; and DRF's own
    links pass over some when a client turns back (from a last page of rows
    of one time, ``previous`` steps back a full page however few it held).
    Rows share a time as a matter of course here: one event's deliveries to
    each subscribed endpoint have one ``created_at``, an offline terminal's
    scans of one second one ``scanned_at``, one batch's messages to a
    citizen one ``created_at``. So the position holds the values of every
    ordering field, the last of them unique (an ordering that does not end
    with one is refused), and a page starts strictly after it: no two rows
    share a position, no offset is ever counted."""

    def paginate_queryset(self, queryset, request, view=None):
        # DRF's, but for the filter on the position.
        self.request = request
        self.page_size = self.get_page_size(request)
        if not self.page_size:
            return None

        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, queryset, view)
        meta = queryset.model._meta
        self._position_fields = [meta.get_field(name.lstrip("-")) for name in self.ordering]
        if not self._position_fields[-1].unique:
            raise ImproperlyConfigured(
                f"{type(self).__qualname__}.ordering {self.ordering!r} does not end with a "
                "unique field: rows sharing its values would be listed twice or not at all"
            )
        if len({name.startswith("-") for name in self.ordering}) > 1:
            raise ImproperlyConfigured(
                f"{type(self).__qualname__}.ordering {self.ordering!r} mixes directions: a "
                "position is compared as one row value"
            )

        self.cursor = self.decode_cursor(request)
        current_position: str | None
        if self.cursor is None:
            (offset, reverse, current_position) = (0, False, None)
        else:
            (offset, reverse, current_position) = self.cursor  # type: ignore[assignment]  # the stubs say the position is an int; it is the query string's text

        if reverse:
            queryset = queryset.order_by(
                *(name[1:] if name.startswith("-") else f"-{name}" for name in self.ordering)
            )
        else:
            queryset = queryset.order_by(*self.ordering)
        if current_position is not None:
            queryset = queryset.filter(self._past(self._position_values, reverse=reverse))

        results = list(queryset[offset : offset + self.page_size + 1])
        self.page = list(results[: self.page_size])
        if len(results) > len(self.page):
            has_following_position = True
            following_position = self._get_position_from_instance(results[-1], self.ordering)
        else:
            has_following_position = False
            following_position = None

        if reverse:
            self.page = list(reversed(self.page))
            self.has_next = (current_position is not None) or (offset > 0)
            self.has_previous = has_following_position
            if self.has_next:
                self.next_position = current_position
            if self.has_previous:
                self.previous_position = following_position
        else:
            self.has_next = has_following_position
            self.has_previous = (current_position is not None) or (offset > 0)
            if self.has_next:
                self.next_position = following_position
            if self.has_previous:
                self.previous_position = current_position

        if (self.has_previous or self.has_next) and self.template is not None:
            self.display_page_controls = True
        return self.page

    def _past(self, values: list[Any], *, reverse: bool) -> Lookup:
        """The rows after ``values`` in the walk's direction, compared as one
        row value, ``(created_at, id) < (t, i)``: PostgreSQL estimates it
        as the range it is and finds it along an index on the fields in that
        order or on the first of them (an OR of the fields' own comparisons
        made it read every row newer than the position and sort them)."""
        names = [name.lstrip("-") for name in self.ordering[: len(values)]]
        typed = [
            Value(value, output_field=field)
            for value, field in zip(values, self._position_fields, strict=False)
        ]
        past = LessThan if reverse != self.ordering[0].startswith("-") else GreaterThan
        if len(names) == 1:
            return past(F(names[0]), typed[0])
        return past(Row(*map(F, names)), Row(*typed))

    def _get_position_from_instance(self, instance, ordering):
        values = [
            instance[name.lstrip("-")]
            if isinstance(instance, dict)
            else getattr(instance, name.lstrip("-"))
            for name in ordering
        ]
        return drf_json.dumps([str(value) for value in values], separators=(",", ":"))

    def decode_cursor(self, request):
        """A cursor is the client's to hold, so its position is checked
        against the ordering fields before it reaches a query: a tampered one
        is a 400 ``pagination_invalid``, not a database error. One given
        before positions held every field (the first one's value alone) is
        still taken, as DRF took it."""
        cursor = super().decode_cursor(request)
        if cursor is None or cursor.position is None:
            return cursor
        text: str = cursor.position  # type: ignore[assignment]  # the stubs say int; it is the query string's text
        if "\x00" in text:
            raise exceptions.NotFound(self.invalid_cursor_message)
        try:
            parts = drf_json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
            parts = None
        if not isinstance(parts, list):
            parts = [text]
        elif len(parts) != len(self._position_fields) or not all(
            isinstance(part, str) for part in parts
        ):
            raise exceptions.NotFound(self.invalid_cursor_message)
        try:
            self._position_values = [
                _position_value(field, part)
                for field, part in zip(self._position_fields, parts, strict=False)
            ]
        except (DjangoValidationError, OverflowError, ValueError) as exc:
            raise exceptions.NotFound(self.invalid_cursor_message) from exc
        return cursor


def _position_value(field: Any, text: str) -> Any:
    """``text`` as the query will take it: parsed, and a time made aware and
    put in UTC (where a time at the calendar's ends overflows)."""
    value = field.to_python(text)
    if isinstance(value, dt.datetime):
        if timezone.is_naive(value):
            value = timezone.make_aware(value)
        value = value.astimezone(dt.UTC)
    return value


class FeedPagination(_ListShape, _KeysetCursor):
    """Cursors, for per-user feeds: newest first, rows of one time by their
    time-ordered (uuid7) ids."""

    ordering = ("-created_at", "-id")


def paginated(
    request: Any,
    view: Any,
    queryset: Any,
    render: Callable[[Any], Any],
    *,
    pagination: type[_ListShape] | None = None,
) -> Response:
    """One page of ``queryset`` as ``{"results", "next", "previous"}``, each
    item rendered by ``render`` (a serializer class, or a function of one
    object). ``pagination``: the view's ``pagination_class`` by default (which
    is also how the schema learns that the view answers pages), else page
    numbers."""
    paginator = (pagination or getattr(view, "pagination_class", None) or PagePagination)()
    page = paginator.paginate_queryset(queryset, request, view)
    if isinstance(render, type) and issubclass(render, serializers.BaseSerializer):
        data = render(page, many=True).data
    else:
        data = [render(item) for item in page]  # type: ignore[call-arg]  # mypy narrows "not a serializer class" to type[object]
    return paginator.get_paginated_response(data)


# --- OpenAPI --------------------------------------------------------------------


def _problem_fields() -> dict[str, serializers.Field]:
    fields: dict[str, serializers.Field] = {
        "type": serializers.CharField(help_text="`/api/problems/<code>`"),
        "title": serializers.CharField(),
        "status": serializers.IntegerField(),
        "detail": serializers.CharField(),
        "code": serializers.CharField(help_text="Stable snake_case code that clients switch on"),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            help_text="Field path → messages (400 only)",
        ),
    }
    # Extension members, present where the code carries them.
    for name, (kind, meaning) in PROBLEM_EXTENSIONS.items():
        field = serializers.IntegerField if kind == "integer" else serializers.CharField
        fields[name] = field(required=False, help_text=meaning)
    return fields


class _ProblemMeta:
    ref_name = "Problem"


ProblemSerializer = type(
    "ProblemSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "RFC 9457 problem details, as every error of this API is rendered.",
        "__module__": __name__,
        "Meta": _ProblemMeta,
        **_problem_fields(),
    },
)


def links(
    status: int, *operation_ids: str, **parameters: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """OpenAPI links from an answer to the operations it leads to, for a
    view's ``openapi_links = {"<method>": [links(...), ...]}``
    (config.openapi puts them in the schema): ``parameters`` name each
    target's parameter and the runtime expression it takes from the answer,
    e.g. ``endpoint_id="$response.body#/id"``."""
    return {
        str(status): {
            operation_id: {"operationId": operation_id, "parameters": dict(parameters)}
            for operation_id in operation_ids
        }
    }


def problems(*codes: str) -> dict[Any, OpenApiResponse]:
    """``extend_schema(responses=...)`` entries documenting the given codes."""
    by_status: dict[int, list[ErrorCode]] = defaultdict(list)
    for code in codes:
        error = ERROR_CODES[code]
        by_status[error.status].append(error)
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            ProblemSerializer,
            description="; ".join(f"`{e.code}`: {e.title}" for e in errors),
        )
        for status, errors in sorted(by_status.items())
    }


def add_generic_problem_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: the errors any endpoint can give."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in schemas:
        schemas["Problem"] = {
            "type": "object",
            "properties": {
                name: {"type": "integer" if name == "status" else "string"}
                for name in ("type", "title", "status", "detail", "code")
            }
            | {
                "errors": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                }
            }
            | {
                name: {"type": kind, "description": meaning}
                for name, (kind, meaning) in PROBLEM_EXTENSIONS.items()
            },
            "required": ["type", "title", "status", "detail", "code", "errors"],
        }
    ref = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            # A body's refusals (400, 413, 415) are config.openapi's: they
            # depend on the view.
            generic: dict[str, str] = {}
            if method == "get" and any(
                p.get("in") == "query" and p.get("name") in ("page", "cursor")
                for p in operation.get("parameters", [])
            ):
                generic["400"] = "`pagination_invalid`: " + str(PAGINATION_INVALID.title)
            security = operation.get("security") or []
            if security and any(item for item in security):
                # Every secured route knows department keys; citizens' routes tokens too.
                codes = ["not_authenticated", "api_key_invalid"]
                if any("CitizenJWT" in item for item in security):
                    codes += ["authentication_failed", "token_invalid", "account_inactive"]
                generic["401"] = ", ".join(f"`{code}`" for code in codes)
            for status, description in generic.items():
                if status in responses:
                    existing = responses[status].get("description", "")
                    responses[status]["description"] = f"{existing}; {description}".strip("; ")
                else:
                    responses[status] = {"description": description, "content": ref}
    return result

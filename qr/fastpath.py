"""The scanners' and the citizens' hot paths, answered in front of Django's request cycle.

A metro gate calls ``POST /api/v1/qr/verify/`` once per passenger, and the
city runs thousands of gates; the request cycle (middleware, routing, DRF)
would cost more than the verification itself. This WSGI layer answers the
common case only: a scanner key this process authenticated moments ago,
a small JSON body with a plain ``code``. It runs the same
``scans.scan_verify`` and builds the same answer as the view
(:func:`qr.apis.verify_answer`), with the same headers. Everything else,
the first request of a key, odd bodies, other languages, goes to Django
unchanged. What the verification itself refuses (throttling, an unreachable
scan store) is answered here with the same problem the view gives, since
running it again could count or record the scan twice.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from django.core import signals
from django.core.exceptions import ValidationError
from django.utils import translation
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from accounts import token_facts
from config.api import json_object_once, json_problem
from config.errors import PROBLEM_CONTENT_TYPE, SERVER_ERROR, ErrorCode, problem_body
from config.fastpath import API_HEADERS, bodiless, plain_request
from config.redis_client import REDIS_ERRORS, LuaScript, redis_key
from qr import scans, star_codes
from qr.authentication import remembered_scanner
from qr.errors import QrError
from qr.serializers import CODE_FIELD_MAX_LENGTH

logger = logging.getLogger(__name__)

PATH = "/api/v1/qr/verify/"
MAX_BODY = 4096
# What Django's middleware and DRF put on this answer (see the parity test).
HEADERS = [("Content-Type", "application/json"), *API_HEADERS]
_LANGUAGE = dict(HEADERS)["Content-Language"]


def _json_constant_refused(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON; the view's parser refuses them."""
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads with any option builds a new decoder per call. A body
# the view's parser refuses (a name given twice too) goes to the view.
_DECODER = json.JSONDecoder(
    parse_constant=_json_constant_refused, object_pairs_hook=json_object_once
)


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _problem(
    start_response: StartResponse,
    error: ErrorCode,
    detail: Any = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    *,
    base: list[tuple[str, str]] = HEADERS,
) -> list[bytes]:
    """A problem answered here, with the headers ``base`` (the endpoint's
    answer's) the full cycle puts on it, and ``headers`` besides."""
    # In the language the headers name (the request asked for no other):
    # not whatever the thread's last full-cycle request activated, which
    # LocaleMiddleware leaves active after it.
    with translation.override(_LANGUAGE):
        problem = problem_body(error, detail, extra=extra)
    body = json.dumps(problem, ensure_ascii=False, separators=(",", ":")).encode()
    reason = HTTPStatus(error.status).phrase
    problem_headers = [
        ("Content-Type", PROBLEM_CONTENT_TYPE),
        *[(k, v) for k, v in base if k != "Content-Type"],
        *(headers or {}).items(),
        ("Content-Length", str(len(body))),
    ]
    start_response(f"{error.status} {reason}", problem_headers)
    return [body]


class VerifyFastPath:
    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        code, scanner = self._common_case(environ)
        if code is None or scanner is None:
            return self.app(environ, start_response)
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            verdict = scans.scan_verify(scanner=scanner, text=code)
        except QrError as exc:
            # Throttled, or the scan store out of reach: answered here, as
            # the view would; running the verification again could count or
            # record the scan twice.
            return _problem(start_response, exc.error, exc.detail, exc.headers, exc.extra)
        except Exception:  # never a bare server error: the same problem the API gives
            logger.exception("verify fast path failed")
            return _problem(start_response, SERVER_ERROR)
        finally:
            signals.request_finished.send(sender=self.__class__)
        from qr.apis import verify_answer  # the view module pulls in DRF

        body = json.dumps(
            verify_answer(verdict), ensure_ascii=False, separators=(",", ":")
        ).encode()
        start_response("200 OK", [*HEADERS, ("Content-Length", str(len(body)))])
        return [body]

    def _common_case(self, environ: dict[str, Any]) -> tuple[str | None, Any]:
        """(code, scanner key) when this request is the plain common case;
        the body is put back for Django whatever the answer."""
        media_type, _, params = str(environ.get("CONTENT_TYPE", "")).partition(";")
        if media_type.rstrip() != "application/json":
            return None, None
        # The view's parser decodes by the charset named: any but UTF-8 goes there.
        if params and params.strip().lower() not in ("charset=utf-8", 'charset="utf-8"'):
            return None, None
        if not plain_request(environ):
            return None, None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None, None
        if not 0 < length <= MAX_BODY:
            return None, None
        scanner = remembered_scanner(str(environ.get("HTTP_AUTHORIZATION", "")).encode("latin-1"))
        if scanner is None:
            return None, None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        if b"\x00" in body or b"\\u0000" in body:
            return None, None
        try:
            # Plain UTF-8 only: json.loads(bytes) would also take a BOM or
            # UTF-16/32, which the view's parser refuses; those go to the view.
            data = _DECODER.decode(body.decode("utf-8"))
        except (ValueError, RecursionError):
            return None, None
        if not isinstance(data, dict):
            return None, None
        # Members besides the code: the view's parser refuses lone surrogates
        # and deep nesting anywhere in the body; such bodies go there.
        if len(data) > 1 and json_problem(data) is not None:
            return None, None
        code = data.get("code")
        if not (
            isinstance(code, str)
            and 0 < len(code) <= CODE_FIELD_MAX_LENGTH
            and code.isprintable()
            and code == code.strip()
        ):
            return None, None
        return code, scanner


# --- Star-code issuance ---------------------------------------------------------------------

ISSUE_PATH = "/api/v1/me/star-code/"
# What Django's middleware and DRF put on an issuance (see the parity test).
ISSUE_HEADERS = [
    ("Content-Type", "application/json"),
    ("Allow", "GET, HEAD, OPTIONS"),
    ("X-Frame-Options", "DENY"),
    ("Vary", "Accept-Language"),
    ("Content-Language", "zh-hans"),
    ("Cache-Control", "no-store, private"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
# A refused issuance: the view sets its own Cache-Control only on a code;
# on a problem it is the API's default.
ISSUE_PROBLEM_HEADERS = [(k, "no-store" if k == "Cache-Control" else v) for k, v in ISSUE_HEADERS]


# KEYS: the citizen's generation, the throttle window's counter. ARGV: the
# window's lifetime. The generation (false if none) and the window's count.
_GENERATION_AND_COUNT = """
local generation = redis.call('GET', KEYS[1])
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1])) end
return {generation, count}
"""


class StarCodeFastPath:
    """``GET /api/v1/me/star-code/`` in front of Django, for the common case:
    an access token that vouches for the citizen (:mod:`accounts.token_facts`:
    made by a login or refresh, the account unchanged since), within the
    citizen's rate. It runs the same authentication checks (simplejwt's
    access token), the same throttle (:class:`qr.apis.StarCodeThrottle`),
    the same ``star_codes.star_code_issue`` and answer
    (:func:`qr.apis.star_code_answer`) as the view. Anything else (no or
    a bad token, a token that does not vouch, a throttled citizen, other
    languages, a query string) takes the full cycle and gets its answer
    there; nothing has been written by then but the throttle's count,
    which the view counts once more: a citizen over the rate stays over."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        from qr.apis import StarCodeThrottle, star_code_answer  # the view module pulls in DRF

        self.throttle_class = StarCodeThrottle
        self.answer = star_code_answer
        self.script = LuaScript(_GENERATION_AND_COUNT)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != ISSUE_PATH or environ.get("REQUEST_METHOD") != "GET":
            return self.app(environ, start_response)
        token = self._plain_token(environ)
        if token is None:
            return self.app(environ, start_response)
        try:
            user = self._vouched_and_admitted(token)
        except REDIS_ERRORS as exc:
            logger.warning("star-code fast path: Redis unavailable (%s)", exc)
            user = None
        except (KeyError, ValueError, ValidationError):  # claims of an odd shape
            user = None
        if user is None:
            return self.app(environ, start_response)
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            issued = star_codes.star_code_issue(user=user)
        except QrError:
            return self.app(environ, start_response)
        except Exception:  # never a bare server error: the same problem the API gives
            logger.exception("star-code fast path failed")
            return _problem(start_response, SERVER_ERROR, base=ISSUE_PROBLEM_HEADERS)
        finally:
            signals.request_finished.send(sender=self.__class__)
        body = json.dumps(self.answer(issued), ensure_ascii=False, separators=(",", ":")).encode()
        start_response("200 OK", [*ISSUE_HEADERS, ("Content-Length", str(len(body)))])
        return [body]

    def _vouched_and_admitted(self, token: Any) -> Any:
        """The citizen if ``token`` vouches for them and they are within
        their rate, else None (the full cycle then answers). The citizen's
        current generation and the throttle's count in one round trip (a
        request whose token does not vouch is counted again by the view:
        that happens after an account changes, and only until a new login)."""
        key = token_facts.generation_key(token)
        if key is None:
            return None
        # As StarCodeThrottle.get_ident names the citizen.
        window = self.throttle_class().window_of(str(token[api_settings.USER_ID_CLAIM]))
        if window is None:
            return token_facts.citizen_from_token(token)
        current, count = self.script(keys=[key, redis_key(window.name)], args=[window.period + 1])
        if not window.admits(int(count)):
            return None  # the view counts once more and words the 429
        return token_facts.citizen_vouched(token, current)

    def _plain_token(self, environ: dict[str, Any]) -> Any:
        """The access token when the request is the plain common case, else None."""
        if not bodiless(environ) or not plain_request(environ):
            return None
        scheme, _, raw = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme != "Bearer" or not raw or " " in raw:
            return None
        try:
            return AccessToken(raw)  # type: ignore[arg-type]  # simplejwt annotates the token as Token; it takes the JWT string
        except TokenError:
            return None

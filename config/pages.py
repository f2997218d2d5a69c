"""Public pages served from memory, as long as the data they show is unchanged.

A page set (the public catalog) has one version: a random token kept in
Redis, replaced by :meth:`PublicPages.bump` after every committed change of
its data. A view wrapped by :meth:`PublicPages.page` renders once per
version, address and language in each web process; later requests get the
stored bytes for one Redis ``GET``. Every answer carries an ``ETag`` of its
body, and a client holding it gets a bodiless 304.

Guarantees and limits:

- A page is never newer than its version: the version is read before the
  page is rendered and the bump follows the commit, so a change that lands
  while a page renders leaves that page under a version that is already
  gone.
- Every way the data changes must bump (the write functions and the
  admin's saves and deletes do; tests go through each). What is missed
  anyway lasts at most ``PUBLIC_PAGE_SECONDS``: each stored page is
  rendered again after that, whatever the version says.
- Without Redis (REDIS_URL unset) nothing is kept: the web processes and
  the commands that change the catalog share no memory to carry a version.
- Redis unreachable: pages are rendered on every request (nothing stale is
  served) and it is logged.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils import translation
from django.utils.cache import get_conditional_response

from config.errors import PRECONDITION_FAILED, problem_http_response
from config.fastpath import bodiless, plain_request
from config.redis_client import REDIS_ERRORS, redis_client, redis_enabled, redis_key

logger = logging.getLogger(__name__)

# Where a kept page's age is handed to PagesFastPath (the request's environ).
STORED_AT = "config.pages.stored_at"

# Headers of the rendered response stored with the body (the view's own;
# middleware adds the rest on every answer, stored or not).
_KEPT_HEADERS = ("Content-Type", "Cache-Control", "Vary", "Allow", "Content-Language")


@dataclass(frozen=True)
class _Page:
    version: bytes
    stored_at: float
    status: int
    body: bytes
    etag: str
    headers: tuple[tuple[str, str], ...]


class PublicPages:
    """One set of public pages whose data changes together."""

    def __init__(self, name: str, *, max_entries: int = 512) -> None:
        self.name = name
        self.max_entries = max_entries
        self._pages: OrderedDict[tuple[str | None, ...], _Page] = OrderedDict()
        self._lock = threading.Lock()

    # --- the version

    def _key(self) -> str:
        return redis_key(f"pages:{self.name}:version")

    def version(self) -> bytes | None:
        """The current version (None: no Redis, or unreachable; keep nothing)."""
        key = self._key()
        if not redis_enabled():
            return None
        try:
            client = redis_client()
            value = client.get(key)
            if value is None:
                # A new epoch (first use, or Redis lost its data): a token no
                # stored page carries.
                client.set(key, secrets.token_hex(8), nx=True)
                value = client.get(key)
        except REDIS_ERRORS as exc:
            logger.warning("public pages %s: version unavailable (%s)", self.name, exc)
            return None
        if isinstance(value, str):
            return value.encode()
        return value if isinstance(value, bytes) else None

    def bump(self) -> None:
        """The data changed: pages stored so far are not served again. Runs
        after the surrounding transaction commits (at once outside one)."""
        transaction.on_commit(self._bump_now)

    def _bump_now(self) -> None:
        token = secrets.token_hex(8)
        key = self._key()
        with self._lock:
            self._pages.clear()  # this process's own pages go at once
        for layer in _LAYERS:
            if layer.pages is self:
                layer.forget()  # and the answers kept in front of Django
        if not redis_enabled():
            return
        try:
            redis_client().set(key, token)
        except REDIS_ERRORS as exc:
            # Other processes keep their pages until PUBLIC_PAGE_SECONDS.
            logger.error("public pages %s: version not bumped (%s)", self.name, exc)

    # --- the pages

    def page(self, view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        """Wrap a public GET view (no login, same answer for everyone at one
        address): its 200 answers are stored and served again while the
        version holds, with an ``ETag`` answered by 304."""

        @wraps(view)
        def serve(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method != "GET":
                return view(request, *args, **kwargs)
            address = (
                request.build_absolute_uri(),
                translation.get_language() or "",
                # ("application/json; indent=4"; sent empty, DRF's 406, not
                # the page of a request without one)
                _present(request.META, "HTTP_ACCEPT"),
            )
            version = self.version()
            page = self._stored(address, version)
            if page is None:
                response = view(request, *args, **kwargs)
                if response.status_code != 200:
                    return response
                if hasattr(response, "render"):
                    response.render()
                page = self._page(version, response)
                if version is not None:
                    self._store(address, page)
            # How old the page is, for a layer in front that keeps the answer.
            request.META[STORED_AT] = page.stored_at
            answer = HttpResponse(page.body, status=page.status)
            for name, value in page.headers:
                answer[name] = value
            answer["ETag"] = page.etag
            # A page has no modification date, so If-Unmodified-Since is
            # ignored (RFC 9110 13.1.4); Django would answer any date 412.
            request.META.pop("HTTP_IF_UNMODIFIED_SINCE", None)
            conditional = get_conditional_response(request, etag=page.etag, response=answer)
            if conditional is not None and conditional.status_code == 412:
                # (Django's own is an empty text/html answer.)
                return problem_http_response(PRECONDITION_FAILED, headers={"ETag": page.etag})
            return conditional if conditional is not None else answer

        return serve

    def _stored(self, address: tuple[str | None, ...], version: bytes | None) -> _Page | None:
        if version is None:
            return None
        with self._lock:
            page = self._pages.get(address)
            if page is None:
                return None
            fresh = time.monotonic() - page.stored_at < settings.PUBLIC_PAGE_SECONDS
            if page.version != version or not fresh:
                del self._pages[address]
                return None
            self._pages.move_to_end(address)
            return page

    @staticmethod
    def _page(version: bytes | None, response: Any) -> _Page:
        body = bytes(response.content)
        return _Page(
            version=version or b"",
            stored_at=time.monotonic(),
            status=response.status_code,
            body=body,
            # Of the body alone: a change elsewhere in the data leaves this
            # page's ETag, and a client's revalidation, as they were.
            etag=f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"',
            headers=tuple((h, response[h]) for h in _KEPT_HEADERS if response.has_header(h)),
        )

    def _store(self, address: tuple[str | None, ...], page: _Page) -> None:
        with self._lock:
            self._pages[address] = page
            self._pages.move_to_end(address)
            while len(self._pages) > self.max_entries:
                self._pages.popitem(last=False)

    def forget(self) -> None:
        """Drop this process's stored pages (tests)."""
        with self._lock:
            self._pages.clear()


# The public catalog: services and their guides, categories, departments.
# Both accounts (departments) and services (the rest) change it.
catalog_pages = PublicPages("catalog")


# --- In front of Django's request cycle ----------------------------------------------------------

# The layers made in this process (one per WSGI application), told of a bump.
_LAYERS: weakref.WeakSet[PagesFastPath] = weakref.WeakSet()


@dataclass(frozen=True)
class _Answer:
    version: bytes
    stored_at: float
    status: str
    headers: list[tuple[str, str]]
    body: bytes


class PagesFastPath:
    """Public pages answered in front of Django's request cycle.

    The catalog is what every app open reads. A page already kept (above)
    still pays for Django's middleware on every request; this WSGI layer
    keeps instead the whole answer Django gave, status, headers and body
    byte for byte, and gives it again while the version holds: one Redis
    ``GET`` per request, nothing else. What it keeps is exactly what the
    full cycle answered, so the two cannot differ.

    Only the plain case is answered here: a GET under ``prefixes`` without
    body, query string, cookie, credentials, ``If-Modified-Since`` or ``Range``,
    in Chinese, to an allowed host, answered 200 (or 304 to an
    ``If-None-Match``) with an ``ETag`` (a kept page) and no cookie. Everything else, and every first request of an address, goes to
    Django. Keys are the address as the client wrote it (scheme, host, path,
    and the headers a proxy or a client could vary), so no answer is given
    to a request it was not made for."""

    def __init__(self, app: Any, pages: PublicPages, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.pages = pages
        self.prefixes = prefixes
        self._answers: OrderedDict[tuple[str | None, ...], _Answer] = OrderedDict()
        self._lock = threading.Lock()
        _LAYERS.add(self)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if (
            environ.get("REQUEST_METHOD") != "GET"
            or not path.startswith(self.prefixes)
            or any(environ.get(name) for name in _PERSONAL)
            or not bodiless(environ)
            or not plain_request(environ)
        ):
            return self.app(environ, start_response)
        version = self.pages.version()
        if version is None:
            return self.app(environ, start_response)
        # A header sent empty is not one left out (DRF refuses "Accept:"
        # with 406 and serves a request without Accept): None stands for absent.
        key = (path, *(_present(environ, name) for name in _ADDRESS))
        answer = self._kept(key, version)
        if answer is None:
            return self._through_django(key, version, environ, start_response)
        start_response(answer.status, list(answer.headers))  # a server may add to its list
        return [answer.body]

    def _kept(self, key: tuple[str | None, ...], version: bytes) -> _Answer | None:
        with self._lock:
            answer = self._answers.get(key)
            if answer is None:
                return None
            fresh = time.monotonic() - answer.stored_at < settings.PUBLIC_PAGE_SECONDS
            if answer.version != version or not fresh:
                del self._answers[key]
                return None
            self._answers.move_to_end(key)
            return answer

    def _through_django(
        self,
        key: tuple[str | None, ...],
        version: bytes,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Any:
        seen: dict[str, Any] = {}

        def noting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"], seen["headers"] = status, list(headers)
            return start_response(status, headers, exc_info)

        chunks = self.app(environ, noting)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # Django's request_finished
        headers = seen.get("headers", [])
        names = {name.lower() for name, _ in headers}
        varies = {
            field.strip().lower()
            for name, value in headers
            if name.lower() == "vary"
            for field in value.split(",")
        }
        kept = (
            str(seen.get("status", "")).startswith(("200 ", "304 "))
            and "etag" in names
            and "set-cookie" not in names
            and varies <= _KEYED  # it varies on nothing the key leaves out
        )
        if kept:
            # Under the version read before Django rendered it (a change
            # meanwhile leaves this answer under a version already gone), and
            # as old as the page Django kept: never past PUBLIC_PAGE_SECONDS.
            stored_at = environ.get(STORED_AT, time.monotonic())
            self._store(key, _Answer(version, stored_at, seen["status"], headers, body))
        return [body]

    def _store(self, key: tuple[str | None, ...], answer: _Answer) -> None:
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.pages.max_entries:
                self._answers.popitem(last=False)

    def forget(self) -> None:
        """Drop the answers kept in this process (tests)."""
        with self._lock:
            self._answers.clear()


# A request carrying any of these is someone's, or asks a question of its
# own: the full cycle answers it.
_PERSONAL = (
    "HTTP_AUTHORIZATION",
    "HTTP_COOKIE",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_RANGE",
    # Preconditions, evaluated by Django (an If-Match naming another tag is
    # its 412).
    "HTTP_IF_MATCH",
    "HTTP_IF_UNMODIFIED_SINCE",
)
# What an answer may depend on besides the path (absolute links are built
# from the scheme and host, or from a proxy's headers where settings trust
# them; the language and the media type from the client's headers).
_ADDRESS = (
    "wsgi.url_scheme",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_ACCEPT",
    "HTTP_ACCEPT_LANGUAGE",
    # A revalidation's answer (304, or the page when the tag is stale) is
    # kept for the tag it was asked with.
    "HTTP_IF_NONE_MATCH",
)


def _present(environ: dict[str, Any], name: str) -> str | None:
    value = environ.get(name)
    return None if value is None else str(value)


# The request headers an answer may vary on and still be kept: the key has
# them (a cookie never reaches a kept answer: such requests go to Django).
_KEYED = {"accept", "accept-language", "if-none-match", "cookie"}

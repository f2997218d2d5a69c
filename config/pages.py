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

from config.redis_client import REDIS_ERRORS, redis_client, redis_enabled, redis_key

logger = logging.getLogger(__name__)

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
        self._pages: OrderedDict[tuple[str, str], _Page] = OrderedDict()
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
            address = (request.build_absolute_uri(), translation.get_language() or "")
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
            answer = HttpResponse(page.body, status=page.status)
            for name, value in page.headers:
                answer[name] = value
            answer["ETag"] = page.etag
            conditional = get_conditional_response(request, etag=page.etag, response=answer)
            return conditional if conditional is not None else answer

        return serve

    def _stored(self, address: tuple[str, str], version: bytes | None) -> _Page | None:
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

    def _store(self, address: tuple[str, str], page: _Page) -> None:
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

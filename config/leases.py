"""A lease: one holder at a time of a named piece of periodic work (the
payments sweep), for a bounded time.

With Redis (REDIS_URL) the lease is a key every process sees, taken with
``SET NX`` and a lifetime, given back and renewed only by the holder that
took it (a script compares its token), as the star-code scan flush does
its lock. A holder that dies without giving it back holds the others back
until its lifetime runs out. Without Redis (SQLite and the server-less
broker) the lease is kept in Django's cache, which then is the process's
own: it keeps a process's threads apart, not a machine's worker
processes.

Redis unreachable: the work goes ahead without a lease (the periodic
work this guards is a safety net; done twice it is idempotent).
"""

from __future__ import annotations

import logging
import secrets
import time

from django.core.cache import cache

from config.redis_client import REDIS_ERRORS, redis_client, redis_enabled, redis_key

logger = logging.getLogger(__name__)

# KEYS: the lease; ARGV: the holder's token, the lifetime in seconds (0:
# give it back). 1 if the lease was the holder's.
_IF_HELD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then redis.call('DEL', KEYS[1]) else
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
"""


class Lease:
    """``name`` held for ``seconds`` at most from its take or last renewal.

    A holder whose work is long, in pieces each well within ``seconds``,
    asks :meth:`keep` before each piece: the lease lasts as long as the
    work does, and a holder that dies lets it run out ``seconds`` after
    its last renewal (renewals come at most a tenth of ``seconds`` apart,
    see :meth:`keep`)."""

    def __init__(self, name: str, *, seconds: int) -> None:
        self.name = name
        self.seconds = seconds
        self.token = secrets.token_hex(16)
        # When it was taken or last renewed (time.monotonic()), and whether
        # another took it since.
        self._since = time.monotonic()
        self._lost = False

    @property
    def _key(self) -> str:
        return f"lease:{self.name}"

    def take(self) -> bool:
        """Taken; False if another holds it."""
        self._since = time.monotonic()
        if not redis_enabled():
            return bool(cache.add(self._key, self.token, timeout=self.seconds))
        try:
            return bool(
                redis_client().set(redis_key(self._key), self.token, nx=True, ex=self.seconds)
            )
        except REDIS_ERRORS as exc:
            logger.warning("lease %s not taken, going ahead without: %s", self.name, exc)
            return True

    def keep(self) -> bool:
        """Whether it is still this holder's. Renewed (:meth:`renew`) once a
        tenth of ``seconds`` has passed since it was taken or last renewed:
        a holder asking before every piece of its work costs Redis a call
        now and then, and begins each piece with at least nine tenths of
        ``seconds`` left. False once it ran out and another took it, and
        from then on (the other does the work now)."""
        if not self._lost and time.monotonic() - self._since >= self.seconds / 10:
            self._lost = not self.renew()
        return not self._lost

    def renew(self) -> bool:
        """Held for ``seconds`` from now; False if it ran out and another
        took it meanwhile."""
        self._since = time.monotonic()
        if not redis_enabled():
            if cache.get(self._key) == self.token:
                return bool(cache.touch(self._key, timeout=self.seconds))
            return bool(cache.add(self._key, self.token, timeout=self.seconds))
        try:
            if self._if_held(self.seconds):
                return True
            return bool(
                redis_client().set(redis_key(self._key), self.token, nx=True, ex=self.seconds)
            )
        except REDIS_ERRORS as exc:
            logger.warning("lease %s not renewed, going ahead: %s", self.name, exc)
            return True

    def give_back(self) -> None:
        """Let the next holder take it now, if it is still this one's."""
        if not redis_enabled():
            if cache.get(self._key) == self.token:
                cache.delete(self._key)
            return
        try:
            self._if_held(0)
        except REDIS_ERRORS as exc:
            logger.warning("lease %s not given back, it runs out: %s", self.name, exc)

    def _if_held(self, seconds: int) -> bool:
        return bool(redis_client().eval(_IF_HELD, 1, redis_key(self._key), self.token, seconds))

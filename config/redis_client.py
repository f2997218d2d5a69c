"""The one raw Redis client of the web and worker processes (REDIS_URL).

For the paths where Django's cache API costs a round trip too many (the
star-code's scan recording, the fixed-window throttle, the payment
callbacks' inbox): a script, a pipeline or a stream in one round trip.
No silent retries: a script must not run twice for one request, and a
caller must hear "unavailable" at once, not after a minute.

The hot paths' scripts (:class:`LuaScript`) go through a connection each
thread of a process keeps for them, sent and read directly: the client's
command layers (pool checkout and release, retry wrapper, instrumentation)
cost about three times the round trip's own client CPU.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.backoff import NoBackoff
from redis.retry import Retry

# What a call may raise when Redis is away or unwell.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def redis_enabled() -> bool:
    return bool(settings.REDIS_URL)


@functools.cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )


def redis_key(name: str) -> str:
    """``name`` inside the cache's key space (KEY_PREFIX and version), so
    that each deployment and test run keeps its own keys."""
    return str(cache.make_key(name))


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting in ("REDIS_URL", "CACHES"):
        redis_client.cache_clear()


# This thread's connection for LuaScript: (the client it was made from, the
# process that made it, the connection).
_held = threading.local()


def _connection() -> Any:
    """This thread's own connection to REDIS_URL, made by the client's pool
    with the client's settings (time-outs, no retries) and kept; a new one
    after a fork or once the client is replaced (REDIS_URL changed)."""
    client = redis_client()
    held = getattr(_held, "connection", None)
    if held is None or held[0] is not client or held[1] != os.getpid():
        held = (client, os.getpid(), client.connection_pool.make_connection())
        _held.connection = held
    return held[2]


class LuaScript:
    """A Lua script run with one ``EVALSHA`` (``EVAL`` when the server does
    not know it yet, as after a restart) on this thread's connection.

    Raises one of REDIS_ERRORS when Redis cannot be asked, never retrying:
    the connection is dropped and the next call makes a new one. A script's
    own error (``redis.ResponseError``) leaves the connection in use."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        connection = _connection()
        try:
            connection.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
            try:
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                # Not run: the server has not seen the script since it started.
                connection.send_command("EVAL", self.source, len(keys), *keys, *args)
                return connection.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            # Whatever was sent or half read is not to be read by the next call.
            connection.disconnect()
            raise

"""The one raw Redis client of the web and worker processes (REDIS_URL).

For the paths where Django's cache API costs a round trip too many (the
star-code's scan recording, the fixed-window throttle, the payment
callbacks' inbox): a script, a pipeline or a stream in one round trip.
No silent retries: a script must not run twice for one request, and a
caller must hear "unavailable" at once, not after a minute.
"""

from __future__ import annotations

import functools

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

"""config.redis_client.LuaScript: the hot paths' scripts (a verification's
scan record, issuance's throttle, a callback's door, every fixed-window
throttle) sent on a connection each thread keeps, past the client's layers.
What the client's layers gave must still hold: one run per call, no
retries, a reply that came late never read as another call's, a fork's
connection its own."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config import redis_client as module
from config.redis_client import REDIS_ERRORS, LuaScript, redis_client, redis_key

pytestmark = pytest.mark.integration

COUNT = LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@pytest.fixture
def key() -> str:
    return redis_key(f"test:lua:{uuid.uuid4().hex}")


def test_a_script_runs_once_with_its_keys_and_arguments(key) -> None:
    assert COUNT(keys=[key], args=[2]) == 2
    assert COUNT(keys=[key], args=[3]) == 5
    assert redis_client().get(key) == b"5"


def test_a_script_the_server_forgot_runs_once(key) -> None:
    """After a restart (SCRIPT FLUSH here) EVALSHA is refused without
    running; the script is then sent whole, and runs once."""
    COUNT(keys=[key], args=[1])
    redis_client().script_flush()
    assert COUNT(keys=[key], args=[1]) == 2
    assert redis_client().get(key) == b"2"


def test_a_scripts_own_error_is_raised_and_the_connection_kept(key) -> None:
    failing = LuaScript("return redis.error_reply('refused here')")
    COUNT(keys=[key], args=[1])
    connection = module._connection()
    with pytest.raises(redis.ResponseError, match="refused here"):
        failing()
    assert COUNT(keys=[key], args=[1]) == 2
    assert module._connection() is connection


def test_the_connection_never_retries() -> None:
    assert module._connection().retry.get_retries() == 0


def test_a_redis_that_refuses_connections_is_an_error_at_once(monkeypatch, key) -> None:
    away = redis.Redis(port=1, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(module, "redis_client", lambda: away)
    with pytest.raises(REDIS_ERRORS):
        COUNT(keys=[key], args=[1])
    monkeypatch.undo()
    assert COUNT(keys=[key], args=[1]) == 1  # the real one again: a connection of its own


# Keeps Redis busy for 0.8 s (its clock, in the script), then answers 41.
SLOW = LuaScript("""
local start = redis.call('TIME')
local now = start
while (now[1] - start[1]) * 1000000 + (now[2] - start[2]) < 800000 do
  now = redis.call('TIME')
end
return 41
""")


def test_a_reply_past_the_timeout_is_never_read_as_the_next_calls(monkeypatch, key) -> None:
    """A call that gives up (time-out) drops its connection: the next call
    asks on a new one and reads its own answer, not the late one."""
    from django.conf import settings

    impatient = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=2,
        socket_timeout=0.3,
        retry=Retry(NoBackoff(), 0),
    )
    monkeypatch.setattr(module, "redis_client", lambda: impatient)
    with pytest.raises(REDIS_ERRORS):
        SLOW()
    time.sleep(0.8)  # the late 41 has been sent by now, to the connection given up
    assert COUNT(keys=[key], args=[7]) == 7


def test_a_forked_process_makes_its_own_connection(key) -> None:
    """gunicorn's and Celery's workers are forks: a child must not speak on
    its parent's socket, nor close it for the parent."""
    assert COUNT(keys=[key], args=[1]) == 1
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's exit status is the check)
        try:
            ok = COUNT(keys=[key], args=[10]) == 11
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert COUNT(keys=[key], args=[100]) == 111

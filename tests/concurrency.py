"""Run steps from several threads at once, each on its own connection, and
watch PostgreSQL for a session waiting on a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connection, connections

T = TypeVar("T")


def at_once(count: int, step: Callable[[int], T]) -> list[T]:
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = step(index)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def in_thread(step, errors: list[BaseException]) -> threading.Thread:
    """Run ``step`` on its own connection in a thread; what it raises goes
    to ``errors``."""

    def run() -> None:
        try:
            step()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def a_backend_waits_on_a_lock(timeout: float) -> bool:
    """Whether another session of this database is waiting on a row lock
    within ``timeout`` seconds (PostgreSQL's own view of it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return True
        time.sleep(0.05)
    return False


def pause_in(monkeypatch: Any, owner: Any, name: str) -> tuple[threading.Event, threading.Event]:
    """Make ``owner.name`` stop when called (``paused`` is set) until
    ``release`` is set, then do what it does. Returns (paused, release)."""
    paused, release = threading.Event(), threading.Event()
    real = getattr(owner, name)

    def pausing(*args: Any, **kwargs: Any) -> Any:
        paused.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, pausing)
    return paused, release


def close_meanwhile(
    step: Callable[[], Any], *, paused: threading.Event, release: threading.Event, user_id: Any
) -> bool:
    """Run ``step`` on its own connection until it pauses (see
    :func:`pause_in`), close the citizen's account on another meanwhile,
    then let ``step`` go on. Both must end without an error (PostgreSQL
    aborting one of two sessions that wait on each other is one); returns
    whether the close waited on a lock ``step`` held."""
    from accounts.citizens import account_close
    from accounts.models import User

    errors: list[BaseException] = []
    stepping = in_thread(step, errors)
    assert paused.wait(30)
    closing = in_thread(lambda: account_close(user=User.objects.get(pk=user_id)), errors)
    close_waited = a_backend_waits_on_a_lock(timeout=10)
    release.set()
    stepping.join(60)
    closing.join(60)
    if errors:
        raise errors[0]
    return close_waited


def sent_side_by_side(
    count: int, send: Callable[[], int], *, reading: tuple[str, ...], monkeypatch
) -> list[int]:
    """Run ``send`` (a request; its status) from ``count`` threads, each
    made to wait, once it has read (``get``) a cache key containing one of
    ``reading``, until every other has read it too: a throttle that reads a
    caller's history and writes it back lets them all through; one that
    counts atomically reads nothing and is not held. The statuses, sorted."""
    import contextlib

    from django.core.cache import caches

    together = threading.Barrier(count, timeout=2)
    backend = type(caches["default"])  # each thread has its own instance
    read = backend.get

    def read_together(self, key, *args, **kwargs):
        value = read(self, key, *args, **kwargs)
        if any(part in str(key) for part in reading):
            with contextlib.suppress(threading.BrokenBarrierError):
                together.wait()  # every request has read before any writes
        return value

    monkeypatch.setattr(backend, "get", read_together)
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(send())) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(statuses)

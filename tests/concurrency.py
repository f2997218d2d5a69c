"""Run steps from several threads at once, each on its own connection, and
watch PostgreSQL for a session waiting on a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

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

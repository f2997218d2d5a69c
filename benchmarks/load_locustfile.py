"""Locust users for ``benchmarks/load.py`` (run by it; not on its own).

``LOAD_DATA`` names a JSON file of what every request needs (tokens, codes,
application numbers), made by load.py with the project's own functions;
each item is used once. ``LOAD_MODE`` is ``floor`` (only the bare view) or
``mix`` (the city's mix, weights below).

A pool that runs out stops the user that asked (``StopUser``) and counts a
failure named ``<pool> exhausted``, so the summary shows it; pools are never
reused. Where locust runs several processes (``--processes N``, or workers
of a master with ``LOAD_PROCESSES`` set to how many), each takes its own
slice of every pool. A verify answer counts as a success only if it says
``"valid": true`` (the endpoint answers 200 for any scanned code).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

with open(os.environ["LOAD_DATA"], encoding="utf-8") as _file:
    DATA: dict[str, Any] = json.load(_file)
MODE = os.environ.get("LOAD_MODE", "mix")
# Used once each; "services" (the catalog's codes) is read round and round.
POOLS = ("issue_tokens", "submit_tokens", "codes", "reads", "numbers")
_next = {name: itertools.count() for name in DATA}
_scanners = itertools.count()


class PoolExhausted(Exception):
    pass


_environment: list[Environment] = []
_sliced: list[bool] = []


@events.init.add_listener
def _remember(environment: Environment, **_kwargs: Any) -> None:
    _environment.append(environment)


def _own_slice() -> None:
    """In a worker process of several, keep only this process's share of
    every pool (item i goes to process i mod N). Done at the first take:
    a worker learns its index from the master after init."""
    _sliced.append(True)
    runner = _environment[0].runner if _environment else None
    if not isinstance(runner, WorkerRunner):
        return
    options = _environment[0].parsed_options
    processes = int(os.environ.get("LOAD_PROCESSES") or getattr(options, "processes", 0) or 0)
    if processes < 1 or runner.worker_index < 0:
        raise SystemExit(
            "load_locustfile: several locust processes need LOAD_PROCESSES (how many) and "
            "their index, so that each takes its own slice of the pools"
        )
    for name in POOLS:
        DATA[name] = DATA[name][runner.worker_index :: processes]


def take(name: str) -> Any:
    """The next unused item of a pool (gevent users share one process). A
    pool that runs out counts a failure and stops the user."""
    if not _sliced:
        _own_slice()
    pool = DATA[name]
    index = next(_next[name])
    if name not in POOLS:
        return pool[index % len(pool)]
    if index >= len(pool):
        events.request.fire(
            request_type="POOL",
            name=f"{name} exhausted",
            response_time=0,
            response_length=0,
            exception=PoolExhausted(f"the {name} pool ({len(pool)} items) ran out"),
            context={},
        )
        raise StopUser()
    return pool[index]


class Floor(FastHttpUser):
    """A bare Django JSON view behind the same middleware."""

    wait_time = constant(0)
    weight = 1 if MODE == "floor" else 0

    @task
    def bare(self) -> None:
        self.client.get("/bench/bare", name="floor /bench/bare")


class City(FastHttpUser):
    """Catalog browsing, star-code refreshes, scanner verifies, submissions,
    status reads and department status updates, as weighted here."""

    wait_time = constant(0)
    weight = 1 if MODE == "mix" else 0

    @task(30)
    def catalog(self) -> None:
        self.client.get("/api/v1/services/", name="GET /services/")
        code = take("services")
        self.client.get(f"/api/v1/services/{code}/", name="GET /services/{code}/")

    @task(25)
    def star_code(self) -> None:
        self.client.get(
            "/api/v1/me/star-code/",
            headers={"Authorization": f"Bearer {take('issue_tokens')}"},
            name="GET /me/star-code/",
        )

    @task(25)
    def verify(self) -> None:
        keys = DATA["scanner_keys"]
        with self.client.post(
            "/api/v1/qr/verify/",
            json={"code": take("codes")},
            headers={"Authorization": f"Api-Key {keys[next(_scanners) % len(keys)]}"},
            name="POST /qr/verify/",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            try:
                answer = response.json()
            except ValueError:
                response.failure("not JSON")
                return
            if not isinstance(answer, dict) or answer.get("valid") is not True:
                reason = answer.get("reason") if isinstance(answer, dict) else answer
                response.failure(f"not valid: {reason}")
            else:
                response.success()

    @task(5)
    def submit(self) -> None:
        self.client.post(
            "/api/v1/applications/",
            json={"service": DATA["free_service"], "form": DATA["form"]},
            headers={"Authorization": f"Bearer {take('submit_tokens')}"},
            name="POST /applications/",
        )

    @task(10)
    def status_read(self) -> None:
        token, application_id = take("reads")
        self.client.get(
            f"/api/v1/applications/{application_id}/",
            headers={"Authorization": f"Bearer {token}"},
            name="GET /applications/{id}/",
        )

    @task(5)
    def department_update(self) -> None:
        self.client.post(
            f"/api/v1/dept/applications/{take('numbers')}/status/",
            json={"status": "accepted", "note": "材料齐全，已受理"},
            headers={"Authorization": f"Api-Key {DATA['integrator_key']}"},
            name="POST /dept/applications/{number}/status/",
        )

"""Locust users for ``benchmarks/load.py`` (run by it; not on its own).

``LOAD_DATA`` names a JSON file of what every request needs (tokens, codes,
application numbers), made by load.py with the project's own functions;
each item is used once. ``LOAD_MODE`` is ``floor`` (only the bare view) or
``mix`` (the city's mix, weights below).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from locust import FastHttpUser, constant, task

with open(os.environ["LOAD_DATA"], encoding="utf-8") as _file:
    DATA: dict[str, Any] = json.load(_file)
MODE = os.environ.get("LOAD_MODE", "mix")
_next = {name: itertools.count() for name in DATA}


def take(name: str) -> Any:
    """The next unused item of a pool (gevent users share one process); a
    pool that runs out starts over (the summary's failures then show it)."""
    pool = DATA[name]
    return pool[next(_next[name]) % len(pool)]


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
        self.client.post(
            "/api/v1/qr/verify/",
            json={"code": take("codes")},
            headers={"Authorization": f"Api-Key {DATA['scanner_key']}"},
            name="POST /qr/verify/",
        )

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

"""The whole loop on the real stack: gunicorn, a Celery worker process with
beat, PostgreSQL, Redis, and a real HTTP server playing the department.

Each fault test asserts that nothing is lost and that nothing reaches the
department twice under a different ``webhook-id``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.api_keys import api_key_create
from services.models import Application, Delivery
from services.routing import endpoints, events
from tests.accounts.factories import CitizenFactory, DepartmentFactory
from tests.processes import celery_worker, redis_server, wait_for, web_server
from tests.services.department import Answer, DepartmentServer
from tests.services.factories import ServiceFactory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

FAST = {
    "ROUTING_RETRY_SCHEDULE": "1,1,1,1,1,1,1,1",
    "ROUTING_RETRY_JITTER": "0",
    "ROUTING_SWEEP_EVERY_SECONDS": "1",
    "ROUTING_SWEEP_GRACE_SECONDS": "1",
    "ROUTING_LEASE_SECONDS": "4",
    # A batch's slowest POSTs (about twice the timeout) must fit in the lease.
    "ROUTING_TIMEOUT_SECONDS": "1",
    "ROUTING_BATCH_SIZE": "16",
    "ROUTING_ALLOW_PRIVATE_ENDPOINTS": "1",
    "SMS_BACKEND": "console",
}
FORM = {"reason": "首次申领", "phone": "13800138000"}


def worker(tmp_path: Path, name: str = "w1", concurrency: int = 1, **env: str):
    """A worker that also runs beat (the sweeper), on its own schedule file."""
    return celery_worker(
        "--concurrency",
        str(concurrency),
        "-n",
        f"{name}@%h",
        "-B",
        "--scheduler",
        "celery.beat:PersistentScheduler",
        "-s",
        str(tmp_path / f"beat-{name}"),
        log=tmp_path / f"{name}.log",
        **{**FAST, **env},
    )


@pytest.fixture
def world(department_server_factory):
    """A department with a service, a subscribed endpoint, a citizen."""
    department = DepartmentFactory(code="hrss", name="长沙市人力资源和社会保障局")
    service = ServiceFactory(code="sbk-apply", department=department)
    server = department_server_factory()
    endpoint, secret = endpoints.endpoint_create(
        department=department,
        url=server.url("/hrss/events"),
        events=[events.APPLICATION_SUBMITTED, events.APPLICATION_CANCELLED],
        actor=None,
    )
    key, raw_key = api_key_create(department=department, scope="integrator")
    citizen = CitizenFactory(verified=True, phone="13800138000")
    token = str(RefreshToken.for_user(citizen).access_token)
    return {
        "department": department,
        "service": service,
        "server": server,
        "endpoint": endpoint,
        "secret": secret,
        "api_key": raw_key,
        "citizen": citizen,
        "citizen_auth": {"Authorization": f"Bearer {token}"},
    }


@pytest.fixture
def department_server_factory():
    servers = []

    def make() -> DepartmentServer:
        server = DepartmentServer().__enter__()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.__exit__(None, None, None)


def apply(base: str, world: dict) -> dict:
    response = httpx.post(
        f"{base}/api/v1/applications/",
        json={"service": "sbk-apply", "form": FORM},
        headers=world["citizen_auth"],
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_submit_deliver_callback_timeline(world, tmp_path) -> None:
    """A citizen applies through the web; the worker delivers the signed
    event; the department verifies it with standardwebhooks, answers with its
    reference, then reports progress through its API; the citizen sees it all."""
    server, secret = world["server"], world["secret"]
    with web_server(**FAST) as base, worker(tmp_path):

        def department_system(received) -> None:
            payload = received.verified(secret)  # standardwebhooks, or it raises
            if payload["type"] != "application.submitted":
                return
            number = payload["data"]["application"]["number"]

            def report() -> None:
                time.sleep(0.5)
                for status in ("accepted", "completed"):
                    httpx.post(
                        f"{base}/api/v1/dept/applications/{number}/status/",
                        json={"status": status, "note": f"部门：{status}"},
                        headers={"Authorization": f"Api-Key {world['api_key']}"},
                        timeout=10,
                    ).raise_for_status()

            threading.Thread(target=report, daemon=True).start()

        server.on_request = department_system
        server.default = Answer(200, {"reference": "HRSS-2026-0001"})
        application = apply(base, world)

        def timeline() -> list[str]:
            response = httpx.get(
                f"{base}/api/v1/applications/{application['id']}/",
                headers=world["citizen_auth"],
                timeout=10,
            )
            return [entry["status"] for entry in response.json()["timeline"]]

        wait_for(
            lambda: timeline()[-1:] == ["completed"], timeout=60, message=f"timeline: {timeline()}"
        )
        assert timeline() == ["submitted", "routed", "accepted", "completed"]
        [received] = server.of_type("application.submitted")
        assert received.verified(secret)["data"]["application"]["number"] == application["number"]
        stored = Application.objects.get(pk=application["id"])
        assert stored.department_reference == "HRSS-2026-0001"
        assert stored.due_date is not None


def test_a_department_down_for_a_while_loses_nothing(world, tmp_path) -> None:
    server = world["server"]
    server.answer(*[Answer(500, {"error": "maintenance"})] * 3)
    with web_server(**FAST) as base, worker(tmp_path):
        applications = [apply(base, world) for _ in range(3)]
        wait_for(
            lambda: Delivery.objects.filter(status="succeeded").count() == 3,
            timeout=60,
            message=f"deliveries: {list(Delivery.objects.values_list('status', 'attempt_count'))}",
        )
    numbers = {a["number"] for a in applications}
    received = server.of_type("application.submitted")
    assert {
        r.verified(world["secret"])["data"]["application"]["number"] for r in received
    } == numbers
    by_number: dict[str, set[str]] = {}
    for r in received:
        by_number.setdefault(r.payload["data"]["application"]["number"], set()).add(
            r.headers["webhook-id"]
        )
    assert all(len(ids) == 1 for ids in by_number.values())  # retries reuse the id
    assert len(received) == 3 + 3  # three failures, then each once more
    assert Delivery.objects.count() == 3
    assert set(Application.objects.values_list("status", flat=True)) == {"routed"}


def test_a_worker_killed_mid_delivery_loses_nothing(world, tmp_path) -> None:
    server = world["server"]
    first_request = threading.Event()
    server.on_request = lambda received: first_request.set()
    server.answer(Answer(200, {"reference": "slow"}, delay=8))  # the worker waits on this one
    with web_server(**FAST) as base:
        with worker(tmp_path, "doomed") as doomed:
            application = apply(base, world)
            assert first_request.wait(30), "the first worker never started the delivery"
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait()
        assert Delivery.objects.get().status == "pending"
        with worker(tmp_path, "heir"):
            wait_for(lambda: Delivery.objects.get().status == "succeeded", timeout=60)
    received = server.of_type("application.submitted")
    assert len(received) == 2
    assert len({r.headers["webhook-id"] for r in received}) == 1
    assert all(r.verified(world["secret"]) for r in received)
    assert Application.objects.get(pk=application["id"]).status == "routed"


def test_applications_submitted_while_the_broker_is_down_are_delivered_when_it_returns(
    world, tmp_path
) -> None:
    server = world["server"]
    with redis_server() as broker:
        env = {"REDIS_URL": broker.url}
        with web_server(**FAST, **env) as base, worker(tmp_path, **env):
            broker.stop()
            started = time.monotonic()
            applications = [apply(base, world) for _ in range(3)]
            assert time.monotonic() - started < 20, "submitting must not hang on a dead broker"
            assert Delivery.objects.filter(status="pending").count() == 3
            time.sleep(2)
            assert server.received == []
            broker.start()
            wait_for(
                lambda: Delivery.objects.filter(status="succeeded").count() == 3,
                timeout=90,
                message=f"deliveries: {list(Delivery.objects.values_list('status', 'attempt_count'))}",
            )
    received = server.of_type("application.submitted")
    assert sorted(r.payload["data"]["application"]["number"] for r in received) == sorted(
        a["number"] for a in applications
    )
    assert len({r.headers["webhook-id"] for r in received}) == 3


def test_ping_goes_through_the_worker(world, tmp_path) -> None:
    with web_server(**FAST) as base, worker(tmp_path):
        response = httpx.post(
            f"{base}/api/v1/dept/endpoints/{world['endpoint'].id}/test/",
            headers={"Authorization": f"Api-Key {world['api_key']}"},
            timeout=10,
        )
        assert response.status_code == 202
        wait_for(lambda: bool(world["server"].of_type("ping")), timeout=30)
    assert world["server"].of_type("ping")[0].verified(world["secret"])["type"] == "ping"


def test_a_worker_of_many_processes_keeps_each_applications_events_in_order(
    world, tmp_path
) -> None:
    """Citizens apply and cancel at once; the department fails every
    submit's first try. Four worker processes deliver; every cancel reaches
    the department after the submit it cancels, and nothing is lost."""
    server = world["server"]
    failed_once: set[str] = set()

    def respond(received):
        event_id = received.headers["webhook-id"]
        if received.payload["type"] == "application.submitted" and event_id not in failed_once:
            failed_once.add(event_id)
            return Answer(500, {"error": "busy"})
        return None

    server.respond = respond
    count = 12
    with (
        web_server(**FAST) as base,
        worker(tmp_path, concurrency=4, ROUTING_BREAKER_THRESHOLD="1000"),
    ):
        applications = []
        for _ in range(count):
            application = apply(base, world)
            response = httpx.post(
                f"{base}/api/v1/applications/{application['id']}/cancel/",
                headers=world["citizen_auth"],
                timeout=10,
            )
            assert response.status_code == 200, response.text
            applications.append(application)
        wait_for(
            lambda: Delivery.objects.filter(status="succeeded").count() == 2 * count,
            timeout=90,
            message=f"deliveries: {list(Delivery.objects.values_list('status', 'attempt_count'))}",
        )
    for application in applications:
        arrived = [
            (r.payload["type"], r.headers["webhook-id"])
            for r in list(server.received)
            if r.verified(world["secret"])["data"]["application"]["number"] == application["number"]
        ]
        assert [kind for kind, _id in arrived] == [
            "application.submitted",
            "application.submitted",
            "application.cancelled",
        ], application["number"]
        assert arrived[0][1] == arrived[1][1]  # the retry kept its webhook-id
    assert set(Application.objects.values_list("status", flat=True)) == {"cancelled"}

"""The demo department backend closes the loop on one machine."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import httpx
import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey
from services.management.commands.department_stub import Command, Stub
from services.models import Application, Endpoint
from tests.processes import free_port, wait_for
from tests.services.conftest import GOOD_FORM

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stub_for(live_server):
    servers = []

    def start(*departments):
        port = free_port()
        command = Command()
        wired = {d.code: command.wire(d, "127.0.0.1", port) for d in departments}
        stub = Stub(wired, api=live_server.url, delay=0.1, say=lambda text: None)
        server = ThreadingHTTPServer(("127.0.0.1", port), stub.handler())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return port, wired

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_stub_accepts_and_completes_what_citizens_submit(
    stub_for, live_server, citizen, service, department
) -> None:
    from rest_framework_simplejwt.tokens import RefreshToken

    stub_for(department)
    token = RefreshToken.for_user(citizen).access_token
    response = httpx.post(
        f"{live_server.url}/api/v1/applications/",
        json={"service": service.code, "form": GOOD_FORM},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    application_id = response.json()["id"]

    def status() -> str:
        return Application.objects.get(pk=application_id).status

    wait_for(lambda: status() == "completed", timeout=30, message=f"stuck at {status()}")
    application = Application.objects.get(pk=application_id)
    assert application.department_reference.startswith("HRSS-")
    assert list(application.timeline.values_list("status", flat=True)) == [
        "submitted",
        "routed",
        "accepted",
        "completed",
    ]


def test_the_stub_refuses_unsigned_events(stub_for, department) -> None:
    port, _wired = stub_for(department)
    response = httpx.post(
        f"http://127.0.0.1:{port}/{department.code}/events", json={"type": "ping"}
    )
    assert response.status_code == 401


def test_restarting_the_stub_reuses_its_endpoint_and_replaces_its_key(stub_for, department) -> None:
    stub_for(department)
    port, _wired = stub_for(department)
    # The endpoint of the port left is deleted (test_department_stub_restarts.py).
    assert list(
        Endpoint.objects.filter(department=department, deleted_at=None).values_list(
            "url", flat=True
        )
    ) == [f"http://127.0.0.1:{port}/{department.code}/events"]
    live_keys = ApiKey.objects.filter(
        department=department, name="department_stub", revoked_at=None
    )
    assert live_keys.count() == 1


def test_the_command_needs_a_department(db) -> None:
    with pytest.raises(CommandError, match="no active departments"):
        call_command("department_stub", "--port", str(free_port()))


def test_the_stub_stops_working_on_an_application_the_citizen_cancelled(
    department, monkeypatch
) -> None:
    import json
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    from tests.services.department import DepartmentServer

    held_back = []

    class Thread:  # holds the stub's progress reports until the test runs them
        def __init__(self, *, target, args, daemon):
            held_back.append((target, args))

        def start(self) -> None:
            pass

    with DepartmentServer() as api:  # plays our API: records what the stub reports
        wired = {department.code: Command().wire(department, "127.0.0.1", free_port())}
        stub = Stub(wired, api=api.url(""), delay=0, say=lambda text: None)
        secret = wired[department.code]["secret"]
        with monkeypatch.context() as patched:
            patched.setattr(threading, "Thread", Thread)
            for number, kind in [
                ("CS1", "application.submitted"),
                ("CS1", "application.cancelled"),
                ("CS2", "application.submitted"),
            ]:
                body = json.dumps({"type": kind, "data": {"application": {"number": number}}})
                msg_id, now = f"msg_{number}_{kind}", datetime.now(UTC)
                signed = {
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": Webhook(secret).sign(msg_id, now, body),
                }
                assert stub.receive(department.code, body.encode(), signed)[0] == 200
        for target, args in held_back:
            target(*args)
        assert [r.path for r in api.received] == [
            "/api/v1/dept/applications/CS2/status/",
            "/api/v1/dept/applications/CS2/status/",
        ]

"""The demo department backend started again, on another port or host: the
departments' events go to the one running now, and to nothing it left."""

from __future__ import annotations

import socket

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey
from services.management.commands.department_stub import Command
from services.models import Endpoint
from services.routing import endpoints, events
from tests.processes import free_port

pytestmark = pytest.mark.django_db


def stub_endpoints(department) -> list[str]:
    live = Endpoint.objects.filter(department=department, deleted_at=None, is_active=True)
    return sorted(live.values_list("url", flat=True))


def test_a_restart_on_another_port_retires_the_endpoint_it_left(department) -> None:
    first, second = free_port(), free_port()
    Command().wire(department, "127.0.0.1", first)
    Command().wire(department, "127.0.0.1", second)
    assert stub_endpoints(department) == [f"http://127.0.0.1:{second}/hrss/events"]
    left = Endpoint.objects.get(url=f"http://127.0.0.1:{first}/hrss/events")
    assert left.deleted_at is not None


def test_a_restart_on_another_host_retires_the_endpoint_it_left(department) -> None:
    port = free_port()
    Command().wire(department, "127.0.0.1", port)
    Command().wire(department, "::1", port)
    assert stub_endpoints(department) == [f"http://[::1]:{port}/hrss/events"]


def test_the_departments_own_endpoints_stay(department, other_department) -> None:
    own, _secret = endpoints.endpoint_create(
        department=department,
        url="http://127.0.0.1:8123/hrss/events",  # the stub's path, not its description
        events=list(events.SUBSCRIBABLE),
        description="our test system",
        actor=None,
    )
    other_port = free_port()
    Command().wire(other_department, "127.0.0.1", other_port)
    Command().wire(department, "127.0.0.1", free_port())
    Command().wire(department, "127.0.0.1", free_port())
    own.refresh_from_db()
    assert own.deleted_at is None and own.is_active
    assert stub_endpoints(other_department) == [
        f"http://127.0.0.1:{other_port}/{other_department.code}/events"
    ]


def test_restarting_on_more_ports_than_a_department_may_have_endpoints(
    department, settings
) -> None:
    settings.ROUTING_MAX_ENDPOINTS = 3
    for _ in range(5):
        port = free_port()
        Command().wire(department, "127.0.0.1", port)
    assert stub_endpoints(department) == [f"http://127.0.0.1:{port}/hrss/events"]


def test_a_busy_port_is_refused_before_anything_is_wired(department) -> None:
    running = free_port()
    wired = Command().wire(department, "127.0.0.1", running)
    key = ApiKey.objects.get(department=department, name="department_stub", revoked_at=None)
    with socket.socket() as someone_else:
        someone_else.bind(("127.0.0.1", 0))
        someone_else.listen()
        busy = someone_else.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{busy}"):
            call_command("department_stub", "--port", str(busy))
    # Still the running stub's endpoint, secret and key.
    assert stub_endpoints(department) == [f"http://127.0.0.1:{running}/hrss/events"]
    assert (
        Endpoint.objects.get(url=f"http://127.0.0.1:{running}/hrss/events").secret
        == (wired["secret"])
    )
    key.refresh_from_db()
    assert key.revoked_at is None


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "0"])
def test_a_port_out_of_range_is_refused(department, port) -> None:
    with pytest.raises(CommandError, match="between 1 and 65535"):
        call_command("department_stub", "--port", port)
    assert stub_endpoints(department) == []


def test_a_negative_delay_is_refused(department) -> None:
    with pytest.raises(CommandError, match="--delay"):
        call_command("department_stub", "--port", str(free_port()), "--delay", "-1")
    assert stub_endpoints(department) == []

"""A department's endpoint writes are limited per API key, and its hosts'
lookups that never end take only its own share of the lookups a web
process runs: another department's new endpoint is still checked."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from accounts.models import ApiKeyScope
from services.models import Endpoint
from services.routing import transport
from tests.conftest import _key, client_with_key

pytestmark = pytest.mark.django_db

URL = "/api/v1/dept/endpoints/"
EVENTS = ["application.submitted"]


def register(client, url: str = "https://dept.example.org/hook"):
    return client.post(URL, {"url": url, "events": EVENTS}, format="json")


@pytest.fixture
def silent_dns(monkeypatch):
    """Names starting with "silent" whose servers never answer: a lookup
    hangs until the test ends (then fails, as the resolver's own time-out
    would); other names resolve to a public address."""
    released = threading.Event()

    def lookup(host, port, **kw):
        if not host.startswith("silent"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        released.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    _lookups_end()  # the lookups of tests before, counted off their callers
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    # A request gives up on a silent name at once rather than in 5 s.
    monkeypatch.setattr(transport, "LOOKUP_SECONDS", 0.05)
    yield released
    released.set()
    _lookups_end()


def test_endpoint_writes_are_limited_per_key(
    integrator_api, department, silent_dns, settings, steady_throttle_clock
) -> None:
    settings.ROUTING_ENDPOINT_WRITE_RATE = "4/hour"
    created = register(integrator_api)
    assert created.status_code == 201
    endpoint = f"{URL}{created.json()['id']}/"
    assert integrator_api.patch(endpoint, {"description": "x"}, format="json").status_code == 200
    assert integrator_api.post(f"{endpoint}rotate-secret/").status_code == 200
    # Reading does not count.
    assert integrator_api.get(endpoint).status_code == 200
    assert integrator_api.get(URL).status_code == 200
    # A refused registration counts too: each looks its host up.
    assert register(integrator_api, "https://silent.example.org/h").status_code == 400

    for refused in (
        register(integrator_api, "https://other.example.org/hook"),
        integrator_api.patch(endpoint, {"url": "https://silent2.example.org/h"}, format="json"),
        integrator_api.post(f"{endpoint}rotate-secret/"),
        integrator_api.delete(endpoint),
    ):
        assert refused.status_code == 429, refused.content
        assert refused.json()["code"] == "throttled"
        assert int(refused["Retry-After"]) > 0
    assert Endpoint.objects.filter(department=department, deleted_at=None).count() == 1
    # The department's other key has its own count.
    another = client_with_key(_key(department, ApiKeyScope.INTEGRATOR).raw)
    assert another.delete(endpoint).status_code == 204


def test_a_departments_silent_names_leave_other_departments_endpoints_checked(
    integrator_api, other_integrator_key, silent_dns, monkeypatch
) -> None:
    monkeypatch.setattr(transport, "MAX_LOOKUPS_PER_CALLER", 3)
    for n in range(3):
        # Each hangs on, holding a lookup; the request is answered meanwhile.
        refused = register(integrator_api, f"https://silent{n}.example.org/hook")
        assert refused.status_code == 400
        assert refused.json()["code"] == "endpoint_url_not_allowed"

    # The department's share is taken: its next new name is not looked up,
    # and the answer says to come back, not that the URL is refused.
    busy = register(integrator_api, "https://silent3.example.org/hook")
    assert busy.status_code == 503, busy.content
    assert busy.json()["code"] == "service_unavailable"
    assert int(busy["Retry-After"]) > 0
    assert "silent3.example.org" not in {key[0] for key in transport._under_way}
    # Neither is its good name: its share is its own, and it is full.
    assert register(integrator_api).status_code == 503

    other = client_with_key(other_integrator_key.raw)
    assert register(other, "https://other.example.org/hook").status_code == 201

    # Once the lookups end (the resolver gives up), the share is free again.
    silent_dns.set()
    _lookups_end()
    assert transport._started_by == {}
    assert register(integrator_api).status_code == 201


def _lookups_end() -> None:
    """Wait for the lookup threads to end (each counts its lookup off its
    caller's share as it leaves the list, under the same lock)."""
    deadline = time.monotonic() + 10
    while transport._under_way and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_full_process_answers_retry_later_not_url_refused(
    integrator_api, other_integrator_key, department, silent_dns, monkeypatch
) -> None:
    monkeypatch.setattr(transport, "MAX_LOOKUPS_UNDER_WAY", 2)
    for n in range(2):
        assert register(integrator_api, f"https://silent{n}.example.org/h").status_code == 400

    other = client_with_key(other_integrator_key.raw)
    busy = register(other, "https://other.example.org/hook")
    assert busy.status_code == 503, busy.content
    assert busy.json()["code"] == "service_unavailable"
    assert int(busy["Retry-After"]) > 0
    created = register(integrator_api, "https://dept.example.org/hook")
    assert created.status_code == 503
    assert not Endpoint.objects.exists()


def test_a_change_of_url_counts_against_the_departments_share(
    integrator_api, silent_dns, monkeypatch
) -> None:
    created = register(integrator_api)
    endpoint = f"{URL}{created.json()['id']}/"
    monkeypatch.setattr(transport, "MAX_LOOKUPS_PER_CALLER", 1)
    moved = integrator_api.patch(endpoint, {"url": "https://silent.example.org/h"}, format="json")
    assert moved.json()["code"] == "endpoint_url_not_allowed"
    busy = integrator_api.patch(endpoint, {"url": "https://silent9.example.org/h"}, format="json")
    assert busy.status_code == 503
    assert busy.json()["code"] == "service_unavailable"
    assert Endpoint.objects.get().url == "https://dept.example.org/hook"


def test_asking_again_for_a_name_being_looked_up_shares_its_lookup(silent_dns, monkeypatch) -> None:
    """The share counts lookups started, not requests: the same silent name
    asked again waits on the lookup under way (and is refused as one that
    does not resolve), whoever started it."""
    monkeypatch.setattr(transport, "MAX_LOOKUPS_PER_CALLER", 1)
    for caller in ("a", "a", "b"):
        with pytest.raises(transport.UrlNotAllowed) as refused:
            transport.host_resolve("silent.example.org", 443, caller=caller)
        assert not isinstance(refused.value, transport.LookupsBusy)
    assert transport._started_by == {"a": 1}
    with pytest.raises(transport.LookupsBusy):
        transport.host_resolve("silent2.example.org", 443, caller="a")
    # Lookups without a caller (a delivery's try) take no share.
    with pytest.raises(transport.UrlNotAllowed) as refused:
        transport.host_resolve("silent3.example.org", 443)
    assert not isinstance(refused.value, transport.LookupsBusy)
    assert transport._started_by == {"a": 1}


def test_a_delivery_try_in_a_full_process_is_a_failed_try(silent_dns, monkeypatch) -> None:
    monkeypatch.setattr(transport, "MAX_LOOKUPS_UNDER_WAY", 0)
    result = transport.webhook_post(
        "https://dept.example.org/hook", body="{}", headers={}, timeout=1.0
    )
    assert result.status_code is None and result.error

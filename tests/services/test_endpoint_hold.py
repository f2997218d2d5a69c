"""An operator's hold on a department's address cannot be stepped around by spelling it anew."""

from __future__ import annotations

import socket

import pytest

from services.models import Endpoint
from services.routing import endpoints

pytestmark = pytest.mark.django_db

URL = "/api/v1/dept/endpoints/"


@pytest.fixture
def public_dns(monkeypatch):
    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.mark.parametrize(
    "again",
    [
        "https://dept.example.org./hook",  # the same name, fully qualified
        "https://DEPT.example.org.:443/other",
    ],
)
def test_the_held_address_written_with_a_final_dot_is_still_held(
    integrator_api, operator, public_dns, again
) -> None:
    created = integrator_api.post(
        URL, {"url": "https://dept.example.org/hook", "events": ["application.submitted"]}
    ).json()
    endpoints.endpoint_hold(
        endpoint=Endpoint.objects.get(pk=created["id"]), actor=operator, reason="数据外泄排查"
    )
    assert integrator_api.delete(f"{URL}{created['id']}/").status_code == 204
    response = integrator_api.post(URL, {"url": again, "events": ["application.submitted"]})
    assert response.status_code == 201, response.json()
    assert response.json()["state"] == "held"

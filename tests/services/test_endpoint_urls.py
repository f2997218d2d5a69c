"""An endpoint's address is the host its department wrote, as browsers and DNS know it."""

from __future__ import annotations

import socket

import pytest

from services.routing import transport

pytestmark = pytest.mark.django_db


@pytest.fixture
def any_host_is_public(monkeypatch):
    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        # IDNA 2003 folded these into other people's domains (fass.de,
        # xn--nxasmq6b.com): applicants' identities would have gone there.
        ("https://faß.de/hook", "https://xn--fa-hia.de/hook"),
        ("https://βόλος.com/hook", "https://xn--nxasmm1c.com/hook"),
        ("https://例子.中国:8443/hook", "https://xn--fsqu00a.xn--fiqs8s:8443/hook"),
        ("https://Dept.Example.org/hook", "https://dept.example.org/hook"),
    ],
)
def test_an_international_host_is_the_domain_its_department_registered(
    integrator_api, any_host_is_public, written, stored
) -> None:
    response = integrator_api.post(
        "/api/v1/dept/endpoints/",
        {"url": written, "events": ["application.submitted"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["url"] == stored
    assert transport.url_shape_check(written)[1] == stored.split("/")[2].split(":")[0]

"""A department registers the endpoints that receive its events."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from accounts.models import ApiKeyScope, AuditEntry
from services.errors import ServicesError
from services.models import Delivery, Endpoint
from services.routing import endpoints, transport

pytestmark = pytest.mark.django_db

URL = "/api/v1/dept/endpoints/"
EVENTS = ["application.submitted", "application.cancelled"]


def register(client, url: str = "https://dept.example.org/hook", **extra):
    return client.post(URL, {"url": url, "events": EVENTS, **extra}, format="json")


@pytest.fixture
def public_dns(monkeypatch):
    """example.org resolves to a public address; everything else for real."""
    import socket

    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host.endswith("example.org"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_registering_shows_the_secret_once(integrator_api, public_dns) -> None:
    response = register(integrator_api, description="审批系统")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["events"] == EVENTS and body["state"] == "active"
    listed = integrator_api.get(URL).json()["results"]
    assert [e["id"] for e in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in integrator_api.get(f"{URL}{body['id']}/").json()
    assert AuditEntry.objects.filter(action="endpoint.created").exists()


def test_the_secret_is_encrypted_at_rest(integrator_api, public_dns) -> None:
    from django.db import connection

    secret = register(integrator_api).json()["secret"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM services_endpoint")
        [(raw,)] = cursor.fetchall()
    assert secret not in raw


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://dept.example.org/hook", "endpoint_url_invalid"),
        ("https://user:pass@dept.example.org/hook", "endpoint_url_invalid"),
        ("https://dept.example.org:0/hook", "endpoint_url_invalid"),  # no port is 0
        ("http://127.0.0.1:8000/hook", "endpoint_url_not_allowed"),
        ("http://localhost/hook", "endpoint_url_not_allowed"),
        ("http://10.1.2.3/hook", "endpoint_url_not_allowed"),
        ("http://192.168.1.1/hook", "endpoint_url_not_allowed"),
        ("http://172.16.0.5/hook", "endpoint_url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data", "endpoint_url_not_allowed"),
        ("http://100.64.0.1/hook", "endpoint_url_not_allowed"),
        ("http://[::1]/hook", "endpoint_url_not_allowed"),
        ("http://[fd00::1]/hook", "endpoint_url_not_allowed"),
        ("http://[::ffff:127.0.0.1]/hook", "endpoint_url_not_allowed"),
        ("http://0.0.0.0/hook", "endpoint_url_not_allowed"),
        ("https://no-such-host.invalid/hook", "endpoint_url_not_allowed"),
        ("http://[::ffff:0:7f00:1]/hook", "endpoint_url_not_allowed"),  # SIIT loopback
        ("http://[::ffff:0:a9fe:a9fe]/hook", "endpoint_url_not_allowed"),  # SIIT metadata
        ("http://[64:ff9b:1::a00:1]/hook", "endpoint_url_not_allowed"),  # local-use NAT64
        ("http://[64:ff9b::7f00:1]/hook", "endpoint_url_not_allowed"),  # NAT64 to loopback
        ("http://[fec0::1]/hook", "endpoint_url_not_allowed"),  # site-local
        ("http://[2002:7f00:1::]/hook", "endpoint_url_not_allowed"),  # 6to4 around loopback
        ("http://[3fff::1]/hook", "endpoint_url_not_allowed"),  # documentation (RFC 9637)
        ("http://[ff0e::1]/hook", "endpoint_url_not_allowed"),  # global-scope multicast
        ("http://[5f00::1]/hook", "endpoint_url_not_allowed"),  # SRv6 SIDs
        ("http://192.88.99.1/hook", "endpoint_url_not_allowed"),  # 6to4 relay anycast
    ],
)
def test_urls_into_private_networks_are_refused(
    integrator_api, settings, public_dns, url, code
) -> None:
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False
    response = register(integrator_api, url)
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert "url" in response.json()["errors"]
    assert not Endpoint.objects.exists()


def test_a_public_address_is_accepted_when_private_ones_are_not(
    integrator_api, settings, public_dns
) -> None:
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False
    assert register(integrator_api).status_code == 201


def test_private_addresses_are_allowed_when_switched_on(integrator_api, settings) -> None:
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = True
    assert register(integrator_api, "http://127.0.0.1:9001/hook").status_code == 201


@pytest.mark.parametrize("events", [[], ["nope"], ["ping"], "application.submitted"])
def test_events_must_be_a_non_empty_list_of_known_types(integrator_api, public_dns, events) -> None:
    response = integrator_api.post(
        URL, {"url": "https://dept.example.org/h", "events": events}, format="json"
    )
    assert response.status_code == 400
    assert any(key.startswith("events") for key in response.json()["errors"])


def test_a_department_edits_and_removes_its_endpoint(integrator_api, public_dns) -> None:
    endpoint_id = register(integrator_api).json()["id"]
    patched = integrator_api.patch(
        f"{URL}{endpoint_id}/", {"events": ["application.supplemented"]}, format="json"
    )
    assert patched.json()["events"] == ["application.supplemented"]
    assert integrator_api.delete(f"{URL}{endpoint_id}/").status_code == 204
    assert integrator_api.get(f"{URL}{endpoint_id}/").status_code == 404
    assert integrator_api.get(URL).json()["results"] == []


def test_another_departments_endpoint_is_not_found(
    integrator_api, other_integrator_key, public_dns
) -> None:
    from tests.conftest import client_with_key

    theirs = register(client_with_key(other_integrator_key.raw)).json()["id"]
    for method, path in [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "rotate-secret/"),
        ("post", "test/"),
    ]:
        response = getattr(integrator_api, method)(f"{URL}{theirs}/{path}", {}, format="json")
        assert response.status_code == 404, (method, path)
    assert Endpoint.objects.get(pk=theirs).deleted_at is None


def test_after_rotation_both_secrets_sign_until_the_overlap_ends(
    integrator_api, public_dns
) -> None:
    created = register(integrator_api).json()
    rotated = integrator_api.post(f"{URL}{created['id']}/rotate-secret/").json()
    assert rotated["secret"] != created["secret"]
    endpoint = Endpoint.objects.get(pk=created["id"])
    now = timezone.now()
    headers = transport.signature_headers(
        msg_id="msg_1", body="{}", keys=endpoints.signing_keys_of(endpoint, now), now=now
    )
    assert Webhook(created["secret"]).verify("{}", headers) == {}
    assert Webhook(rotated["secret"]).verify("{}", headers) == {}
    later = endpoint.previous_secret_expires_at + dt.timedelta(seconds=1)
    assert endpoints.signing_keys_of(endpoint, later) == [rotated["secret"]]


def test_scanner_keys_cannot_register_endpoints(scanner_api, public_dns) -> None:
    assert register(scanner_api).status_code == 403


@pytest.fixture
def internal_dns(monkeypatch):
    """What an integrator probing the city's network would find: one internal
    name that resolves (to a private address), and names that do not."""
    import socket

    def fake(host, port, *args, **kwargs):
        if host == "db.internal.example.org":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_a_refusal_does_not_tell_an_internal_name_from_an_unknown_one(
    integrator_api, settings, internal_dns
) -> None:
    """Otherwise registration is an oracle: "does not resolve" for names that
    do not exist, "private address" for the city's internal hosts."""
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False
    internal = register(integrator_api, "https://db.internal.example.org/hook").json()
    unknown = register(integrator_api, "https://nothing-here.example.org/hook").json()
    assert internal["code"] == unknown["code"] == "endpoint_url_not_allowed"
    for field in ("title", "detail", "errors", "status"):
        assert internal[field] == unknown[field], field
    assert "10.20.30.40" not in str(internal) and "db.internal" not in str(internal)
    assert not Endpoint.objects.exists()


def test_a_changed_url_is_checked_and_refused_like_a_new_one(
    integrator_api, settings, public_dns
) -> None:
    endpoint_id = register(integrator_api).json()["id"]
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False
    response = integrator_api.patch(
        f"{URL}{endpoint_id}/", {"url": "http://[::ffff:0:7f00:1]:8000/hook"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "endpoint_url_not_allowed"
    assert Endpoint.objects.get(pk=endpoint_id).url == "https://dept.example.org/hook"


def test_shape_errors_keep_their_own_message(integrator_api, settings) -> None:
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False
    body = register(integrator_api, "https://user:pw@dept.example.org/hook").json()
    assert body["code"] == "endpoint_url_invalid"
    assert "用户名或密码" in body["detail"]


def test_a_url_that_grows_past_the_limit_once_its_host_is_ascii_is_refused(
    integrator_api, public_dns
) -> None:
    """Internationalised host names are stored in ASCII (punycode, ligatures
    unfolded), which can be longer than what was sent: the stored URL must
    fit its column too, or PostgreSQL refuses the row (a 500)."""
    host = ".".join(["ﬀ" * 31] * 3) + ".example.org"  # 107 characters, 200 in ASCII
    url = f"https://{host}/"
    url += "p" * (500 - len(url))
    for response in (
        register(integrator_api, url),
        integrator_api.patch(
            f"{URL}{register(integrator_api).json()['id']}/", {"url": url}, format="json"
        ),
    ):
        assert response.status_code == 400, response.json()
        assert response.json()["code"] == "endpoint_url_invalid"
        assert "url" in response.json()["errors"]
    assert all(len(e.url) <= 500 for e in Endpoint.objects.all())


# --- What one department may ask of the workers all share ---------------------------------------


def test_a_department_has_at_most_the_set_number_of_endpoints(
    integrator_api, other_integrator_key, public_dns, settings
) -> None:
    from tests.conftest import client_with_key

    settings.ROUTING_MAX_ENDPOINTS = 2
    first = register(integrator_api, "https://a.example.org/hook").json()
    assert register(integrator_api, "https://b.example.org/hook").status_code == 201

    refused = register(integrator_api, "https://c.example.org/hook")
    assert refused.status_code == 409
    assert refused.json()["code"] == "endpoint_limit_reached"
    assert Endpoint.objects.count() == 2
    # Another department counts its own.
    other = client_with_key(other_integrator_key.raw)
    assert register(other, "https://d.example.org/hook").status_code == 201
    # A deleted endpoint no longer counts.
    assert integrator_api.delete(f"{URL}{first['id']}/").status_code == 204
    assert register(integrator_api, "https://c.example.org/hook").status_code == 201


def test_pings_and_retries_are_limited_per_key(
    integrator_api, department, public_dns, settings
) -> None:
    from tests.conftest import _key, client_with_key

    settings.ROUTING_SEND_RATE = "2/day"
    endpoint = register(integrator_api).json()
    ping = integrator_api.post(f"{URL}{endpoint['id']}/test/")
    assert ping.status_code == 202
    retry = f"/api/v1/dept/deliveries/{ping.json()['id']}/retry/"
    assert integrator_api.post(retry).status_code == 202

    for refused in (
        integrator_api.post(f"{URL}{endpoint['id']}/test/"),
        integrator_api.post(retry),
    ):
        assert refused.status_code == 429
        assert refused.json()["code"] == "throttled"
        assert int(refused["Retry-After"]) > 0
    assert Delivery.objects.count() == 1
    # The department's other key has its own count.
    another = _key(department, ApiKeyScope.INTEGRATOR)
    assert client_with_key(another.raw).post(f"{URL}{endpoint['id']}/test/").status_code == 202


@pytest.mark.integration  # PostgreSQL's row locks
@pytest.mark.django_db(transaction=True)
def test_registrations_at_once_stay_within_the_limit(department, settings, monkeypatch) -> None:
    import socket

    from tests.concurrency import at_once

    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, **kw: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))
        ],
    )
    settings.ROUTING_MAX_ENDPOINTS = 3

    def register_one(i: int) -> str:
        try:
            endpoints.endpoint_create(
                department=department,
                url=f"https://e{i}.example.org/hook",
                events=EVENTS,
                actor=None,
            )
        except ServicesError as exc:
            return exc.error.code
        return "created"

    outcomes = at_once(8, register_one)
    assert sorted(outcomes) == ["created"] * 3 + ["endpoint_limit_reached"] * 5
    assert Endpoint.objects.filter(department=department).count() == 3

"""Actors and helpers for the catalog, applications and routing stories."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from accounts.models import Department
from services.models import Delivery, Endpoint, Service
from services.routing import deliveries, endpoints, events
from tests.services.department import DepartmentServer
from tests.services.factories import ServiceFactory

GOOD_FORM = {"reason": "首次申领", "phone": "13800138000"}


@pytest.fixture
def paid_service(department) -> Service:
    return ServiceFactory(
        code="id-card-renew", name="居民身份证换领", department=department, fee_fen=2000
    )


@pytest.fixture
def other_service(other_department) -> Service:
    return ServiceFactory(
        code="hpf-certificate", name="住房公积金缴存证明", department=other_department
    )


@pytest.fixture
def department_server():
    with DepartmentServer() as server:
        yield server


def submit(client, service_code: str = "sbk-apply", form: dict | None = None, **headers):
    return client.post(
        "/api/v1/applications/",
        {"service": service_code, "form": GOOD_FORM if form is None else form},
        format="json",
        **headers,
    )


# --- Deliveries to a department's endpoint ------------------------------------------------------

APPLICATION_EVENTS = (
    events.APPLICATION_SUBMITTED,
    events.APPLICATION_CANCELLED,
    events.APPLICATION_SUPPLEMENTED,
)


def department_endpoint(
    department: Department, server: DepartmentServer, event_types: Iterable[str]
) -> Endpoint:
    """The department's endpoint on its local server; ``secret_shown`` is the secret it was shown."""
    endpoint, secret = endpoints.endpoint_create(
        department=department,
        url=server.url("/hrss/events"),
        events=list(event_types),
        actor=None,
    )
    endpoint.secret_shown = secret
    return endpoint


@pytest.fixture
def hook(department, department_server) -> Endpoint:
    """The department's endpoint for every event of a citizen's application."""
    return department_endpoint(department, department_server, APPLICATION_EVENTS)


@pytest.fixture
def apply(citizen_api, service, django_capture_on_commit_callbacks):
    """Submits an application (the citizen's, or ``client``'s) and delivers what it sent."""

    def submit_and_deliver(client=None, **kwargs) -> dict:
        with django_capture_on_commit_callbacks(execute=True):
            response = submit(citizen_api if client is None else client, **kwargs)
        assert response.status_code == 201, response.json()
        return response.json()

    return submit_and_deliver


def try_again(delivery: Delivery, capture) -> Delivery:
    """The delivery's retry comes due and a worker picks it up."""
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )
    with capture(execute=True):
        deliveries.delivery_attempt(delivery.pk)
    return Delivery.objects.get(pk=delivery.pk)


class SchemaHost:
    """A local HTTP server that hands out a JSON schema to whoever asks, and
    records every request: a form schema must never make us ask."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                host.requests.append(self.path)
                body = json.dumps({"type": "string", "maxLength": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/schema.json") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def schema_host():
    host = SchemaHost()
    host.thread.start()
    try:
        yield host
    finally:
        host.httpd.shutdown()
        host.httpd.server_close()

"""A demo department backend, so the whole loop runs on one machine.

It registers an endpoint for each department (and an integrator key to call
back with), serves those endpoints over real HTTP, verifies every event's
Standard Webhooks signature, answers ``application.submitted`` with its own
reference, and after a short delay reports progress through the department
API: accepted, then completed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.core.management.base import BaseCommand, CommandError
from standardwebhooks import Webhook, WebhookVerificationError

from accounts.api_keys import api_key_create, api_key_revoke
from accounts.models import ApiKey, ApiKeyScope, Department
from services.models import Endpoint
from services.routing import endpoints, events

KEY_NAME = "department_stub"
# What the stub's endpoints say they are; with their path (/<code>/events),
# how a later run tells them from the department's own.
DESCRIPTION = "demo department backend (department_stub)"


class Command(BaseCommand):
    help = "Run a demo department backend that receives events and reports progress back."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=9001)
        parser.add_argument(
            "--host",
            action="append",
            dest="hosts",
            help="Address to listen on (repeatable; default 127.0.0.1); events are sent to the first",
        )
        parser.add_argument(
            "--api", default="http://127.0.0.1:8000", help="Base URL of the web API"
        )
        parser.add_argument(
            "--department",
            action="append",
            dest="departments",
            help="Code (repeatable; default all)",
        )
        parser.add_argument(
            "--delay", type=float, default=2.0, help="Seconds before each progress report"
        )

    def handle(
        self,
        *args,
        port: int,
        hosts: list[str] | None,
        api: str,
        departments: list[str] | None,
        delay: float,
        **options,
    ):
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be between 1 and 65535, not {port}")
        if delay < 0:
            raise CommandError(f"--delay must be 0 or more seconds, not {delay}")
        wanted = Department.objects.filter(is_active=True)
        if departments:
            wanted = wanted.filter(code__in=departments)
        if not wanted.exists():
            raise CommandError("no active departments; run seed_demo or create_department first")
        hosts = hosts or ["127.0.0.1"]
        stub = Stub({}, api=api.rstrip("/"), delay=delay, say=self.say)
        # Listening first: the endpoints are pointed here only once this
        # process has the port (a busy one would send the departments'
        # events to whoever holds it).
        servers: list[ThreadingHTTPServer] = []
        try:
            for host in hosts:
                try:
                    servers.append(_server_class(host)((host, port), stub.handler()))
                except OSError as exc:
                    raise CommandError(f"cannot listen on {_url_host(host)}:{port}: {exc}") from exc
            for department in wanted:
                stub.wired[department.code] = self.wire(department, hosts[0], port)
            for server in servers:
                server.daemon_threads = True
            for server in servers[1:]:
                threading.Thread(target=server.serve_forever, daemon=True).start()
            self.say(
                f"department stub for {', '.join(sorted(stub.wired))} listening on "
                + " and ".join(f"http://{_url_host(host)}:{port}/<code>/events" for host in hosts)
            )
            with contextlib.suppress(KeyboardInterrupt):
                servers[0].serve_forever()
        finally:
            for server in servers:
                server.server_close()

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def wire(self, department: Department, host: str, port: int) -> dict[str, str]:
        """A fresh integrator key and a live endpoint (with a secret we know).
        The endpoints an earlier run made at another address are deleted:
        nothing answers there any more (their events would be retried and
        end as dead letters, and they would count against the department's
        ROUTING_MAX_ENDPOINTS)."""
        for old in ApiKey.objects.filter(department=department, name=KEY_NAME, revoked_at=None):
            api_key_revoke(key=old, actor=None)
        _key, raw = api_key_create(
            department=department, scope=ApiKeyScope.INTEGRATOR, name=KEY_NAME
        )
        url = f"http://{_url_host(host)}:{port}/{department.code}/events"
        left = Endpoint.objects.filter(
            department=department, description=DESCRIPTION, deleted_at=None
        ).exclude(url=url)
        for earlier in left:
            # Its own: the description it gives and the path it serves.
            if urlsplit(earlier.url).path == f"/{department.code}/events":
                endpoints.endpoint_delete(endpoint=earlier, actor=None)
        endpoint = Endpoint.objects.filter(department=department, url=url, deleted_at=None).first()
        if endpoint is None:
            endpoint, secret = endpoints.endpoint_create(
                department=department,
                url=url,
                events=list(events.SUBSCRIBABLE),
                description=DESCRIPTION,
                actor=None,
            )
        else:
            secret = endpoints.endpoint_rotate_secret(endpoint=endpoint, actor=None)
            endpoints.endpoint_update(
                endpoint=endpoint, actor=None, is_active=True, events=list(events.SUBSCRIBABLE)
            )
        return {"key": raw, "secret": secret}


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    return _IPv6Server if ":" in host else ThreadingHTTPServer


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Stub:
    def __init__(
        self, wired: dict[str, dict[str, str]], *, api: str, delay: float, say: Any
    ) -> None:
        self.wired, self.api, self.delay, self.say = wired, api, delay, say
        self.withdrawn: set[str] = set()  # numbers the citizen cancelled

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802
                code = self.path.strip("/").split("/")[0]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = stub.receive(code, body, dict(self.headers.items()))
                payload = json.dumps(answer, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def receive(
        self, code: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str]]:
        wired = self.wired.get(code)
        if wired is None:
            return 404, {"error": "unknown department"}
        try:
            event = Webhook(wired["secret"]).verify(body, headers)
        except WebhookVerificationError as exc:
            self.say(f"[{code}] refused an event: {exc}")
            return 401, {"error": "bad signature"}
        kind = event["type"]
        data = event.get("data") or {}
        application = data.get("application") or {}
        # Payment events name their application by number under "payment".
        number = application.get("number") or (data.get("payment") or {}).get("application", "")
        self.say(
            f"[{code}] {kind} {number} (webhook-id {headers.get('webhook-id') or headers.get('Webhook-Id')})"
        )
        if kind == events.APPLICATION_SUBMITTED:
            reference = f"{code.upper()}-{number[-8:]}"
            threading.Thread(target=self.progress, args=(code, number), daemon=True).start()
            return 200, {"reference": reference}
        if kind == events.APPLICATION_CANCELLED:
            self.withdrawn.add(number)  # events of one application arrive in order
        return 200, {}

    def progress(self, code: str, number: str) -> None:
        for status, note in (
            ("accepted", "材料齐全，予以受理"),
            ("completed", "已办结，请留意领取通知"),
        ):
            time.sleep(self.delay)
            if number in self.withdrawn:
                self.say(f"[{code}] {number} was cancelled; no further progress")
                return
            try:
                response = httpx.post(
                    f"{self.api}/api/v1/dept/applications/{number}/status/",
                    json={"status": status, "note": note},
                    headers={"Authorization": f"Api-Key {self.wired[code]['key']}"},
                    timeout=10,
                )
            except httpx.HTTPError as exc:
                self.say(f"[{code}] could not report {status} for {number}: {exc}")
                return
            self.say(f"[{code}] reported {status} for {number}: HTTP {response.status_code}")
            if response.status_code != 200:
                return

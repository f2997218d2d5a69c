"""A department's system for tests: a real HTTP server on a free local port.

It records every request (headers and raw body) and answers from a script,
so tests can make it fail, stall, redirect or recover, then check what a
department would have received, signatures verified with standardwebhooks.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def verified(self, secret: str) -> dict[str, Any]:
        """The payload, if the signature checks out with ``secret`` (raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"reference": "DEPT-REF-1"})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class _Server(ThreadingHTTPServer):
    # A worker sends a batch over many connections at once; the standard
    # library's listen backlog of 5 resets the ones beyond it.
    request_queue_size = 128


class DepartmentServer:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: deque[Answer] = deque()
        self.default = Answer()
        self.on_request: Any = None  # callable(Received), called before answering
        # callable(Received) -> Answer | None: an answer chosen by the request
        # (None: the script or the default as usual)
        self.respond: Any = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                record = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                with server._lock:
                    server.received.append(record)
                    answer = server.respond(record) if server.respond else None
                    if answer is None:
                        answer = server.script.popleft() if server.script else server.default
                if server.on_request:
                    server.on_request(record)
                if answer.delay:
                    time.sleep(answer.delay)
                payload = (
                    json.dumps(answer.body).encode()
                    if not isinstance(answer.body, bytes)
                    else answer.body
                )
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/events") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self.script.extend(answers)

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in list(self.received) if r.payload.get("type") == event_type]

    def __enter__(self) -> DepartmentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

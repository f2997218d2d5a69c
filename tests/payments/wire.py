"""The sandbox channels' callbacks delivered to the test's own process: an
httpx transport over Django's test client, so a callback takes the full
request cycle (middleware, throttles, the view) inside the test's
transaction, as it would over the network."""

from __future__ import annotations

import httpx
from django.test import Client


def in_process_transport() -> httpx.BaseTransport:
    client = Client(REMOTE_ADDR="127.0.0.9")

    def handle(request: httpx.Request) -> httpx.Response:
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("content-type", "content-length", "host")
        }
        response = client.generic(
            request.method,
            request.url.raw_path.decode(),
            data=request.content,
            content_type=request.headers.get("content-type", ""),
            headers=headers,
        )
        return httpx.Response(
            response.status_code,
            headers=dict(response.items()),
            content=response.content,
        )

    return httpx.MockTransport(handle)

"""Calling the project's WSGI application (``config.wsgi``, which gunicorn
serves, fast paths included) from a test, as the test client would not."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from django.core import signals
from django.db import close_old_connections


def environ_for(path: str, body: bytes, content_type: str, **extra: Any) -> dict[str, Any]:
    """A POST of ``body`` to ``path`` on the test server."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        **extra,
    }


def wsgi_answer(
    app: Callable[..., Any], environ: dict[str, Any]
) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers in order, body) as a WSGI server receives them
    from ``app`` answering ``environ``."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, list(headers)

    # As Django's test client does: the test's transaction holds the
    # connection, so the per-request connection cleanup must not close it.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        chunks = app(environ, start_response)
        payload = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    return seen["status"], seen["headers"], payload


def wsgi_call(
    app: Callable[..., Any], environ: dict[str, Any]
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of ``app`` answering ``environ``."""
    status, headers, payload = wsgi_answer(app, environ)
    return int(status.split()[0]), dict(headers), payload

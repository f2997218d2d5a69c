"""gunicorn's sync worker, answering what gunicorn refuses before Django
sees it (a request line too long, headers too large, bytes that are not
HTTP) as the API answers everything else: an RFC 9457 problem with a stable
``code``, not gunicorn's HTML page. ``config/gunicorn.py`` names it."""

from __future__ import annotations

import http
import json
from typing import Any

from django.conf import settings
from gunicorn import util  # type: ignore[import-untyped]
from gunicorn.workers.sync import SyncWorker  # type: ignore[import-untyped]

from config.errors import (
    EXPECTATION_FAILED,
    HEADER_FIELDS_TOO_LARGE,
    MALFORMED_REQUEST,
    PROBLEM_CONTENT_TYPE,
    SERVER_ERROR,
    TRANSFER_CODING_UNSUPPORTED,
    URI_TOO_LONG,
    ErrorCode,
    problem_body,
)

# gunicorn's status for what it refuses; anything else it refuses (a
# request line or header it cannot read; a proxy line or TLS, which this
# configuration does not take) is the client's malformed request.
_BY_STATUS = {
    414: URI_TOO_LONG,
    417: EXPECTATION_FAILED,
    431: HEADER_FIELDS_TOO_LARGE,
    500: SERVER_ERROR,
    501: TRANSFER_CODING_UNSUPPORTED,
}


class _Withheld:
    """Stands in for the client's socket while gunicorn writes its error
    page: what it would send is kept back (its status is read from it)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.written = b""

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def sendall(self, data: bytes) -> None:
        self.written += bytes(data)


def refusal_for(page: bytes) -> ErrorCode:
    """The problem for the status of the page gunicorn would have sent."""
    try:
        status = int(page.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 400
    return _BY_STATUS.get(status, MALFORMED_REQUEST)


def problem_answer(error: ErrorCode) -> bytes:
    """The whole HTTP answer (the connection closes after it)."""
    body = json.dumps(problem_body(error), ensure_ascii=False).encode()
    head = (
        f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Content-Language: {settings.LANGUAGE_CODE}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


class ProblemSyncWorker(SyncWorker):
    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        # gunicorn's own handling (its log lines, its access log entry),
        # its page withheld; the problem sent in its place.
        withheld = _Withheld(client)
        super().handle_error(req, withheld, addr, exc)
        try:
            util.write_nonblock(client, problem_answer(refusal_for(withheld.written)))
        except Exception:  # the client is gone: nothing to tell it
            self.log.debug("Failed to send error message.")

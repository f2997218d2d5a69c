"""One deadline for a whole HTTP exchange made through httpcore.

httpcore's timeouts (and so httpx's) are per operation: a connect, one read,
one write. A peer that answers, or sends its head, a byte every few seconds
never hits them and holds the caller as long as it likes. A caller sets the
end of the exchange under way in its thread (:func:`deadline_set`); a
connection made through :class:`DeadlineBackend` then waits, at each
connect, TLS handshake, read and write, at most the time left, and fails
with httpcore's own timeout once it is up. Department deliveries
(services.routing.transport) and the payment channels' calls
(payments.providers.base) both end this way."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpcore

# The end of the exchange under way in this thread (time.monotonic()), if any.
_under_way = threading.local()


def deadline_set(at: float | None) -> float | None:
    """Make ``at`` the end of the exchange under way in this thread (None:
    none); returns the one it replaces, for the caller to put back."""
    outer: float | None = getattr(_under_way, "at", None)
    _under_way.at = at
    return outer


def time_left(timeout: float | None, timed_out: type[Exception]) -> float | None:
    """``timeout`` (httpcore's, per operation), cut to the time the exchange
    under way has left; ``timed_out`` raised if it has none left."""
    until: float | None = getattr(_under_way, "at", None)
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise timed_out("the exchange's time is up")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every wait ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = time_left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend (``backend``, or its synchronous one) whose
    connections end by the deadline; ``tcp_only`` refuses Unix sockets."""

    def __init__(
        self, backend: httpcore.NetworkBackend | None = None, *, tcp_only: bool = False
    ) -> None:
        self._backend = backend or httpcore.SyncBackend()
        self._tcp_only = tcp_only

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        left = time_left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(
            self._backend.connect_tcp(host, port, left, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        if self._tcp_only:
            raise httpcore.ConnectError("TCP only")
        left = time_left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)

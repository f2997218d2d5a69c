"""What a department's system answers is read within bounds, however it is encoded."""

from __future__ import annotations

import gzip
import socket
import threading
import tracemalloc
import zlib

import pytest

from services.routing import transport

EXPANDED = 64 * 1024 * 1024  # what the answers below unpack to


def _answering_server(head: bytes, body: bytes) -> int:
    """A server that answers one request with ``head`` and ``body``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run() -> None:
        connection, _ = server.accept()
        with connection, server:
            connection.recv(65536)
            try:
                connection.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            except OSError:
                return

    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


def _gzip_bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    return b"".join(packer.compress(chunk) for _ in range(EXPANDED >> 20)) + packer.flush()


def _brotli_bomb() -> bytes:
    brotli = pytest.importorskip("brotli")
    packer = brotli.Compressor(quality=1)
    chunk = b"\0" * (1 << 20)
    return b"".join(packer.process(chunk) for _ in range(EXPANDED >> 20)) + packer.finish()


@pytest.mark.parametrize(
    ("encoding", "bomb"), [("gzip", _gzip_bomb), ("br", _brotli_bomb)], ids=["gzip", "br"]
)
def test_a_compressed_answer_is_never_unpacked_past_the_read_limit(
    settings, encoding, bomb
) -> None:
    """A few kilobytes on the wire that unpack to gigabytes would take the
    delivery worker's memory (and every department's deliveries with it)."""
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = True
    body = bomb()
    port = _answering_server(f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n".encode(), body)
    tracemalloc.start()
    try:
        result = transport.webhook_post(
            f"http://127.0.0.1:{port}/events", body="{}", headers={}, timeout=5.0
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status_code == 200, result.error
    assert len(result.body) <= transport.RESPONSE_KEEP_BYTES
    assert peak < 8 * 1024 * 1024, peak


def _bare_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _bare_deflate)],
    ids=["gzip", "deflate", "bare-deflate"],
)
def test_a_small_compressed_answer_is_still_read(settings, encoding, pack) -> None:
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = True
    port = _answering_server(
        f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n".encode(),
        pack(b'{"reference": "HR-9"}'),
    )
    result = transport.webhook_post(
        f"http://127.0.0.1:{port}/events", body="{}", headers={}, timeout=5.0
    )
    assert (result.status_code, result.body) == (200, '{"reference": "HR-9"}')


@pytest.mark.parametrize("status", [200, 503])
def test_the_whole_answer_read_is_handed_on_beside_the_excerpt_kept(settings, status) -> None:
    """The excerpt kept on record is RESPONSE_KEEP_BYTES; what the
    department's reference is read from is all that was read (at most
    RESPONSE_READ_LIMIT bytes), for a success only: a failure's is never
    read, so it is not held either."""
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = True
    whole = b'{"echo": "' + b"x" * (2 * transport.RESPONSE_READ_LIMIT) + b'"}'
    port = _answering_server(f"HTTP/1.1 {status} Whatever\r\n".encode(), whole)
    result = transport.webhook_post(
        f"http://127.0.0.1:{port}/events", body="{}", headers={}, timeout=5.0
    )
    assert result.status_code == status, result.error
    assert result.body == whole[: transport.RESPONSE_KEEP_BYTES].decode()
    if status == 200:
        assert result.answer == whole[: transport.RESPONSE_READ_LIMIT].decode()
    else:
        assert result.answer == ""

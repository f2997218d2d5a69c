"""What a client's forwarding headers can make the server believe: only what
settings say (NUM_PROXIES), in gunicorn as in Django."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.processes import configured_web_server

SCHEME_HEADERS = [
    {},
    {"X-Forwarded-Proto": "https"},
    {"X-Forwarded-SSL": "on"},
    {"X-Forwarded-Protocol": "ssl"},
]


def statuses_over_plain_http(tmp_path: Path, num_proxies: int) -> dict[str, int]:
    """What gunicorn (``-c config/gunicorn.py``, on 127.0.0.1, with
    SECURE_SSL_REDIRECT=1) answers a plain-HTTP request carrying each of
    SCHEME_HEADERS: 301 to HTTPS, or 200 when the request was taken as HTTPS."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FORWARDED_ALLOW_IPS")}
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SECURE_SSL_REDIRECT": "1",
        "NUM_PROXIES": str(num_proxies),
    }
    with configured_web_server(env, tmp_path / f"web-{num_proxies}.log") as base:
        return {
            str(headers): httpx.get(f"{base}/api/problems/", headers=headers).status_code
            for headers in SCHEME_HEADERS
        }


@pytest.mark.timeout(120)
def test_with_no_proxy_no_header_makes_plain_http_secure(tmp_path) -> None:
    """NUM_PROXIES=0: nothing a client sends is a proxy's word. gunicorn
    believes the scheme headers of any caller on 127.0.0.1 (and on a UNIX
    socket) by default: such a caller was served over plain HTTP as if over
    HTTPS, no redirect."""
    answers = statuses_over_plain_http(tmp_path, num_proxies=0)
    assert answers == {str(headers): 301 for headers in SCHEME_HEADERS}


@pytest.mark.timeout(120)
def test_behind_a_proxy_only_its_x_forwarded_proto_says_https(tmp_path) -> None:
    """NUM_PROXIES=1: X-Forwarded-Proto (which that proxy overwrites) is
    believed, by Django (SECURE_PROXY_SSL_HEADER); the other two headers,
    which nothing in the settings names, are not."""
    answers = statuses_over_plain_http(tmp_path, num_proxies=1)
    expected = {str(headers): 301 for headers in SCHEME_HEADERS}
    expected[str({"X-Forwarded-Proto": "https"})] = 200
    assert answers == expected

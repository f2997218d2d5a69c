"""Star-code stories: a citizen's code, scanners at gates and halls, venue codes."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from accounts.models import ApiKey, ApiKeyScope, User
from qr import caches, codes, keys, scans
from qr.models import Disclosure, ScanEvent, ScannerProfile
from qr.recorders import get_recorder
from tests.conftest import _key, client_with_key


@pytest.fixture(autouse=True)
def _fresh_qr_memory():
    """Each test starts with empty process caches (the database is rolled back under them)."""
    caches.clear()
    get_recorder.cache_clear()
    yield
    caches.clear()


def issue(api) -> dict[str, Any]:
    response = api.get("/api/v1/me/star-code/")
    assert response.status_code == 200, response.content
    return response.json()


def verify(api, code: str) -> dict[str, Any]:
    response = api.post("/api/v1/qr/verify/", {"code": code}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def recorded_scans() -> list[ScanEvent]:
    """Every scan event, after moving anything buffered into the database."""
    scans.scan_events_flush()
    return list(ScanEvent.objects.order_by("scanned_at", "recorded_at"))


def forge(
    claims: dict[str, Any] | None = None,
    *,
    drop: tuple[str, ...] = (),
    kid: str | None = None,
    private_key: Ed25519PrivateKey | None = None,
    **overrides,
) -> str:
    """A code with the claims a test needs, signed with our active key unless
    ``kid`` or ``private_key`` name another."""
    now = int(time.time())
    body = {
        "iss": settings.QR_ISSUER,
        "sub": "s_" + "0" * 24,
        "iat": now,
        "exp": now + settings.STAR_CODE_TTL,
        "jti": secrets.token_urlsafe(12),
        "lvl": 2,
        "knd": "citizen",
        **(claims or {}),
        **overrides,
    }
    for name in drop:
        body.pop(name, None)
    if kid is None or private_key is None:
        active_kid, active_private = keys.keyring_ensure()
        kid = active_kid if kid is None else kid
        private_key = active_private if private_key is None else private_key
    return codes.sign(body, kid=kid, private_key=private_key)


def citizen_code(user: User, **overrides) -> str:
    return forge(sub=user.subject, lvl=int(user.identity_level), **overrides)


@pytest.fixture
def hall_key(department) -> ApiKey:
    """A service hall's scanner: its profile discloses the masked name."""
    key = _key(department, ApiKeyScope.SCANNER)
    ScannerProfile.objects.create(
        api_key=key, place="芙蓉区政务服务中心", disclosure=Disclosure.MASKED_NAME
    )
    return key


@pytest.fixture
def hall_api(hall_key):
    return client_with_key(hall_key.raw)


@pytest.fixture
def gate_profile(scanner_key) -> ScannerProfile:
    """The default scanner is a metro gate: valid and level only."""
    return ScannerProfile.objects.create(api_key=scanner_key, place="地铁2号线 五一广场站 3号闸机")


def create_venue(
    api, service_code: str, label: str = "3号窗口", location: str = "芙蓉中路二段"
) -> dict:
    response = api.post(
        "/api/v1/dept/codes/",
        {"service": service_code, "label": label, "location": location},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()

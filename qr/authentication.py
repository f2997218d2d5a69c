"""Scanner-key authentication that remembers a good key for a few seconds.

A metro gate verifies a code per passenger; looking its key up in the
database on every scan would cost more than the verification itself.
A key that authenticated is remembered per process for
``QR_SCANNER_AUTH_CACHE_SECONDS`` (0 turns this off), so revoking a scanner
key or deactivating its department takes effect on the scanner endpoints
within that time. Failed keys are never remembered.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django.conf import settings
from rest_framework.authentication import get_authorization_header
from rest_framework.request import Request

from accounts.authentication import ApiKeyAuthentication, ApiKeyPrincipal, ApiKeyScheme
from accounts.models import ApiKey, ApiKeyScope

_MAX_REMEMBERED = 10_000
_remembered: dict[bytes, tuple[float, ApiKeyPrincipal, ApiKey]] = {}


def forget_scanner_keys() -> None:
    _remembered.clear()


def remembered_scanner(header: bytes) -> ApiKey | None:
    """The scanner key behind ``Authorization: Api-Key …`` if this process
    authenticated it within ``QR_SCANNER_AUTH_CACHE_SECONDS``; else None
    (the caller then goes the full way, which authenticates and remembers)."""
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != ScannerKeyAuthentication.keyword:
        return None
    hit = _remembered.get(hashlib.sha256(parts[1]).digest())
    if hit is None or hit[0] <= time.monotonic() or hit[2].scope != ApiKeyScope.SCANNER:
        return None
    return hit[2]


class ScannerKeyAuthentication(ApiKeyAuthentication):
    """``Authorization: Api-Key …`` for the scanner endpoints (cached)."""

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != self.keyword:
            return super().authenticate(request)
        digest = hashlib.sha256(parts[1]).digest()
        now = time.monotonic()
        hit = _remembered.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        result = super().authenticate(request)
        lifetime = settings.QR_SCANNER_AUTH_CACHE_SECONDS
        if result is not None and lifetime > 0:
            if len(_remembered) >= _MAX_REMEMBERED:
                _remembered.clear()
            _remembered[digest] = (now + lifetime, *result)
        return result


class ScannerKeyScheme(ApiKeyScheme):
    target_class = "qr.authentication.ScannerKeyAuthentication"
    name = "ScannerApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            **super().get_security_definition(auto_schema),
            "description": "扫码终端密钥（scanner 权限）：`Authorization: Api-Key mcs_<prefix>_<secret>`",
        }

"""Citizens' personal star-codes: issuance."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass

from django.conf import settings

from accounts.errors import ACCOUNT_SUSPENDED
from accounts.models import User
from qr import codes, keys
from qr.codes import Kind
from qr.errors import QrError


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: dt.datetime
    refresh_after: dt.datetime


def star_code_issue(*, user: User) -> IssuedCode:
    """A fresh personal star-code: valid ``STAR_CODE_TTL`` seconds, to be
    replaced from ``refresh_after`` on (before it runs out, with room for
    the round trip and a scanner's clock). The installation's first signing
    key is made here, on the first issuance."""
    if not user.is_active or user.closed_at is not None:
        raise QrError(ACCOUNT_SUSPENDED)
    ttl = settings.STAR_CODE_TTL
    iat = int(time.time())
    kid, private = keys.keyring_ensure()
    text = codes.sign(
        {
            "iss": settings.QR_ISSUER,
            "sub": user.subject,
            "iat": iat,
            "exp": iat + ttl,
            "jti": secrets.token_urlsafe(12),
            "lvl": int(user.identity_level),
            "knd": Kind.CITIZEN.value,
        },
        kid=kid,
        private_key=private,
    )
    margin = max(1, min(15, ttl // 4))
    return IssuedCode(
        code=text,
        expires_at=dt.datetime.fromtimestamp(iat + ttl, tz=dt.UTC),
        refresh_after=dt.datetime.fromtimestamp(iat + ttl - margin, tz=dt.UTC),
    )

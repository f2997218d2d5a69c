"""The star-code format (DESIGN §7): ``MCS1:`` + a compact JWS (RFC 7515).

Header ``{"alg": "EdDSA", "kid": ...}``, signature Ed25519 (RFC 8037),
claims ``iss``, ``sub``, ``iat``, ``exp`` (citizen codes only), ``jti``,
``lvl`` and ``knd`` (``citizen`` or ``venue``). Any JOSE library checks a
code against the JWKS at ``/api/v1/qr/keys/``; :func:`verify` is ours, kept
free of the database so that the online endpoint, offline uploads and the
benchmark all run the same function.

Nothing here trusts its input: every step that can fail on a scanned string
raises :class:`CodeRejected` with one of the reasons of the verify API.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

PREFIX = "MCS1:"
ALGORITHM = "EdDSA"
# A scanner's clock may be this far off ours, either way (DESIGN §5).
CLOCK_SKEW_SECONDS = 15
# Longer strings are not star-codes (a QR code holds at most ~3 KB anyway).
MAX_LENGTH = 2048
_MAX_CLAIM_LENGTH = 64


class Kind(StrEnum):
    CITIZEN = "citizen"
    VENUE = "venue"


class Reason(StrEnum):
    """Why a scanned code is not valid (the ``reason`` of the verify API)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    REPLAYED = "replayed"
    ACCOUNT_INACTIVE = "account_inactive"


class CodeRejected(Exception):
    """A scanned string is not a code we vouch for, and why."""

    def __init__(self, reason: Reason, claims: Claims | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        # Set when the signature held but a time check failed: the code is
        # ours, so the scan can be attributed to its subject.
        self.claims = claims


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of a code whose signature checked out."""

    kid: str
    iss: str
    sub: str
    iat: int
    exp: int | None
    jti: str
    lvl: int
    knd: Kind


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding, as JWS requires (no stray characters)."""
    if "=" in text:
        raise ValueError("padding is not allowed")
    try:
        data = text.encode("ascii")
        decoded = base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("not base64url") from exc
    # One spelling per value: no "+" or "/", no stray low bits at the end.
    if b64url(decoded) != text:
        raise ValueError("not canonical base64url")
    return decoded


def _compact_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign(claims: Mapping[str, object], *, kid: str, private_key: Ed25519PrivateKey) -> str:
    """The QR text of ``claims`` signed by ``private_key``."""
    signing_input = (
        b64url(_compact_json({"alg": ALGORITHM, "kid": kid})) + "." + b64url(_compact_json(claims))
    )
    signature = private_key.sign(signing_input.encode("ascii"))
    return f"{PREFIX}{signing_input}.{b64url(signature)}"


@functools.lru_cache(maxsize=64)
def _kid_of(header_segment: str) -> str:
    """The ``kid`` of a protected header (headers repeat: one per key)."""
    try:
        header = json.loads(b64url_decode(header_segment))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CodeRejected(Reason.MALFORMED) from exc
    if (
        not isinstance(header, dict)
        or header.get("alg") != ALGORITHM
        or not isinstance(header.get("kid"), str)
        or not header["kid"]
        or "crit" in header
    ):
        raise CodeRejected(Reason.MALFORMED)
    return header["kid"]


def _text(claims: dict, name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_CLAIM_LENGTH:
        raise CodeRejected(Reason.MALFORMED)
    return value


def _number(claims: dict, name: str) -> int:
    value = claims.get(name)
    if type(value) is not int or not 0 <= value < 2**40:
        raise CodeRejected(Reason.MALFORMED)
    return value


@functools.lru_cache(maxsize=64)
def _verifier(raw_public_key: bytes) -> VerifyKey:
    """libsodium's verifier of one public key. The keys are kept as
    ``cryptography`` objects (signing, JWKS); the check of a scanned code
    runs in libsodium, which verifies Ed25519 about twice as fast as
    OpenSSL and refuses what RFC 8032 refuses (a non-canonical ``S``) and
    more (small-order points), so it accepts no signature OpenSSL would
    refuse."""
    return VerifyKey(raw_public_key)


class PublicKeys(Protocol):
    """What :func:`verify` looks keys up in: a mapping, or the key ring."""

    def get(self, kid: str, /) -> Ed25519PublicKey | None: ...


def verify(
    text: str,
    *,
    keys: PublicKeys,
    now: float,
    issuer: str,
) -> Claims:
    """Check a scanned string: format, key, signature, claims, validity period.

    ``keys`` maps ``kid`` to public key (a mapping that may load keys on a
    miss). Revocation, account state and replay need the platform's state;
    they are checked by the caller (``qr.scans.scan_verify``).
    """
    if not isinstance(text, str) or len(text) > MAX_LENGTH or not text.startswith(PREFIX):
        raise CodeRejected(Reason.MALFORMED)
    parts = text[len(PREFIX) :].split(".")
    if len(parts) != 3:
        raise CodeRejected(Reason.MALFORMED)
    header_segment, payload_segment, signature_segment = parts
    kid = _kid_of(header_segment)
    public_key = keys.get(kid)
    if public_key is None:
        raise CodeRejected(Reason.UNKNOWN_KEY)
    try:
        signature = b64url_decode(signature_segment)
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    except (ValueError, UnicodeEncodeError) as exc:
        raise CodeRejected(Reason.MALFORMED) from exc
    if len(signature) != 64:
        raise CodeRejected(Reason.MALFORMED)
    try:
        _verifier(public_key.public_bytes_raw()).verify(signing_input, signature)
    except BadSignatureError as exc:
        raise CodeRejected(Reason.BAD_SIGNATURE) from exc
    try:
        payload = json.loads(b64url_decode(payload_segment))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CodeRejected(Reason.MALFORMED) from exc
    if not isinstance(payload, dict):
        raise CodeRejected(Reason.MALFORMED)

    try:
        kind = Kind(payload.get("knd", ""))
    except ValueError as exc:
        raise CodeRejected(Reason.MALFORMED) from exc
    # Compared whole, not bounded like scanned text: the issuer is our own setting.
    if payload.get("iss") != issuer:
        raise CodeRejected(Reason.MALFORMED)
    iat = _number(payload, "iat")
    exp: int | None = None
    if kind is Kind.CITIZEN:
        exp = _number(payload, "exp")
        if exp <= iat:
            raise CodeRejected(Reason.MALFORMED)
    elif "exp" in payload:
        raise CodeRejected(Reason.MALFORMED)
    claims = Claims(
        kid=kid,
        iss=payload["iss"],
        sub=_text(payload, "sub"),
        iat=iat,
        exp=exp,
        jti=_text(payload, "jti"),
        lvl=_number(payload, "lvl"),
        knd=kind,
    )
    if iat > now + CLOCK_SKEW_SECONDS:
        raise CodeRejected(Reason.NOT_YET_VALID, claims)
    if exp is not None and now >= exp + CLOCK_SKEW_SECONDS:
        raise CodeRejected(Reason.EXPIRED, claims)
    return claims


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def unverified_jti(text: str) -> str | None:
    """The ``jti`` a code claims, read WITHOUT checking its signature.

    Only for telling a scanner that a code is revoked after the key that
    signed it is gone: answering "revoked" for a forgery that names a
    revoked code reveals nothing and grants nothing.
    """
    if not isinstance(text, str) or len(text) > MAX_LENGTH or not text.startswith(PREFIX):
        return None
    parts = text[len(PREFIX) :].split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(b64url_decode(parts[1]))
    except (ValueError, RecursionError):
        return None
    jti = payload.get("jti") if isinstance(payload, dict) else None
    # Ours are ASCII (a UUID, or base64url): anything else names no code of
    # ours, and a NUL or a lone surrogate could not even be looked up.
    if not isinstance(jti, str) or not 0 < len(jti) <= 64:
        return None
    return jti if jti.isascii() and jti.isprintable() else None

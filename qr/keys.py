"""Signing keys: created, ensured, rotated, withdrawn when no code needs them."""

from __future__ import annotations

import datetime as dt
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import User
from qr import caches, codes, selectors
from qr.codes import CLOCK_SKEW_SECONDS
from qr.models import SigningKey


def _keyring_changed() -> None:
    """The keys changed: this process forgets its key ring at once, every
    other process within a second of the commit (the key ring's version in
    Redis, :func:`qr.caches.keyring_version_bump`) — what makes a withdrawal
    after a compromise stop signing and verifying everywhere promptly."""
    caches.keyring.clear()
    transaction.on_commit(caches.keyring_version_bump)


def _new_kid(now: dt.datetime) -> str:
    return f"{timezone.localtime(now):%Y%m%d}-{secrets.token_hex(3)}"


def signing_key_create(
    *,
    activates_at: dt.datetime | None = None,
    actor: User | None = None,
    ip: str | None = None,
) -> SigningKey:
    """A new key, published at once, signing from ``activates_at`` (default now)."""
    now = timezone.now()
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    with transaction.atomic():
        key = SigningKey.objects.create(
            kid=_new_kid(now),
            public_key=codes.b64url(raw_public),
            private_key=codes.b64url(raw_private),
            created_at=now,
            activates_at=activates_at or now,
        )
        audit_record(
            actor=actor,
            action="qr.signing_key.created",
            target=key,
            data={"kid": key.kid, "activates_at": key.activates_at.isoformat()},
            ip=ip,
        )
    _keyring_changed()
    return key


def signing_key_ensure() -> SigningKey:
    """The active key; the very first one is created on demand, so a fresh
    installation issues codes out of the box. Two processes asking at once
    make one: the second waits for the first's commit
    (:func:`_first_key_serialise`) and signs with its key."""
    with transaction.atomic():
        active = selectors.signing_key_active()
        if active is not None:
            return active
        _first_key_serialise()
        # As of now, not of before the wait: the key another process made
        # meanwhile activated when it was made, after this one first looked.
        now = timezone.now()
        active = selectors.signing_key_active(now=now)
        if active is not None:
            return active
        return signing_key_create(activates_at=now)


# The advisory lock that serialises the creation of the first signing key
# (two halves, as qr.scans takes its own).
_FIRST_KEY_LOCK = (0x51_4B59, 1)  # "QKY"


def _first_key_serialise() -> None:
    """Hold the first-key lock until the transaction ends.

    A PostgreSQL advisory lock: a row lock on the key table (``SELECT …
    FOR UPDATE``) locks nothing while it is empty, which is exactly when
    it matters. Elsewhere (SQLite: one writer at a time, in development)
    there is nothing to take."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(_FIRST_KEY_LOCK))


def keyring_ensure() -> tuple[str, Ed25519PrivateKey]:
    """``(kid, private key)`` of the key this process signs with.

    What every signer calls before signing: the process's key ring answers
    from memory; only when it holds no active key (a fresh installation, or
    a key another process made since the ring was loaded) is the database
    asked, the first key created there if there is none
    (:func:`signing_key_ensure`), and the ring reloaded. The key ring itself
    only reads.
    """
    held = caches.keyring.signing_key()
    if held is None:
        signing_key_ensure()
        caches.keyring.reload()
        held = caches.keyring.signing_key()
        assert held is not None
    return held


def signing_key_rotate(
    *,
    immediately: bool = False,
    withdraw_previous: bool = False,
    actor: User | None = None,
    ip: str | None = None,
) -> SigningKey:
    """Publish a new key that takes over signing.

    Normally the new key signs only after ``QR_KEY_PUBLISH_AHEAD_SECONDS``,
    so every scanner that refreshes its JWKS in that time knows it before
    the first code it signs is shown. ``immediately`` skips the wait (a
    suspected compromise); ``withdraw_previous`` also pulls every older key
    from the JWKS at once, which makes the codes they signed unverifiable:
    citizens simply get a new code; venue codes must be replaced.
    """
    now = timezone.now()
    activates_at = (
        now if immediately else now + dt.timedelta(seconds=settings.QR_KEY_PUBLISH_AHEAD_SECONDS)
    )
    key = signing_key_create(activates_at=activates_at, actor=actor, ip=ip)
    if withdraw_previous:
        for old in SigningKey.objects.filter(withdrawn_at__isnull=True).exclude(pk=key.pk):
            _signing_key_withdraw(old, actor=actor, reason="compromise", ip=ip)
    return key


def _signing_key_withdraw(
    key: SigningKey, *, actor: User | None, reason: str, ip: str | None = None
) -> None:
    with transaction.atomic():
        updated = SigningKey.objects.filter(pk=key.pk, withdrawn_at__isnull=True).update(
            withdrawn_at=timezone.now(), private_key=""
        )
        if updated:
            audit_record(
                actor=actor,
                action="qr.signing_key.withdrawn",
                target=key,
                data={"kid": key.kid, "reason": reason},
                ip=ip,
            )
    _keyring_changed()


def signing_keys_prune(*, now: dt.datetime | None = None) -> list[str]:
    """Withdraw superseded keys that no valid code can need any more.

    A superseded key stays published until every citizen code it signed has
    expired (its successor's start + the time a process may still sign with
    a cached key + ``STAR_CODE_TTL`` + clock skew) and while any active
    venue code was signed with it (venue codes do not expire: replace them
    with fresh codes and deactivate the old ones to let the key go). A key
    that signed a document (a payment receipt) is never withdrawn here:
    printed receipts are checked offline for as long as they are kept.
    A superseded key kept for what it signed loses its private part at the
    same time as it would have been withdrawn. Returns the withdrawn kids.
    """
    now = now or timezone.now()
    published = SigningKey.objects.filter(withdrawn_at__isnull=True).order_by("activates_at")
    started = [k for k in published if k.activates_at <= now]
    grace = dt.timedelta(
        seconds=settings.QR_KEY_CACHE_SECONDS + settings.STAR_CODE_TTL + CLOCK_SKEW_SECONDS
    )
    in_use = selectors.kids_of_active_venue_codes()
    withdrawn = []
    for key, successor in zip(started, started[1:], strict=False):
        if now < successor.activates_at + grace:
            continue
        if key.kid in in_use or key.signed_documents:
            # Published for what it signed, but no process signs with it
            # any more: its private part would only let a thief sign codes
            # every scanner accepts.
            if key.private_key:
                _signing_key_private_part_erase(key)
            continue
        _signing_key_withdraw(key, actor=None, reason="superseded")
        withdrawn.append(key.kid)
    return withdrawn


def _signing_key_private_part_erase(key: SigningKey) -> None:
    with transaction.atomic():
        SigningKey.objects.filter(pk=key.pk).update(private_key="")
        audit_record(
            actor=None,
            action="qr.signing_key.private_part_erased",
            target=key,
            data={"kid": key.kid, "reason": "superseded"},
        )
    _keyring_changed()

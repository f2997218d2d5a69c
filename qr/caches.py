"""What each web process keeps in memory so that verifying a code touches
neither the database nor the network on the common path.

Every cache here is bounded in age by a setting and refreshed from the
database, which stays the truth:

- :class:`KeyRing`: the published signing keys (``QR_KEY_CACHE_SECONDS``);
  a code naming a ``kid`` we do not hold triggers a reload, at most once a
  second, so a key created by another process is picked up at once. With
  Redis, the ring also looks at the key ring's version there at most once a
  second and reloads when it moved: :mod:`qr.keys` bumps it when a key is
  made, withdrawn or loses its private part, so a withdrawal after a
  compromise reaches every process within about a second, not
  ``QR_KEY_CACHE_SECONDS``. The ring only reads: keys are made by
  :mod:`qr.keys`.
- :class:`ScannerProfiles`: each scanner key's disclosure profile, with the
  same lifetime as the scanner-key authentication cache.
- :class:`InactiveSubjects`: subjects deactivated recently enough to still
  hold an unexpired code (``QR_ACCOUNT_STATE_REFRESH_SECONDS``). A subject
  deactivated longer ago than a code lives cannot hold a valid code: codes
  are only issued to active accounts.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone

from config.redis_client import REDIS_ERRORS, redis_client, redis_enabled, redis_key
from qr.codes import CLOCK_SKEW_SECONDS, b64url_decode

logger = logging.getLogger(__name__)

# A code naming an unknown kid reloads the keys at most this often.
_MISS_RELOAD_INTERVAL = 1.0
# Each process looks at the key ring's version in Redis at most this often
# (one GET a second, whatever the traffic: never one per request).
_VERSION_CHECK_INTERVAL = 1.0
_VERSION_KEY = "qr:keyring:version"
# The version of a ring loaded while Redis did not answer: unlike any.
_VERSION_UNKNOWN = b"?"


# GET's reply as redis-py types it (bytes here: no decode_responses).
_Version = bytes | str | None


def _keyring_version_read() -> _Version:
    return redis_client().get(redis_key(_VERSION_KEY))


def _keyring_version_write() -> None:
    # A value never written before, not a counter: a counter lost with Redis
    # (a restart without persistence, a replica that missed the write) would
    # start again at a value some process still holds, and that process
    # would keep a withdrawn key.
    redis_client().set(redis_key(_VERSION_KEY), uuid.uuid4().hex)


def keyring_version_bump() -> None:
    """Tell every process's key ring that the keys changed (after the change
    is committed: a ring reloading earlier would read the old keys under the
    new version). Without Redis there is nothing to tell; a process whose
    Redis does not answer learns it within ``QR_KEY_CACHE_SECONDS``."""
    keyring.clear()
    if not redis_enabled():
        return
    try:
        _keyring_version_write()
    except REDIS_ERRORS as exc:
        logger.error(
            "signing keys changed but Redis did not take the key ring's version (%s): "
            "other processes see the change within QR_KEY_CACHE_SECONDS",
            exc,
        )


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    activates_at: dt.datetime
    public_key: Ed25519PublicKey
    # Decrypted: never in a repr (tracebacks, debug pages, logs).
    private_key_b64: str = field(repr=False)


class KeyRing:
    """The signing keys as this process knows them."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._loaded_at = float("-inf")
        self._version: _Version = _VERSION_UNKNOWN
        self._checked_at = float("-inf")

    def clear(self) -> None:
        with self._lock:
            self._keys, self._private, self._loaded_at = {}, {}, float("-inf")

    def _version_now(self) -> _Version:
        if not redis_enabled():
            return None
        try:
            return _keyring_version_read()
        except REDIS_ERRORS as exc:
            logger.warning("key ring: Redis unavailable (%s); keys kept by age", exc)
            return _VERSION_UNKNOWN

    def _load(self, version: _Version = _VERSION_UNKNOWN) -> None:
        from qr.models import SigningKey

        # The version is read before the keys: a change committed in
        # between moves it again, and the next look reloads.
        if version is _VERSION_UNKNOWN:
            version = self._version_now()

        rows = SigningKey.objects.filter(withdrawn_at__isnull=True).values_list(
            "kid", "activates_at", "public_key", "private_key"
        )
        keys = {
            kid: LoadedKey(
                kid=kid,
                activates_at=activates_at,
                public_key=Ed25519PublicKey.from_public_bytes(b64url_decode(public)),
                private_key_b64=private,
            )
            for kid, activates_at, public, private in rows
        }
        self._keys = keys
        # A key's private part goes with its erasure (retired) or withdrawal.
        self._private = {
            kid: k for kid, k in self._private.items() if kid in keys and keys[kid].private_key_b64
        }
        self._version = version
        self._loaded_at = self._checked_at = self.clock()

    def _current(self) -> dict[str, LoadedKey]:
        now = self.clock()
        if now - self._loaded_at > settings.QR_KEY_CACHE_SECONDS:
            with self._lock:
                if self.clock() - self._loaded_at > settings.QR_KEY_CACHE_SECONDS:
                    self._load()
        elif now - self._checked_at >= _VERSION_CHECK_INTERVAL:
            self._check_version(now)
        return self._keys

    def _check_version(self, now: float) -> None:
        """Reload if the key ring's version in Redis moved since the load."""
        with self._lock:
            if now - self._checked_at < _VERSION_CHECK_INTERVAL:
                return  # another thread is looking
            self._checked_at = now
        if not redis_enabled():
            return
        version = self._version_now()
        if version is _VERSION_UNKNOWN or version == self._version:
            return
        with self._lock:
            self._load(version)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The public key named ``kid``, if it is published."""
        key = self._current().get(kid)
        if key is None and self.clock() - self._loaded_at > _MISS_RELOAD_INTERVAL:
            with self._lock:
                self._load()
            key = self._keys.get(kid)
        return key.public_key if key is not None else None

    def published(self) -> list[LoadedKey]:
        """Every key in the JWKS: upcoming, active and retiring, newest first."""
        return sorted(self._current().values(), key=lambda k: k.activates_at, reverse=True)

    def active(self, now: dt.datetime | None = None) -> LoadedKey | None:
        now = now or timezone.now()
        live = [k for k in self._current().values() if k.activates_at <= now]
        return max(live, key=lambda k: k.activates_at) if live else None

    def reload(self) -> None:
        """Read the keys from the database now, whatever their age."""
        with self._lock:
            self._load()

    def signing_key(self) -> tuple[str, Ed25519PrivateKey] | None:
        """``(kid, private key)`` of the active key, or None if this process
        knows of none (a fresh installation: signers go through
        :func:`qr.keys.keyring_ensure`, which makes the first key)."""
        key = self.active()
        if key is None:
            return None
        private = self._private.get(key.kid)
        if private is None:
            raw = b64url_decode(key.private_key_b64)
            private = Ed25519PrivateKey.from_private_bytes(raw)
            self._private[key.kid] = private
        return key.kid, private


@dataclass(frozen=True)
class ProfileView:
    place: str
    disclosure: str


class ScannerProfiles:
    """Disclosure profile and place of each scanner key, remembered briefly."""

    def __init__(self) -> None:
        self._entries: dict[UUID, tuple[float, ProfileView]] = {}

    def clear(self) -> None:
        self._entries = {}

    def get(self, key_id: UUID, *, fallback_place: str) -> ProfileView:
        hit = self._entries.get(key_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        from qr.models import Disclosure, ScannerProfile

        row = (
            ScannerProfile.objects.filter(api_key_id=key_id)
            .values_list("place", "disclosure")
            .first()
        )
        view = (
            ProfileView(place=row[0] or fallback_place, disclosure=row[1])
            if row
            else ProfileView(place=fallback_place, disclosure=Disclosure.LEVEL)
        )
        lifetime = settings.QR_SCANNER_AUTH_CACHE_SECONDS
        if lifetime > 0:
            if len(self._entries) > 10_000:
                self._entries = {}
            self._entries[key_id] = (now + lifetime, view)
        return view


class InactiveSubjects:
    """Subjects deactivated within the life of a code, as of the last refresh."""

    def __init__(self) -> None:
        self._subjects: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._subjects, self._loaded_at = frozenset(), float("-inf")

    @staticmethod
    def window() -> dt.timedelta:
        # Codes live STAR_CODE_TTL (+ skew); the margin covers an issuance
        # racing the deactivation and a TTL lowered while codes are out.
        return dt.timedelta(seconds=settings.STAR_CODE_TTL + 2 * CLOCK_SKEW_SECONDS + 60)

    def _load(self) -> None:
        from accounts.models import User

        since = timezone.now() - self.window()
        self._subjects = frozenset(
            User.objects.filter(is_active=False, deactivated_at__gte=since).values_list(
                "subject", flat=True
            )
        )
        self._loaded_at = time.monotonic()

    def __contains__(self, subject: str) -> bool:
        if time.monotonic() - self._loaded_at >= settings.QR_ACCOUNT_STATE_REFRESH_SECONDS:
            with self._lock:
                if time.monotonic() - self._loaded_at >= settings.QR_ACCOUNT_STATE_REFRESH_SECONDS:
                    self._load()
        return subject in self._subjects


keyring = KeyRing()
scanner_profiles = ScannerProfiles()
inactive_subjects = InactiveSubjects()


def clear() -> None:
    """Forget everything (tests; after a rotation in this process)."""
    from qr.authentication import forget_scanner_keys

    keyring.clear()
    scanner_profiles.clear()
    inactive_subjects.clear()
    forget_scanner_keys()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("QR_") or setting in ("STAR_CODE_TTL", "FIELD_ENCRYPTION_KEYS"):
        clear()

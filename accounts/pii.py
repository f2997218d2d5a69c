"""Personal data at rest: encryption, blind indexes and masking.

Real names and ID numbers are stored Fernet-encrypted under
``FIELD_ENCRYPTION_KEY`` (several keys: the first encrypts, all decrypt, so
keys rotate without downtime; ``manage.py reencrypt_pii`` moves old rows to
the first key). Equality lookups (is this ID number taken?) go through a
keyed HMAC "blind index" that reveals nothing without ``BLIND_INDEX_KEY``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


class PiiDecryptionError(Exception):
    """A stored value cannot be decrypted with any configured key."""


@functools.cache
def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.FIELD_ENCRYPTION_KEYS])


@functools.cache
def _index_key() -> bytes:
    return hashlib.sha256(
        b"my-changsha blind index\x00" + settings.BLIND_INDEX_KEY.encode()
    ).digest()


@receiver(setting_changed)
def _reset_keys(*, setting: str, **kwargs: object) -> None:
    if setting in ("FIELD_ENCRYPTION_KEYS", "BLIND_INDEX_KEY"):
        _fernet.cache_clear()
        _index_key.cache_clear()


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise PiiDecryptionError(
            "stored personal data cannot be decrypted: is the key that encrypted it "
            "still listed in FIELD_ENCRYPTION_KEY?"
        ) from exc


def reencrypt(token: str) -> str:
    """The same value encrypted under the current (first) key."""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise PiiDecryptionError("stored personal data cannot be decrypted") from exc


def is_current(token: str) -> bool:
    """Whether ``token`` was encrypted under the current (first) key."""
    first = Fernet(settings.FIELD_ENCRYPTION_KEYS[0])
    try:
        first.decrypt(token.encode("ascii"))
    except InvalidToken:
        return False
    return True


def blind_index(value: str, *, purpose: str) -> str:
    """Keyed, deterministic digest of ``value`` for lookups and uniqueness."""
    message = f"{purpose}\x00{value}".encode()
    return hmac.new(_index_key(), message, hashlib.sha256).hexdigest()

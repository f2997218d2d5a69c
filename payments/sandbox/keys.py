"""The sandbox parties' keys: RSA key pairs and symmetric secrets, made on
first use and kept as files (mode 0600) under ``PAYMENTS_SANDBOX_KEY_DIR``,
so the web, worker and beat processes of one machine share them.

Two processes making the same key at once both write a temporary file and
link it into place; the one that loses reads the winner's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings


def _directory() -> Path:
    path = Path(settings.PAYMENTS_SANDBOX_KEY_DIR)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _ensure(name: str, make: Callable[[], bytes]) -> bytes:
    path = _directory() / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    content: bytes = make()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path.read_bytes()


@functools.cache
def private_key(name: str) -> rsa.RSAPrivateKey:
    """The RSA-2048 private key of a sandbox party (``wechat.platform``,
    ``wechat.merchant`` …)."""

    def make() -> bytes:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    loaded = serialization.load_pem_private_key(_ensure(f"{name}.pem", make), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise TypeError(f"sandbox key {name} is not an RSA key")
    return loaded


def serial(name: str) -> str:
    """A stable serial number for the key (certificate serial / key id style)."""
    public = (
        private_key(name)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return hashlib.sha256(public).hexdigest()[:40].upper()


@functools.cache
def secret(name: str, length: int = 32) -> bytes:
    """A random secret of ``length`` printable ASCII characters (WeChat
    Pay's API v3 key is 32 such characters)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return _ensure(
        f"{name}.secret", lambda: "".join(secrets.choice(alphabet) for _ in range(length)).encode()
    )

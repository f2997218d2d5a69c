"""The signature check of a scanned code (``qr.codes.verify`` runs it in
libsodium) agrees with OpenSSL's on every code: ours verify in both, any
change to a signature or to what it covers fails in both, and the
malleable twin of a signature (``S + L``) is refused by both."""

from __future__ import annotations

import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from qr import codes

ISSUER = "https://my.changsha.gov.cn"
PRIVATE = Ed25519PrivateKey.generate()
PUBLIC = PRIVATE.public_key()
KEYS = {"k1": PUBLIC}
# The order of the Ed25519 group (RFC 8032 §5.1).
L = 2**252 + 27742317777372353535851937790883648493


def _code(
    now: int, jti: str = "j1", private: Ed25519PrivateKey = PRIVATE, **changed: object
) -> str:
    claims = {
        "iss": ISSUER,
        "sub": "s_0123456789abcdef01234567",
        "iat": now,
        "exp": now + 60,
        "jti": jti,
        "lvl": 2,
        "knd": "citizen",
        **changed,
    }
    return codes.sign(claims, kid="k1", private_key=private)


def _parts(text: str) -> tuple[bytes, bytes]:
    header, payload, signature = text[len(codes.PREFIX) :].split(".")
    return f"{header}.{payload}".encode(), codes.b64url_decode(signature)


def _with_signature(text: str, signature: bytes) -> str:
    head, _, _ = text.rpartition(".")
    return f"{head}.{codes.b64url(signature)}"


def _openssl_accepts(message: bytes, signature: bytes) -> bool:
    try:
        PUBLIC.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _ours(text: str, now: int) -> codes.Reason | None:
    try:
        codes.verify(text, keys=KEYS, now=now, issuer=ISSUER)
    except codes.CodeRejected as exc:
        return exc.reason
    return None


@given(jti=st.text(alphabet="abcdef0123456789", min_size=1, max_size=32))
@settings(max_examples=50, deadline=None)
def test_our_codes_verify_in_both(jti):
    now = int(time.time())
    text = _code(now, jti)
    assert _openssl_accepts(*_parts(text))
    assert _ours(text, now) is None


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_a_changed_signature_fails_in_both(data):
    now = int(time.time())
    text = _code(now)
    message, signature = _parts(text)
    index = data.draw(st.integers(0, len(signature) - 1))
    bit = data.draw(st.integers(0, 7))
    changed = bytearray(signature)
    changed[index] ^= 1 << bit
    assert not _openssl_accepts(message, bytes(changed))
    assert _ours(_with_signature(text, bytes(changed)), now) is codes.Reason.BAD_SIGNATURE


@given(
    changed=st.sampled_from(
        [{"jti": "j2"}, {"sub": "s_0123456789abcdef01234568"}, {"lvl": 3}, {"knd": "venue"}]
    )
)
@settings(max_examples=20, deadline=None)
def test_a_payload_under_another_codes_signature_fails_in_both(changed):
    now = int(time.time())
    header, _, signature = _code(now)[len(codes.PREFIX) :].split(".")
    other_payload = _code(now, **changed)[len(codes.PREFIX) :].split(".")[1]
    message = f"{header}.{other_payload}"
    assert not _openssl_accepts(message.encode(), codes.b64url_decode(signature))
    assert _ours(f"{codes.PREFIX}{message}.{signature}", now) is codes.Reason.BAD_SIGNATURE


def test_the_malleable_twin_of_a_signature_fails_in_both():
    now = int(time.time())
    text = _code(now)
    message, signature = _parts(text)
    s = int.from_bytes(signature[32:], "little")
    twin = signature[:32] + (s + L).to_bytes(32, "little")
    assert twin != signature
    assert not _openssl_accepts(message, twin)
    assert _ours(_with_signature(text, twin), now) is codes.Reason.BAD_SIGNATURE


def test_another_key_under_our_kid_fails_in_both():
    now = int(time.time())
    impostor = _code(now, private=Ed25519PrivateKey.generate())
    assert not _openssl_accepts(*_parts(impostor))
    assert _ours(impostor, now) is codes.Reason.BAD_SIGNATURE

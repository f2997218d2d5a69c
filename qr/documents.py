"""Documents signed with the star-code keys (payments' receipts): the
signer that :mod:`config.signing` hands to the apps below qr, registered in
``QrConfig.ready``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping

from django.conf import settings

from qr import codes, keys
from qr.models import SigningKey

# Kinds of code that grant something when scanned: only qr's own issuers
# (star_codes, venue_codes) may sign them, never a document through the hook.
_PASS_KINDS = frozenset({"citizen", "venue"})


def document_sign(claims: Mapping[str, object]) -> str:
    """Sign a document's claims with the current star-code key (the signer
    that :mod:`config.signing` hands to apps below qr, such as payments'
    receipts).

    The result is a star-code-format text (``MCS1:`` + compact JWS, EdDSA,
    ``kid`` from the JWKS). ``iss`` is always ours; ``iat`` (now) and
    ``jti`` (random) are filled in when the document did not choose them
    (a receipt chooses both, so that it reads the same on every download).
    Raises ``ValueError`` for claims without a ``knd`` or ``sub``, or whose
    ``knd`` is a kind of pass (``citizen``, ``venue``): a document must never
    be able to pass for a code that opens something.
    """
    kind = claims.get("knd")
    if not isinstance(kind, str) or not kind:
        raise ValueError("a signed document names its kind (knd)")
    if kind in _PASS_KINDS:
        raise ValueError(f"documents may not be signed as {kind!r} codes")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise ValueError("a signed document names its subject (sub)")
    signed: dict[str, object] = {
        "iat": int(time.time()),
        "jti": secrets.token_urlsafe(12),
        **claims,
        "iss": settings.QR_ISSUER,
    }
    kid, private = keys.keyring_ensure()
    # Documents do not expire: the key that signed one stays published (see
    # keys.signing_keys_prune); the UPDATE matches no row after the first.
    SigningKey.objects.filter(kid=kid, signed_documents=False).update(signed_documents=True)
    return codes.sign(signed, kid=kid, private_key=private)

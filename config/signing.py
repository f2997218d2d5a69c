"""Signed documents: a hook for apps that must sign but may not import the signer.

Payments issues receipts whose QR code is signed like a star-code (DESIGN
§5, §7), but payments sits below qr and may not import it. So the signer is
registered here, one level down, by the app that owns the keys (``qr``, in
``QrConfig.ready``), and any app asks for a signature through
:func:`document_sign` without knowing who holds the key.

The registry holds one signer: a function from claims to the text of a QR
code (``MCS1:`` + compact JWS). It is the signer's job to add what only it
may vouch for (``iss``) and what a document need not choose itself (``iat``
and ``jti`` when absent), and to refuse claims that would make a document
pass for another kind of code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.core.exceptions import ImproperlyConfigured

Signer = Callable[[Mapping[str, object]], str]

_signer: Signer | None = None


class SignerMissing(ImproperlyConfigured):
    """No app registered a document signer (is ``qr`` in ``INSTALLED_APPS``?)."""


def signer_register(fn: Signer) -> Signer:
    """Make ``fn`` the signer of every document; returns ``fn`` (usable as a
    decorator). A later registration replaces an earlier one, so a test may
    put its own signer in place and restore the original afterwards."""
    global _signer
    _signer = fn
    return fn


def signer_registered() -> Signer | None:
    """The registered signer, or None."""
    return _signer


def document_sign(claims: Mapping[str, object]) -> str:
    """The QR text of ``claims``, signed by the registered signer.

    Raises :class:`SignerMissing` when no signer is registered, and whatever
    the signer raises for claims it refuses (``ValueError``).
    """
    if _signer is None:
        raise SignerMissing(
            "No document signer is registered: the qr app registers one in "
            "QrConfig.ready; is it in INSTALLED_APPS?"
        )
    return _signer(claims)

"""Real-name checks against the identity bureau (实名核验), pluggable.

``IDENTITY_PROVIDER`` is the dotted path of a :class:`BaseIdentityProvider`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdentityCheck:
    matched: bool
    reference: str  # the provider's transaction id, kept for disputes


class IdentityProviderUnavailable(Exception):
    """The provider could not answer now; nothing is known about the pair."""


class BaseIdentityProvider:
    """Checks that a name and an ID number belong to the same living person.

    Implement :meth:`verify`. It receives a syntactically valid, normalised
    ID number (GB 11643 checksum and birth date already checked) and the name
    as typed. Return :class:`IdentityCheck` with ``matched`` False when the
    bureau says the pair does not match; raise
    :class:`IdentityProviderUnavailable` on timeouts and provider errors,
    never guess. Calls are billed by the bureau: callers throttle them.
    """

    def verify(self, *, name: str, id_number: str) -> IdentityCheck:
        raise NotImplementedError


class SandboxIdentityProvider(BaseIdentityProvider):
    """Answers like the bureau, deterministically, without a network.

    Every valid number matches, except numbers whose 15th–17th digits are
    ``999``, which do not. References are stable per pair, as a real
    provider's idempotent query would be.
    """

    def verify(self, *, name: str, id_number: str) -> IdentityCheck:
        digest = hmac.new(b"sandbox-identity", f"{name}|{id_number}".encode(), hashlib.sha256)
        return IdentityCheck(
            matched=id_number[14:17] != "999", reference="SBX" + digest.hexdigest()[:20]
        )


def get_provider() -> BaseIdentityProvider:
    """The provider ``IDENTITY_PROVIDER`` names; with none named (production's
    default: the sandbox is never taken unasked),
    :class:`IdentityProviderUnavailable`."""
    if not settings.IDENTITY_PROVIDER:
        logger.error("IDENTITY_PROVIDER is not set: real-name checks are refused")
        raise IdentityProviderUnavailable("IDENTITY_PROVIDER is not set")
    return _provider(settings.IDENTITY_PROVIDER)


@cache
def _provider(path: str) -> BaseIdentityProvider:
    return import_string(path)()


@receiver(setting_changed)
def _reset_provider(*, setting: str, **kwargs: object) -> None:
    if setting == "IDENTITY_PROVIDER":
        _provider.cache_clear()

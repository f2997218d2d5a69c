"""The payment providers, one per channel, chosen by ``PAYMENTS_CHANNELS``.

:func:`provider_for` builds a channel's provider once per process with the
merchant's credentials: in sandbox mode (``PAYMENTS_SANDBOX``) the sandbox's
keys and an ``httpx`` client whose transport is the sandbox; otherwise the
key files named by ``PAYMENTS_<CHANNEL>_*`` env vars and the channel's API
host. A channel with neither is unavailable.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from payments.providers.base import BasePaymentProvider, Credentials, deadline_bound

logger = logging.getLogger(__name__)


class ChannelUnavailable(Exception):
    """The channel is not configured here."""


def _load_private(path: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ChannelUnavailable(f"{path} is not an RSA private key")
    return key


def _load_public(path: str) -> rsa.RSAPublicKey:
    data = Path(path).read_bytes()
    key: object = (
        x509.load_pem_x509_certificate(data).public_key()
        if b"CERTIFICATE" in data
        else serialization.load_pem_public_key(data)
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChannelUnavailable(f"{path} is not an RSA public key")
    return key


def credentials_for(channel: str) -> Credentials:
    config = settings.PAYMENTS_CHANNELS[channel]
    if settings.PAYMENTS_SANDBOX:
        from payments.sandbox import keys

        return Credentials(
            merchant_id=config["merchant_id"],
            app_id=config["app_id"],
            merchant_private_key=keys.private_key(f"{channel}.merchant"),
            merchant_serial=keys.serial(f"{channel}.merchant"),
            platform_public_key=keys.private_key(f"{channel}.platform").public_key(),
            platform_serial=keys.serial(f"{channel}.platform"),
            api_v3_key=keys.secret(f"{channel}.apiv3") if channel == "wechat" else b"",
            api_base_url=config["sandbox_base_url"],
        )
    if not (config.get("private_key_file") and config.get("platform_key_file")):
        raise ChannelUnavailable(channel)
    try:
        return _configured(channel, config)
    except (OSError, ValueError) as exc:
        # A key file that is missing, unreadable or not a key: the channel
        # is off until an operator fixes it, as if it were not configured.
        logger.error("payment channel %s: its key files cannot be used: %s", channel, exc)
        raise ChannelUnavailable(channel) from exc


def _configured(channel: str, config: dict[str, str]) -> Credentials:
    return Credentials(
        merchant_id=config["merchant_id"],
        app_id=config["app_id"],
        merchant_private_key=_load_private(config["private_key_file"]),
        merchant_serial=config.get("merchant_serial", ""),
        platform_public_key=_load_public(config["platform_key_file"]),
        platform_serial=config.get("platform_serial", ""),
        api_v3_key=config.get("api_v3_key", "").encode(),
        api_base_url=config["api_base_url"],
    )


def channel_http(base_url: str) -> httpx.Client:
    """The client through which a provider reaches its channel at
    ``base_url``: 10 s for each connect, read and write, and no longer in
    all than the call under way has left (:func:`.base.deadline_bound`)."""
    return deadline_bound(httpx.Client(base_url=base_url, timeout=10.0, follow_redirects=False))


@functools.cache
def provider_for(channel: str) -> BasePaymentProvider:
    """The provider of ``channel``; raises :class:`ChannelUnavailable`."""
    config = settings.PAYMENTS_CHANNELS.get(channel)
    if config is None:
        raise ChannelUnavailable(channel)
    credentials = credentials_for(channel)
    if settings.PAYMENTS_SANDBOX:
        from payments.sandbox.channels import transport

        http = httpx.Client(
            base_url=credentials.api_base_url, transport=transport(channel), timeout=10.0
        )
    else:
        http = channel_http(credentials.api_base_url)
    cls: type[BasePaymentProvider] = import_string(config["provider"])
    return cls(credentials, http)


@receiver(setting_changed)
def _forget(setting: str, **kwargs: object) -> None:
    if setting.startswith("PAYMENTS_"):
        provider_for.cache_clear()

"""What every sandbox channel offers, and how to reach one.

A sandbox channel is the remote side of one provider: it answers the
channel's HTTP API (:meth:`SandboxChannel.handle`, reached through an
``httpx.MockTransport``), builds the channel's signed payment callback
(:meth:`SandboxChannel.payment_notify`) and judges our reply to it the way
the channel does (:meth:`SandboxChannel.notify_acknowledged`). It signs with
its own platform key and checks our requests with the merchant's public key,
both from :mod:`payments.sandbox.keys`.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import httpx
from django.conf import settings
from django.utils.module_loading import import_string

from payments.models import SandboxTrade


class SandboxChannel:
    """The remote side of one channel. Subclasses set :attr:`identifier`
    (the channel) and :attr:`notify_schedule`, and implement the methods."""

    identifier: ClassVar[str]
    # Seconds between the channel's tries of a callback that was not
    # acknowledged, as the channel documents them (before compression by
    # PAYMENTS_SANDBOX_TIME_SCALE).
    notify_schedule: ClassVar[tuple[float, ...]]

    def __init__(self) -> None:
        config = settings.PAYMENTS_CHANNELS[self.identifier]
        self.merchant_id: str = config["merchant_id"]
        self.app_id: str = config["app_id"]

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one call of the channel's API, as the channel would."""
        raise NotImplementedError

    def payment_notify(self, trade: SandboxTrade) -> tuple[dict[str, str], bytes] | None:
        """The signed callback of ``trade``'s outcome (headers and body), or
        None where the channel sends none for it (WeChat Pay calls back on
        success only)."""
        raise NotImplementedError

    def notify_acknowledged(self, response: httpx.Response) -> bool:
        """Whether the merchant's reply stops the channel's retries."""
        raise NotImplementedError


SANDBOXES = {
    "wechat": "payments.sandbox.wechat.WechatSandbox",
    "alipay": "payments.sandbox.alipay.AlipaySandbox",
    "unionpay": "payments.sandbox.unionpay.UnionpaySandbox",
}


@functools.cache
def sandbox_for(channel: str) -> SandboxChannel:
    return import_string(SANDBOXES[channel])()


def transport(channel: str) -> httpx.BaseTransport:
    """The transport through which our provider reaches the sandbox."""
    return httpx.MockTransport(sandbox_for(channel).handle)

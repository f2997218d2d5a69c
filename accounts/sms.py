"""SMS gateways, pluggable like Django's email backends.

``SMS_BACKEND`` names one of ``console``, ``file``, ``locmem`` or the dotted
path of a :class:`BaseSmsBackend` subclass (a real provider's adapter).
"""

from __future__ import annotations

import fcntl
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class SmsMessage:
    to: str  # 11-digit mainland mobile number
    text: str
    sent_at: datetime


class SmsDeliveryError(Exception):
    """The gateway did not accept the message; the caller may try again later."""


class BaseSmsBackend:
    """A gateway that sends text messages to mainland mobile numbers.

    Implement :meth:`send`. It is called synchronously from the request that
    asked for the message and must return within a few seconds: raise
    :class:`SmsDeliveryError` when the gateway refuses or cannot be reached,
    so the caller can tell the citizen to try again instead of waiting for a
    code that never comes. ``to`` is always 11 digits, without ``+86``.
    """

    def send(self, message: SmsMessage) -> None:
        raise NotImplementedError


class ConsoleBackend(BaseSmsBackend):
    """Prints each message to standard output (development)."""

    def send(self, message: SmsMessage) -> None:
        sys.stdout.write(f"[sms] to {message.to}: {message.text}\n")
        sys.stdout.flush()


class FileBackend(BaseSmsBackend):
    """Appends one JSON line per message to ``SMS_FILE_PATH``.

    Line format: ``{"to": "13800138000", "text": "...", "sent_at": "<ISO time>"}``.
    Several processes may append at once; each line is written under a lock.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path or settings.SMS_FILE_PATH)

    def send(self, message: SmsMessage) -> None:
        line = json.dumps(
            {"to": message.to, "text": message.text, "sent_at": message.sent_at.isoformat()},
            ensure_ascii=False,
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.write(line + "\n")
        except OSError as exc:
            raise SmsDeliveryError(f"cannot write {self.path}: {exc}") from exc


outbox: list[SmsMessage] = []


class LocmemBackend(BaseSmsBackend):
    """Keeps messages in :data:`outbox` (tests)."""

    def send(self, message: SmsMessage) -> None:
        outbox.append(message)


def get_backend() -> BaseSmsBackend:
    name = settings.SMS_BACKEND
    path = settings.SMS_BACKENDS.get(name, name)
    return import_string(path)()


def send_sms(*, to: str, text: str) -> SmsMessage:
    message = SmsMessage(to=to, text=f"{settings.SMS_SIGNATURE}{text}", sent_at=timezone.now())
    get_backend().send(message)
    return message

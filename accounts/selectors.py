"""Reads of the accounts app."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from accounts import citizen_data
from accounts.models import Message, OtpChallenge, User


def messages_for(user: User, *, unread_only: bool = False) -> QuerySet[Message]:
    messages = Message.objects.filter(user=user)
    if unread_only:
        messages = messages.filter(read_at__isnull=True)
    return messages


def _local(value: dt.datetime | None) -> str | None:
    return timezone.localtime(value).isoformat() if value is not None else None


def profile_export(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "subject": user.subject,
        "phone": user.phone,
        "nickname": user.nickname,
        "email": user.email,
        "identity_level": user.identity_level,
        "real_name": user.real_name,
        "id_number": user.id_number,
        "real_name_verified_at": _local(user.real_name_verified_at),
        "date_joined": _local(user.date_joined),
    }


def login_codes_export(user: User) -> list[dict[str, Any]]:
    """The SMS login codes sent to the citizen's phone (kept two days): when,
    from which address, how they ended; never the code."""
    if not user.phone:
        return []
    return [
        {
            "sent_at": _local(challenge.created_at),
            "expires_at": _local(challenge.expires_at),
            "ip": challenge.ip,
            "attempts": challenge.attempts,
            "closed_at": _local(challenge.closed_at),
            "close_reason": challenge.close_reason,
        }
        for challenge in OtpChallenge.objects.filter(phone=user.phone).order_by("created_at")
    ]


def messages_export(user: User) -> list[dict[str, Any]]:
    return [
        {
            "id": str(message.id),
            "kind": message.kind,
            "title": message.title,
            "body": message.body,
            "data": message.data,
            "created_at": _local(message.created_at),
            "read_at": _local(message.read_at),
        }
        for message in Message.objects.filter(user=user).order_by("created_at", "id")
    ]


def account_export(user: User) -> dict[str, Any]:
    """Everything held about the citizen, unmasked (it is theirs): one
    member per section the apps registered in :mod:`accounts.citizen_data`."""
    return citizen_data.export(user)

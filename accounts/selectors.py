"""Reads of the accounts app."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts import citizen_data
from accounts.models import AuditEntry, Message, OtpChallenge, User


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


def audit_trail_export(user: User) -> list[dict[str, Any]]:
    """The audit trail's entries about the citizen: what they did (with the
    address they did it from) and what was done to their account (by whom
    only as a kind: an operator's name and address are the operator's).
    An entry's ``data`` is shown when it is about the citizen's own account
    or the citizen acted as a citizen (their order, their check); of what
    an operator's account did to others, only the action, the time and the
    kind of object."""
    own = str(user.pk)
    acted = Q(
        actor_kind__in=[AuditEntry.ActorKind.CITIZEN, AuditEntry.ActorKind.OPERATOR],
        actor_id=own,
    )
    label = User._meta.label_lower
    entries = AuditEntry.objects.filter(acted | Q(target_type=label, target_id=own))
    trail = []
    for entry in entries.order_by("at", "id"):
        by_self = entry.actor_id == own and entry.actor_kind != AuditEntry.ActorKind.API_KEY
        about_self = entry.target_type == label and entry.target_id == own
        shown = about_self or (by_self and entry.actor_kind == AuditEntry.ActorKind.CITIZEN)
        trail.append(
            {
                "action": entry.action,
                "at": _local(entry.at),
                "by": "self" if by_self else entry.actor_kind,
                "ip": entry.ip if by_self else None,
                "about": "self" if about_self else entry.target_type,
                "data": entry.data if shown else None,
            }
        )
    return trail

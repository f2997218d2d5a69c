"""Reads of the accounts app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet

from accounts.models import Message, User

ExportSection = Callable[[User], Any]
_export_sections: dict[str, ExportSection] = {}


def register_export_section(name: str, section: ExportSection) -> None:
    """Add a section to every citizen's data export (apps call this in
    ``AppConfig.ready``): ``section(user)`` returns JSON-ready data."""
    _export_sections[name] = section


def messages_for(user: User, *, unread_only: bool = False) -> QuerySet[Message]:
    messages = Message.objects.filter(user=user)
    if unread_only:
        messages = messages.filter(read_at__isnull=True)
    return messages


def account_export(user: User) -> dict[str, Any]:
    """Everything held about the citizen, unmasked: it is theirs."""
    profile = {
        "id": str(user.id),
        "phone": user.phone,
        "nickname": user.nickname,
        "email": user.email,
        "identity_level": user.identity_level,
        "real_name": user.real_name,
        "id_number": user.id_number,
        "real_name_verified_at": user.real_name_verified_at,
        "date_joined": user.date_joined,
    }
    messages = [
        {
            "id": str(message.id),
            "kind": message.kind,
            "title": message.title,
            "body": message.body,
            "data": message.data,
            "created_at": message.created_at,
            "read_at": message.read_at,
        }
        for message in Message.objects.filter(user=user).order_by("created_at")
    ]
    export: dict[str, Any] = {"profile": profile, "messages": messages}
    for name, section in _export_sections.items():
        export[name] = section(user)
    return export

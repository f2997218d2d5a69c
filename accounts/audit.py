"""The audit trail: who changed what, from where."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models

from accounts.models import (
    ApiKey,
    AuditEntry,
    User,
)

# --- Audit trail ------------------------------------------------------------------


def actor_label(actor: User | ApiKey | None) -> str:
    """How the audit trail names who acted: a key as ``<department>:mcs_<prefix>``,
    a person by ``str()`` (an operator's username, a citizen's masked phone),
    the system as ``""``."""
    if actor is None:
        return ""
    if isinstance(actor, ApiKey):
        return f"{actor.department.code}:mcs_{actor.prefix}"
    return str(actor)


def _actor_fields(actor: User | ApiKey | None) -> dict[str, str]:
    if actor is None:
        return {"actor_kind": AuditEntry.ActorKind.SYSTEM, "actor_id": "", "actor_label": ""}
    if isinstance(actor, ApiKey):
        kind = AuditEntry.ActorKind.API_KEY
    else:
        kind = AuditEntry.ActorKind.OPERATOR if actor.is_staff else AuditEntry.ActorKind.CITIZEN
    return {"actor_kind": kind, "actor_id": str(actor.pk), "actor_label": actor_label(actor)}


def audit_record(
    *,
    actor: User | ApiKey | None,
    action: str,
    target: models.Model | None = None,
    data: Mapping[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit trail. ``data`` must not hold raw PII."""
    target_fields = {}
    if target is not None:
        target_fields = {"target_type": target._meta.label_lower, "target_id": str(target.pk)}
    return AuditEntry.objects.create(
        action=action, data=dict(data or {}), ip=ip, **_actor_fields(actor), **target_fields
    )

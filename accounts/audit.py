"""The audit trail: who changed what, from where."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

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


def audit_values(
    before: Mapping[str, Any], after: Mapping[str, Any], shown: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """``{field: {"from": old, "to": new}}`` for the fields in ``shown`` whose
    values differ: what an audit entry of a change keeps besides the changed
    fields' names. Only fields named in ``shown`` (short, neither personal
    data nor secrets); a related row as its key, several as their keys."""
    values = {}
    for name in shown:
        if name not in before or name not in after:
            continue
        old, new = _kept(before[name]), _kept(after[name])
        if old != new:
            values[name] = {"from": old, "to": new}
    return values


# What the audit trail's JSON encoder (DjangoJSONEncoder) writes as it is.
_AS_JSON = (str, int, float, list, dict, dt.date, dt.time, dt.timedelta, Decimal, UUID)


def _kept(value: Any) -> Any:
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, models.QuerySet) or (
        isinstance(value, list | tuple | set)
        and value
        and isinstance(next(iter(value)), models.Model)
    ):
        return sorted((row.pk for row in value), key=str)
    if value is None or isinstance(value, _AS_JSON):
        return value
    return str(value)  # a time zone, a choice object: as the admin shows it

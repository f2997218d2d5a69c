"""Who may act on whose account, and the record of every change of powers.

An account is *privileged* when it can do more than a citizen: staff,
superuser, or holding groups or permissions. Only superusers manage
privileged accounts (change, suspend, reinstate, delete, set a password)
and only they change anyone's powers; every change of powers goes to the
audit trail with its before and after.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied

from accounts.audit import audit_record
from accounts.models import User

# The fields that make an account stronger.
PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "department", "groups", "user_permissions")


def account_is_privileged(user: User) -> bool:
    if user.is_staff or user.is_superuser:
        return True
    if user.pk is None:
        return False
    return user.groups.exists() or user.user_permissions.exists()


def account_may_manage(*, actor: Any, target: User) -> bool:
    """Whether ``actor`` (an operator) may act on ``target``'s account."""
    return bool(getattr(actor, "is_superuser", False)) or not account_is_privileged(target)


def account_check_manageable(*, actor: Any, target: User) -> None:
    if actor is not None and not account_may_manage(actor=actor, target=target):
        raise PermissionDenied("only superusers act on privileged accounts")


def _permission_names(permissions: Any) -> list[str]:
    return sorted(
        f"{p.content_type.app_label}.{p.codename}"
        for p in permissions.select_related("content_type")
    )


def privileges_of(obj: User | Group) -> dict[str, Any]:
    """What an account or group may do, as stored now."""
    if obj.pk is None:
        return {}
    if isinstance(obj, Group):
        return {"permissions": _permission_names(Group.objects.get(pk=obj.pk).permissions)}
    stored = User.objects.get(pk=obj.pk)
    return {
        "is_staff": stored.is_staff,
        "is_superuser": stored.is_superuser,
        "department": stored.department_id,
        "groups": sorted(stored.groups.values_list("name", flat=True)),
        "permissions": _permission_names(stored.user_permissions),
    }


def privileges_audit(
    *, actor: Any, obj: User | Group, before: dict[str, Any], ip: str | None = None
) -> None:
    """An audit entry naming what changed in an account's or group's powers
    since ``before`` (what :func:`privileges_of` said before the change)."""
    after = privileges_of(obj)
    changed = {
        k: {"before": before.get(k), "after": v} for k, v in after.items() if before.get(k) != v
    }
    if changed:
        audit_record(
            actor=actor,
            action=f"admin.{obj._meta.model_name}.privileges_changed",
            target=obj,
            data=changed,
            ip=ip,
        )

"""Departments."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.audit import audit_record
from accounts.models import (
    Department,
    User,
)
from config.pages import catalog_pages

# --- Departments and API keys -------------------------------------------------------------


def department_ensure(
    *, code: str, name: str, actor: User | None = None, **fields: Any
) -> tuple[Department, bool]:
    """Create the department, or bring its name up to date (idempotent)."""
    with transaction.atomic():
        department, created = Department.objects.get_or_create(
            code=code, defaults={"name": name, **fields}
        )
        if created:
            audit_record(
                actor=actor, action="department.created", target=department, data={"name": name}
            )
            catalog_pages.bump()
        elif department.name != name:
            old = department.name
            department.name = name
            department.save(update_fields=["name"])
            audit_record(
                actor=actor,
                action="department.renamed",
                target=department,
                data={"from": old, "to": name},
            )
            catalog_pages.bump()
    return department, created

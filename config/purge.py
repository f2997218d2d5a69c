"""Deleting many old rows without one statement holding them all."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet


def delete_in_batches(rows: QuerySet[Any], *, batch: int = 5000) -> int:
    """Delete ``rows`` ``batch`` at a time (each delete its own statement,
    with what cascades from it); how many of ``rows``' model went."""
    label = rows.model._meta.label
    deleted = 0
    while True:
        ids = list(rows.values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        _, per_model = rows.model._default_manager.filter(pk__in=ids).delete()
        deleted += per_model.get(label, 0)

"""Schema operations for tables that take writes while they change."""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


class _ConcurrentlyOnPostgres:
    """The operation CONCURRENTLY on PostgreSQL, as :attr:`plain` does it
    elsewhere. Its migration must say ``atomic = False``."""

    plain: Any  # the operation without CONCURRENTLY

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            # The PostgreSQL operation this is mixed in before.
            return super().database_forwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        return self.plain.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            # The PostgreSQL operation this is mixed in before.
            return super().database_backwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        return self.plain.database_backwards(self, app_label, schema_editor, from_state, to_state)


class AddIndexConcurrentlyOnPostgres(_ConcurrentlyOnPostgres, AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on PostgreSQL (the table takes writes while
    the index is built); a plain CREATE INDEX elsewhere."""

    plain = migrations.AddIndex


class RemoveIndexConcurrentlyOnPostgres(_ConcurrentlyOnPostgres, RemoveIndexConcurrently):
    """DROP INDEX CONCURRENTLY on PostgreSQL; a plain DROP INDEX elsewhere."""

    plain = migrations.RemoveIndex

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
    the index is built); a plain CREATE INDEX elsewhere.

    A build that failed (a deadlock, a cancelled statement, a duplicate in a
    unique index) leaves PostgreSQL an invalid index of that name, which
    blocks the next try with "already exists" and is still updated on every
    write. Run again, the operation drops that leftover first; a valid index
    of the name is left to the error it gives."""

    plain = migrations.AddIndex

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            _drop_invalid_index(schema_editor, self.index.name)
        super().database_forwards(app_label, schema_editor, from_state, to_state)


def _drop_invalid_index(schema_editor: Any, name: str) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_index JOIN pg_class ON pg_class.oid = pg_index.indexrelid "
            "WHERE pg_class.relname = %s AND pg_class.relnamespace = "
            "to_regnamespace(current_schema()) AND NOT pg_index.indisvalid",
            [name],
        )
        invalid = cursor.fetchone() is not None
    if invalid:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}")


class RemoveIndexConcurrentlyOnPostgres(_ConcurrentlyOnPostgres, RemoveIndexConcurrently):
    """DROP INDEX CONCURRENTLY on PostgreSQL; a plain DROP INDEX elsewhere.
    Undone, it builds the index again as :class:`AddIndexConcurrentlyOnPostgres`
    does, dropping the leftover of a failed build first."""

    plain = migrations.RemoveIndex

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            _drop_invalid_index(schema_editor, self.name)
        super().database_backwards(app_label, schema_editor, from_state, to_state)

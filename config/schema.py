"""Schema operations for tables that take writes while they change."""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


class _ConcurrentlyOnPostgres:
    """The operation CONCURRENTLY on PostgreSQL, as :attr:`plain` does it
    elsewhere. Its migration must say ``atomic = False``.

    A concurrent build that failed (a deadlock, a cancelled statement, a
    duplicate in a unique index) leaves PostgreSQL an invalid index of its
    name, which blocks the next try with "already exists" and is still
    updated on every write. Run again in the direction that builds the
    index (:attr:`builds_when`), the operation drops that leftover first; a
    valid index of the name is left to the error it gives."""

    plain: Any  # the operation without CONCURRENTLY
    builds_when: str  # "forwards" or "backwards": the direction that builds the index

    def _index_name(self) -> str:
        raise NotImplementedError

    def _run(
        self, direction: str, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            run = getattr(self.plain, f"database_{direction}")
            run(self, app_label, schema_editor, from_state, to_state)
            return
        if direction == self.builds_when:
            _drop_invalid_index(schema_editor, self._index_name())
        # The PostgreSQL operation this is mixed in before.
        run = getattr(super(), f"database_{direction}")
        run(app_label, schema_editor, from_state, to_state)

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._run("forwards", app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._run("backwards", app_label, schema_editor, from_state, to_state)


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


class AddIndexConcurrentlyOnPostgres(_ConcurrentlyOnPostgres, AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on PostgreSQL (the table takes writes while
    the index is built); a plain CREATE INDEX elsewhere."""

    plain = migrations.AddIndex
    builds_when = "forwards"

    def _index_name(self) -> str:
        return str(self.index.name)


class RemoveIndexConcurrentlyOnPostgres(_ConcurrentlyOnPostgres, RemoveIndexConcurrently):
    """DROP INDEX CONCURRENTLY on PostgreSQL; a plain DROP INDEX elsewhere.
    Undone, it builds the index again."""

    plain = migrations.RemoveIndex
    builds_when = "backwards"

    def _index_name(self) -> str:
        return str(self.name)


class DropFieldIndexConcurrentlyOnPostgres(migrations.AlterField):
    """A foreign key's own index dropped (``field`` says ``db_index=False``),
    for a key another index already leads with: DROP INDEX CONCURRENTLY on
    PostgreSQL, a plain AlterField elsewhere. Undone, it builds the index
    again, CONCURRENTLY. Its migration must say ``atomic = False``."""

    def _index(self, app_label: str, schema_editor: Any, state: Any) -> tuple[str, str, str]:
        model = state.apps.get_model(app_label, self.model_name)
        column = model._meta.get_field(self.name).column
        table = model._meta.db_table
        # The name Django gave the index (BaseDatabaseSchemaEditor._field_indexes_sql).
        name = schema_editor._create_index_name(table, [column], suffix="")
        return table, column, name

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        _, _, name = self._index(app_label, schema_editor, from_state)
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}")

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
            return
        table, column, name = self._index(app_label, schema_editor, to_state)
        _drop_invalid_index(schema_editor, name)
        q = schema_editor.quote_name
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {q(name)} ON {q(table)} ({q(column)})"
        )


class AnalyzeSoonerOnPostgres(migrations.RunPython):
    """The tables named are analyzed by autovacuum after 1 % of their rows
    (at least 1,000) changed, instead of PostgreSQL's default 10 %: for
    tables whose rows pass through states, where a backlog that arrives
    between two analyses makes the statistics say few rows are pending
    while many are. PostgreSQL only; ``ALTER TABLE … SET`` takes no lock that
    stops reads or writes (SHARE UPDATE EXCLUSIVE). Undone, the defaults."""

    SOONER = "autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 1000"
    SETTINGS = "autovacuum_analyze_scale_factor, autovacuum_analyze_threshold"

    def __init__(self, *tables: str) -> None:
        self.tables = tables
        super().__init__(self._sooner, self._as_by_default, elidable=False)

    def _alter(self, schema_editor: Any, change: str) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for table in self.tables:
                schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} {change}")

    def _sooner(self, apps: Any, schema_editor: Any) -> None:
        self._alter(schema_editor, f"SET ({self.SOONER})")

    def _as_by_default(self, apps: Any, schema_editor: Any) -> None:
        self._alter(schema_editor, f"RESET ({self.SETTINGS})")

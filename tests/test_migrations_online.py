"""Migrations run while the city uses the system: an index added to a
table that already holds rows is built without blocking its reads and
writes (``config.schema.AddIndexConcurrentlyOnPostgres``, in a migration
with ``atomic = False``); a plain ``AddIndex`` only for a table the same
migration creates."""

from __future__ import annotations

from django.db import migrations
from django.db.migrations.loader import MigrationLoader

from config.schema import AddIndexConcurrentlyOnPostgres

# Written before the rule, and applied since: migrations that ran are not
# rewritten.
BEFORE_THE_RULE = {("payments", "0002_notify_inbox", "notify_to_apply")}
APPS = ("accounts", "services", "payments", "qr")


def test_indexes_on_tables_with_rows_are_built_concurrently() -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    blocking, concurrent = [], 0
    for (app, name), migration in sorted(loader.disk_migrations.items()):
        if app not in APPS:
            continue
        created = {
            op.name.lower() for op in migration.operations if isinstance(op, migrations.CreateModel)
        }
        for op in migration.operations:
            if isinstance(op, AddIndexConcurrentlyOnPostgres):
                concurrent += 1
                assert migration.atomic is False, f"{app}.{name}: CONCURRENTLY needs atomic = False"
            elif (
                type(op) is migrations.AddIndex
                and op.model_name.lower() not in created
                and (app, name, op.index.name) not in BEFORE_THE_RULE
            ):
                blocking.append(f"{app}.{name}: {op.index.name}")
    assert blocking == []
    assert concurrent >= 4  # the rule has been followed, and is looked for

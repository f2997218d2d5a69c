"""The concurrent index operations of config.schema, on the database at hand."""

from __future__ import annotations

import pytest
from django.db import connection, models
from django.db.migrations.state import ModelState, ProjectState

from config.schema import (
    AddIndexConcurrentlyOnPostgres,
    DropFieldIndexConcurrentlyOnPostgres,
    RemoveIndexConcurrentlyOnPostgres,
)

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "schema_ops_probe"
INDEX = "schema_ops_probe_name"


@pytest.fixture
def probe_state():
    """A throwaway table and the project state that knows it."""
    state = ProjectState()
    state.add_model(
        ModelState(
            "schema_ops",
            "Probe",
            [("id", models.AutoField(primary_key=True)), ("name", models.CharField(max_length=20))],
            {"db_table": TABLE},
        )
    )
    with connection.schema_editor() as editor:
        editor.create_model(state.apps.get_model("schema_ops", "Probe"))
    yield state
    with connection.schema_editor() as editor:
        editor.delete_model(state.apps.get_model("schema_ops", "Probe"))


def _run(operation, state: ProjectState) -> ProjectState:
    new_state = state.clone()
    operation.state_forwards("schema_ops", new_state)
    with connection.schema_editor(atomic=False) as editor:
        operation.database_forwards("schema_ops", editor, state, new_state)
    return new_state


def _indexes() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, TABLE))


ADD = AddIndexConcurrentlyOnPostgres(
    model_name="probe", index=models.Index(fields=["name"], name=INDEX)
)


def test_the_index_is_added_and_removed(probe_state) -> None:
    added = _run(ADD, probe_state)
    assert INDEX in _indexes()
    _run(RemoveIndexConcurrentlyOnPostgres(model_name="probe", name=INDEX), added)
    assert INDEX not in _indexes()


def _invalid(index: str = INDEX) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [index]
        )
        return cursor.fetchone()[0]


def _failed_build(index: str, table: str, column: str) -> None:
    """What a failed CREATE INDEX CONCURRENTLY leaves: an invalid index of
    the name (marked so here, as PostgreSQL marks it when the build fails)."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX {index} ON {table} ({column})")
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", [index]
        )


@pytest.mark.integration
def test_a_failed_concurrent_build_is_dropped_and_built_again(probe_state) -> None:
    _failed_build(INDEX, TABLE, "name")
    assert _invalid()
    _run(ADD, probe_state)
    assert INDEX in _indexes()
    assert not _invalid()


@pytest.mark.integration
def test_a_valid_index_of_the_name_is_left_to_the_error(probe_state) -> None:
    from django.db import ProgrammingError

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX {INDEX} ON {TABLE} (name)")
    with pytest.raises(ProgrammingError, match="already exists"):
        _run(ADD, probe_state)
    assert not _invalid()


@pytest.mark.integration
def test_undoing_a_removal_after_a_failed_build_builds_it_again(probe_state) -> None:
    added = _run(ADD, probe_state)
    remove = RemoveIndexConcurrentlyOnPostgres(model_name="probe", name=INDEX)
    removed = _run(remove, added)
    _failed_build(INDEX, TABLE, "name")  # a build of it that failed, undoing before
    with connection.schema_editor(atomic=False) as editor:
        remove.database_backwards("schema_ops", editor, removed, added)
    assert INDEX in _indexes()
    assert not _invalid()


# --- A foreign key's own index -----------------------------------------------------------------

HOLDER = "schema_ops_holder"


@pytest.fixture
def keyed_state():
    """A throwaway table with a foreign key indexed on its own, and the
    project state that knows it."""
    state = ProjectState()
    state.add_model(
        ModelState("schema_ops", "Target", [("id", models.AutoField(primary_key=True))], {})
    )
    state.add_model(
        ModelState(
            "schema_ops",
            "Holder",
            [
                ("id", models.AutoField(primary_key=True)),
                ("target", models.ForeignKey("schema_ops.Target", on_delete=models.PROTECT)),
            ],
            {"db_table": HOLDER},
        )
    )
    with connection.schema_editor() as editor:
        editor.create_model(state.apps.get_model("schema_ops", "Target"))
        editor.create_model(state.apps.get_model("schema_ops", "Holder"))
    yield state
    with connection.schema_editor() as editor:
        editor.delete_model(state.apps.get_model("schema_ops", "Holder"))
        editor.delete_model(state.apps.get_model("schema_ops", "Target"))


def _key_indexes() -> list[str]:
    """The holder's indexes of its key alone (not the key's constraint)."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, HOLDER)
    return [
        name
        for name, about in found.items()
        if about["index"] and about["columns"] == ["target_id"] and not about["foreign_key"]
    ]


DROP_KEY_INDEX = DropFieldIndexConcurrentlyOnPostgres(
    model_name="holder",
    name="target",
    field=models.ForeignKey("schema_ops.Target", on_delete=models.PROTECT, db_index=False),
)


def test_a_keys_own_index_is_dropped_and_built_again(keyed_state) -> None:
    [index] = _key_indexes()
    dropped = _run(DROP_KEY_INDEX, keyed_state)
    assert _key_indexes() == []
    assert dropped.models["schema_ops", "holder"].fields["target"].db_index is False
    with connection.schema_editor(atomic=False) as editor:
        DROP_KEY_INDEX.database_backwards("schema_ops", editor, dropped, keyed_state)
    assert _key_indexes() == [index]  # the name Django gives it


@pytest.mark.integration
def test_undoing_the_drop_after_a_failed_build_builds_it_again(keyed_state) -> None:
    [index] = _key_indexes()
    dropped = _run(DROP_KEY_INDEX, keyed_state)
    _failed_build(index, HOLDER, "target_id")  # a build of it that failed, undoing before
    with connection.schema_editor(atomic=False) as editor:
        DROP_KEY_INDEX.database_backwards("schema_ops", editor, dropped, keyed_state)
    assert _key_indexes() == [index]
    assert not _invalid(index)

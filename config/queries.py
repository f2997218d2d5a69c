"""Query shapes the apps share: a row value compared as a whole, an
equality no index can take as a condition, and new rows of several tables
written in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models import AutoField, Field, Func, Q, QuerySet
from django.db.models.sql import InsertQuery
from django.db.transaction import TransactionManagementError


class Row(Func):
    """A row value, ``(a, b)``, compared as a whole."""

    function = ""
    output_field = Field()


def other_values(value: models.Choices) -> list[Any]:
    """Every value of ``value``'s choices but it."""
    return [choice.value for choice in type(value) if choice != value]


def equal_unindexed(field: str, value: models.Choices) -> Q:
    """``field = value``, said as none of the choices' other values: a
    condition no btree index can take, only a filter on the rows a lookup by
    key finds (one row, an application's orders, an application's earlier
    events).

    Said as ``field = value``, PostgreSQL may read every row of that value
    along an index led by the field (a status's queue index) for each lookup,
    and it does when its statistics are older than a backlog: taken when few
    rows had the value (or before any), they make that walk look as cheap as
    the lookup. A delivery worker's claim of 32 at a backlog of 10,000 read
    320,000 rows (111 ms instead of 0.6 ms). Exact as long as the column
    holds only the choices' values."""
    return ~Q(**{f"{field}__in": other_values(value)})


def rows_insert(
    groups: Sequence[Sequence[models.Model]],
    *,
    held: QuerySet[Any, Any],
    refused: Exception,
    using: str = DEFAULT_DB_ALIAS,
) -> None:
    """Insert new rows, each group of one model, in the order given, once
    ``held`` (a ``select_for_update`` queryset) has found and locked a row;
    if it finds none, raise ``refused``. The caller's ``transaction.atomic``
    block must let the exception through: on PostgreSQL the rows were
    written by then, and its rollback takes them back.

    On PostgreSQL this is one statement: ``held`` and every group's
    ``INSERT`` as the parts of one ``WITH``, one round trip and one plan
    instead of one each (a submit, with its application, timeline entry,
    message and event written this way, took 1.2 to 1.3 ms of the
    database's CPU instead of 1.5 to 1.8). Elsewhere ``held`` is asked first, then one
    ``bulk_create`` per group. Either way the rows end as ``bulk_create``
    leaves them: saved, their keys (auto ones too) set. As with
    ``bulk_create``, no ``save()`` is called and no signal sent; of what
    the database fills in, keys are read back (a group's rows all have
    their key, or none has); other database defaults are read back only
    where ``bulk_create`` does it (not on PostgreSQL): give their values."""
    connection = connections[using]
    if not connection.in_atomic_block:
        raise TransactionManagementError("rows_insert needs the caller's transaction")
    rows = [list(group) for group in groups if group]
    if any(len({obj.pk is None for obj in group}) > 1 for group in rows):
        raise ValueError("a group's rows all have their key, or none has")
    if connection.vendor != "postgresql":
        if not held.using(using):
            raise refused
        for group in rows:
            type(group[0])._default_manager.using(using).bulk_create(group)
        return
    held_sql, held_params = held.query.get_compiler(using=using).as_sql()
    parts, params = [f"held AS ({held_sql})"], list(held_params)
    returned: list[tuple[str, list[models.Model], list[Field[Any, Any]]]] = []
    for n, group in enumerate(rows):
        model = type(group[0])
        opts = model._meta
        for obj in group:
            if obj.pk is None:
                obj.pk = opts.pk.get_pk_value_on_save(obj)  # type: ignore[attr-defined]
            obj._prepare_related_fields_for_save(operation_name="bulk_create")  # type: ignore[attr-defined]
        fields = [f for f in opts.concrete_fields if not f.generated]
        returning: list[Field[Any, Any]] = []
        if group[0].pk is None:  # a key the database gives
            fields = [f for f in fields if not isinstance(f, AutoField)]
            returning = [opts.pk]
        query = InsertQuery(model)
        query.insert_values(fields, group)
        compiler = query.get_compiler(using=using)
        compiler.returning_fields = returning or None
        ((insert_sql, insert_params),) = compiler.as_sql()
        parts.append(f"w{n} AS ({insert_sql})")
        params.extend(insert_params)
        if returning:
            returned.append((f"w{n}", group, returning))
    columns = ["(SELECT count(*) FROM held)"] + [
        f"(SELECT array_agg({connection.ops.quote_name(field.column)}) FROM {name})"
        for name, _group, fields in returned
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT {', '.join(columns)}", params)
        found, *values = cursor.fetchone()
    if not found:
        raise refused
    values.reverse()
    for _name, group, fields in returned:
        for field in fields:
            for obj, value in zip(group, values.pop(), strict=True):
                setattr(obj, field.attname, value)
    for group in rows:
        for obj in group:
            obj._state.adding = False
            obj._state.db = using

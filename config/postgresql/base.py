"""Django's PostgreSQL backend, its bulk statements cut to what one
statement can carry when PostgreSQL binds the parameters.

With server-side binding (``DATABASE_PREPARED_STATEMENTS``, on by default)
every value travels as a parameter of the statement, and PostgreSQL's
protocol carries at most 65,535 in one: a statement with more fails
("number of parameters must be between 0 and 65535"). Django's backend
bounds none of its bulk statements: a bulk update of 25,000 rows of one
field (3 values a row) failed, as did a bulk insert of 10,000 rows of 8
fields whose values are written row by row (one holding an expression,
or a field with its own placeholder; plain values go as one array a
field, ``UNNEST``, whatever the rows). Here bulk updates, bulk inserts
and the batches of a delete's cascade are cut to fit. Not covered: a
relation set to NULL on delete is updated in one statement for the whole
delete (delete many rows others point at that way in batches, as
``config.purge.delete_in_batches`` does), and statements the apps write
themselves (``filter(pk__in=…)`` with a list) are bounded where they are
written."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base, operations

# The most parameters one statement may carry (the protocol's 16-bit count).
MAX_PARAMETERS = 65535


class DatabaseOperations(operations.DatabaseOperations):
    def bulk_batch_size(self, fields: Any, objs: Any) -> int:
        if not self.connection.features.uses_server_side_binding:  # type: ignore[attr-defined]  # PostgreSQL's features; not in the stubs
            return super().bulk_batch_size(fields, objs)
        if len(fields) > 2 and fields[0] is fields[1]:
            # bulk_update's [pk, pk, *fields]: a key and a value a field and
            # row (CASE WHEN key THEN value), and the key once more.
            per_row = 2 * len(fields)
        else:
            # An insert written row by row, one value a field; a delete's
            # batch, one key a row.
            per_row = max(1, len(fields))
        return max(1, min(len(objs), MAX_PARAMETERS // per_row))


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

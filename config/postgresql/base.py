"""Django's PostgreSQL backend, its bulk statements cut to what one
statement can carry when PostgreSQL binds the parameters.

With server-side binding (``DATABASE_PREPARED_STATEMENTS``, on by default)
every value travels as a parameter of the statement, and PostgreSQL's
protocol carries at most 65,535 in one: a statement with more fails
("number of parameters must be between 0 and 65535"). Django's backend
puts no bound on its bulk inserts, bulk updates or the deletes of what a
delete cascades to, so a reconciliation storing 70,000 mismatches, or an
operator deleting a row that 70,000 others hang on, would fail. Here each
of those is cut into batches of at most that many values. Statements the
apps write themselves (``filter(pk__in=…)`` with a list) are bounded where
they are written."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base, operations

# The most parameters one statement may carry (the protocol's 16-bit count).
MAX_PARAMETERS = 65535


class DatabaseOperations(operations.DatabaseOperations):
    def bulk_batch_size(self, fields: Any, objs: Any) -> int:
        if not self.connection.features.uses_server_side_binding:  # type: ignore[attr-defined]  # PostgreSQL's features; not in the stubs
            return super().bulk_batch_size(fields, objs)
        # At most two values a field and row: bulk_update's CASE takes a key
        # and a value for each of its fields, bulk_create one value each.
        per_row = 2 * max(1, len(fields))
        return max(1, min(len(objs), MAX_PARAMETERS // per_row))


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

"""``Delivery.department`` NOT NULL, and its foreign keys checked (0014 added
them unchecked), without blocking the deliveries written meanwhile.

On PostgreSQL each step is its own statement and transaction: the keys
validated (a read that lets writes go on), a CHECK that the column is set,
added unchecked and then validated the same way, so that SET NOT NULL
takes its lock only for a moment (it reads no row when a valid CHECK says
so), and the CHECK dropped. A lock is waited for at most 5 s, as in 0014:
the CHECK's addition, SET NOT NULL and the CHECK's removal each hold the
table for a moment, and queued behind a long transaction they would hold
every delivery read and write queued behind them; better to fail and be
run again. Run again after a failure, each step finds what the one before
left. Elsewhere (SQLite) the plain ``AlterField``."""

import django.db.models.deletion
from django.db import migrations, models

FORWARDS = (
    "ALTER TABLE services_delivery VALIDATE CONSTRAINT "
    "services_delivery_department_id_fk_accounts_department_id",
    "ALTER TABLE services_delivery VALIDATE CONSTRAINT delivery_endpoint_department",
    "ALTER TABLE services_delivery DROP CONSTRAINT IF EXISTS delivery_department_set",
    "ALTER TABLE services_delivery ADD CONSTRAINT delivery_department_set "
    "CHECK (department_id IS NOT NULL) NOT VALID",
    "ALTER TABLE services_delivery VALIDATE CONSTRAINT delivery_department_set",
    "ALTER TABLE services_delivery ALTER COLUMN department_id SET NOT NULL",
    "ALTER TABLE services_delivery DROP CONSTRAINT delivery_department_set",
)

BACKWARDS = ("ALTER TABLE services_delivery ALTER COLUMN department_id DROP NOT NULL",)


class RequireDepartmentOnPostgres(migrations.AlterField):
    """NOT NULL as the module says on PostgreSQL; ``AlterField`` elsewhere
    (which on PostgreSQL would drop the foreign key and add it again,
    reading every row while holding the table)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        schema_editor.execute("SET lock_timeout = '5s'")
        try:
            for statement in FORWARDS:
                schema_editor.execute(statement)
        finally:
            schema_editor.execute("RESET lock_timeout")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
            return
        for statement in BACKWARDS:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    # Each step in a transaction of its own.
    atomic = False

    dependencies = [
        ("services", "0020_delivery_endpoint_status"),
    ]

    operations = [
        RequireDepartmentOnPostgres(
            model_name="delivery",
            name="department",
            field=models.ForeignKey(
                db_index=False,
                editable=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="deliveries",
                to="accounts.department",
                verbose_name="部门",
            ),
        ),
    ]

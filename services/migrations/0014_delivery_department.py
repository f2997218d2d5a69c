"""Deliveries hold their endpoint's department (``Delivery.department``), so
that a department's list is read along indexes of its own, in its order
(0016 to 0020), instead of every delivery of its endpoints, sorted for
each page.

On PostgreSQL the column is added without reading the table, which takes
deliveries all the while (a lock on it waited for at most 5 s: a longer
transaction in the way fails the migration, to be run again, rather than
queueing every delivery behind it): nullable, no index (0016 and 0017 build theirs
``CONCURRENTLY``), its foreign keys ``NOT VALID`` (0021 checks them without
blocking writes). The keys: the department, and the pair (endpoint,
department) to the endpoint's own pair (``endpoint_department``, added
here), so that a delivery's department is its endpoint's and an endpoint
with deliveries cannot move to another department. A trigger gives a
delivery inserted without a department its endpoint's: code from before
the column (web nodes and workers still running it while the upgrade rolls
out) writes them so, and none stays empty after 0015 has filled the ones
made before; 0021 makes the column NOT NULL. Elsewhere (SQLite) the plain
``AddField``."""

import django.db.models.deletion
from django.db import migrations, models

FORWARDS = (
    # Waiting longer for a lock would hold every delivery read and write
    # queued behind this one: better to fail, and be run again.
    "SET LOCAL lock_timeout = '5s'",
    "ALTER TABLE services_delivery ADD COLUMN department_id bigint NULL",
    "ALTER TABLE services_delivery ADD CONSTRAINT "
    "services_delivery_department_id_fk_accounts_department_id FOREIGN KEY (department_id) "
    "REFERENCES accounts_department (id) DEFERRABLE INITIALLY DEFERRED NOT VALID",
    "CREATE FUNCTION services_delivery_department() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "SELECT department_id INTO NEW.department_id FROM services_endpoint "
    "WHERE id = NEW.endpoint_id; "
    "RETURN NEW; "
    "END $$",
    "CREATE TRIGGER delivery_department BEFORE INSERT ON services_delivery "
    "FOR EACH ROW WHEN (NEW.department_id IS NULL) "
    "EXECUTE FUNCTION services_delivery_department()",
)

PAIR_KEY = (
    "ALTER TABLE services_delivery ADD CONSTRAINT delivery_endpoint_department "
    "FOREIGN KEY (endpoint_id, department_id) REFERENCES services_endpoint (id, department_id) "
    "NOT VALID"
)


def pair_key(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PAIR_KEY)


def pair_key_dropped(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE services_delivery DROP CONSTRAINT IF EXISTS delivery_endpoint_department"
        )


BACKWARDS = (
    "DROP TRIGGER delivery_department ON services_delivery",
    "DROP FUNCTION services_delivery_department()",
    "ALTER TABLE services_delivery DROP COLUMN department_id",
)


class AddDepartmentOnPostgres(migrations.AddField):
    """The column as the module says on PostgreSQL; ``AddField`` elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        for statement in FORWARDS:
            schema_editor.execute(statement)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
            return
        for statement in BACKWARDS:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("services", "0013_outbox_ping_age"),
    ]

    # The deliveries' table is taken first, then the endpoints': the order in
    # which a delivery worker recording its batch takes them (rows of the
    # first, then an update of the second). Taken the other way, the
    # migration and a worker waited for each other (a deadlock: the worker's
    # batch was sent again).
    operations = [
        migrations.AlterField(
            model_name="endpoint",
            name="department",
            field=models.ForeignKey(
                editable=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="endpoints",
                to="accounts.department",
                verbose_name="部门",
            ),
        ),
        AddDepartmentOnPostgres(
            model_name="delivery",
            name="department",
            field=models.ForeignKey(
                db_index=False,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="deliveries",
                to="accounts.department",
                verbose_name="部门",
            ),
        ),
        migrations.AddConstraint(
            model_name="endpoint",
            constraint=models.UniqueConstraint(
                fields=("id", "department"), name="endpoint_department"
            ),
        ),
        migrations.RunPython(pair_key, pair_key_dropped, elidable=False),
    ]

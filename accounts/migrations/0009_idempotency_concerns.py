"""Stored answers name the citizen whose data they hold when they were kept
under another caller's key (``IdempotencyRecord.concerns``: a department's
status report answers with the applicant's identity), so that closing the
account erases them too (accounts.idempotency.idempotency_records_erase).

The column is nullable, without a default or a constraint in the database:
on PostgreSQL adding it reads no row and writing a record takes no lock on
the citizen's row; the lock it takes is waited for at most 5 s (queued
behind a long transaction it would hold every retry's look-up behind it:
better to fail and be run again). Its index is built in 0010, without
blocking the table. Web nodes still running the code before it (a rolling
deploy) keep inserting records without it."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def lock_waited_for_briefly(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0008_otp_challenge_attempts_elsewhere"),
    ]

    operations = [
        migrations.RunPython(lock_waited_for_briefly, migrations.RunPython.noop),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="concerns",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]

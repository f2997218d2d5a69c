"""Orders owed a close at their channel. The column has a default of its
own in the database, so adding it reads no row; the lock it takes is
waited for at most 5 s (queued behind a long transaction it would hold
every order read and write queued behind it: better to fail and be run
again). Its index is built in 0011, without blocking the table."""

from django.db import migrations, models


def lock_waited_for_briefly(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0009_queue_tables_analyzed_sooner"),
    ]

    operations = [
        migrations.RunPython(lock_waited_for_briefly, migrations.RunPython.noop),
        migrations.AddField(
            model_name="paymentorder",
            name="channel_close_owed",
            field=models.BooleanField(
                db_default=False, default=False, editable=False, verbose_name="待渠道关单"
            ),
        ),
    ]

from django.db import migrations

from config.schema import RemoveIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction; one operation per
    # migration, so that one that fails (a lock or statement timeout) is
    # run again alone, after the ones recorded as done.
    atomic = False

    dependencies = [
        ("services", "0010_application_dept_status"),
    ]

    operations = [
        RemoveIndexConcurrentlyOnPostgres(
            model_name="application",
            name="application_dept_recent",
        ),
    ]

from django.db import migrations, models

from config.schema import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction; one operation per
    # migration, so that one that fails (a lock or statement timeout) is
    # run again alone, after the ones recorded as done.
    atomic = False

    dependencies = [
        ("services", "0012_remove_application_dept_feed"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(("type", "ping")),
                fields=["created_at"],
                name="outbox_ping_age",
            ),
        ),
    ]

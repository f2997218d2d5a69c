from django.db import migrations, models

from config.schema import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction; one operation per
    # migration, so that one that fails (a lock or statement timeout) is
    # run again alone, after the ones recorded as done.
    atomic = False

    dependencies = [
        ("services", "0008_service_offline_hold"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="application",
            index=models.Index(
                condition=models.Q(("submitted_at__isnull", False)),
                fields=["department", "-submitted_at"],
                name="application_dept_queue",
            ),
        ),
    ]

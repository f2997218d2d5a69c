from django.db import migrations, models

from config.schema import AddIndexConcurrentlyOnPostgres, RemoveIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction.
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
        AddIndexConcurrentlyOnPostgres(
            model_name="application",
            index=models.Index(
                condition=models.Q(("submitted_at__isnull", False)),
                fields=["department", "status", "-submitted_at"],
                name="application_dept_status",
            ),
        ),
        RemoveIndexConcurrentlyOnPostgres(
            model_name="application",
            name="application_dept_recent",
        ),
        RemoveIndexConcurrentlyOnPostgres(
            model_name="application",
            name="application_dept_feed",
        ),
    ]

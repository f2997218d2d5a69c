from django.db import migrations, models

from config.schema import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("services", "0004_delivery_order"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="application",
            index=models.Index(
                condition=models.Q(("submitted_at__isnull", False)),
                fields=["department", "-created_at"],
                name="application_dept_recent",
            ),
        ),
    ]

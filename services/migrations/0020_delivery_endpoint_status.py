from django.db import migrations, models

from config.schema import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction; one operation per
    # migration, so that one that fails (a lock or statement timeout) is
    # run again alone, after the ones recorded as done.
    atomic = False

    dependencies = [
        ("services", "0019_remove_delivery_endpoint_feed"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="delivery",
            index=models.Index(
                fields=["endpoint", "status", "-created_at", "-id"],
                name="delivery_endpoint_status",
            ),
        ),
    ]

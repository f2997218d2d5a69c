from django.db import migrations

from config.schema import RemoveIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction; one operation per
    # migration, so that one that fails (a lock or statement timeout) is
    # run again alone, after the ones recorded as done.
    atomic = False

    dependencies = [
        ("services", "0018_delivery_endpoint_recent"),
    ]

    operations = [
        RemoveIndexConcurrentlyOnPostgres(
            model_name="delivery",
            name="delivery_endpoint_feed",
        ),
    ]

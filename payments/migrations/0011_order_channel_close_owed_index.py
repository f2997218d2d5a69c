"""The orders owed a close at their channel, for the sweep: a partial
index (only those rows), built without blocking the orders' reads and
writes."""

from django.db import migrations, models

from config.schema import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("payments", "0010_order_channel_close_owed"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="paymentorder",
            index=models.Index(
                condition=models.Q(("channel_close_owed", True)),
                fields=["expires_at"],
                name="payment_channel_close_owed",
            ),
        ),
    ]

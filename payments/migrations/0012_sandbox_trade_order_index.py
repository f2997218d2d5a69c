"""The sandbox's trades by channel and order number (the cashier's lookup),
built without blocking the table's reads and writes."""

from django.db import migrations, models

from config.schema import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("payments", "0011_order_channel_close_owed_index"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="sandboxtrade",
            index=models.Index(fields=["channel", "order_no"], name="sandbox_trade_order"),
        ),
    ]

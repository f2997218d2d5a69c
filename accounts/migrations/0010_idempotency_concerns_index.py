"""The stored answers about a citizen, for the account's closing: a partial
index (only the records that name one), built without blocking the
records' reads and writes."""

from django.db import migrations, models

from config.schema import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("accounts", "0009_idempotency_concerns"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="idempotencyrecord",
            index=models.Index(
                condition=models.Q(("concerns__isnull", False)),
                fields=["concerns"],
                name="idempotency_concerns",
            ),
        ),
    ]

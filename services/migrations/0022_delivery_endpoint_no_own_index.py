import django.db.models.deletion
from django.db import migrations, models

from config.schema import DropFieldIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction; one operation per
    # migration, so that one that fails (a lock or statement timeout) is
    # run again alone, after the ones recorded as done.
    atomic = False

    dependencies = [
        ("services", "0021_delivery_department_required"),
    ]

    operations = [
        DropFieldIndexConcurrentlyOnPostgres(
            model_name="delivery",
            name="endpoint",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="deliveries",
                to="services.endpoint",
                verbose_name="回调地址",
            ),
        ),
    ]

"""The deliveries made before ``Delivery.department`` take their endpoint's,
in batches along the primary key, each its own short transaction: the table
takes deliveries meanwhile, and no batch holds its rows' locks for long.
Deliveries inserted meanwhile have theirs already (the code sets it; on
PostgreSQL 0014's trigger fills it for code from before it)."""

from django.db import migrations, transaction
from django.db.models import OuterRef, Subquery

BATCH = 5000


def fill_departments(apps, schema_editor):
    Delivery = apps.get_model("services", "Delivery")
    Endpoint = apps.get_model("services", "Endpoint")
    of_endpoint = Subquery(
        Endpoint.objects.filter(pk=OuterRef("endpoint_id")).values("department_id")[:1]
    )
    last = None
    while True:
        page = Delivery.objects.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        ids = list(page.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return
        with transaction.atomic():
            Delivery.objects.filter(
                pk__gte=ids[0], pk__lte=ids[-1], department__isnull=True
            ).update(department=of_endpoint)
        last = ids[-1]


class Migration(migrations.Migration):
    # Batch by batch, each committed.
    atomic = False

    dependencies = [
        ("services", "0014_delivery_department"),
    ]

    operations = [
        migrations.RunPython(fill_departments, migrations.RunPython.noop),
    ]

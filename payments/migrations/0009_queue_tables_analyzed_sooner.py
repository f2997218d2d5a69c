"""Orders, refunds and callbacks analyzed after 1 % of their rows changed
(config.schema.AnalyzeSoonerOnPostgres), as services 0024 does for
deliveries: a burst of pending orders or received callbacks between two
analyses left statistics that said few were pending."""

from django.db import migrations

from config.schema import AnalyzeSoonerOnPostgres


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0008_refund_automatic"),
    ]

    operations = [
        AnalyzeSoonerOnPostgres("payments_paymentorder", "payments_refund", "payments_notifylog"),
    ]

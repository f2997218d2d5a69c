"""Orders, refunds and callbacks are analyzed after 1 % of their rows (at
least 1,000) changed, instead of PostgreSQL's default 10 %, as services 0024
does for deliveries: a burst of pending orders or received callbacks between
two analyses leaves statistics that say few are pending, and a list filtered
by status then reads the whole burst for a page. PostgreSQL only; the
setting takes no lock that stops reads or writes."""

from django.db import migrations

TABLES = ("payments_paymentorder", "payments_refund", "payments_notifylog")
SOONER = "autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 1000"


def analyzed_sooner(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET ({SOONER})")


def analyzed_as_by_default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(
                f"ALTER TABLE {schema_editor.quote_name(table)} RESET "
                "(autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)"
            )


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0008_refund_automatic"),
    ]

    operations = [
        migrations.RunPython(analyzed_sooner, analyzed_as_by_default, elidable=False),
    ]

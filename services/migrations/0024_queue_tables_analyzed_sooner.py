"""The tables whose rows pass through states (deliveries, events,
applications) are analyzed after 1 % of their rows (at least 1,000) changed,
instead of PostgreSQL's default 10 %: a backlog that arrives between two
analyses (an endpoint switched back on, a burst of submissions) makes the
statistics say that few rows are pending while many are, and a plan read on
those statistics can read the whole backlog for each row it looks at. The
routing code is written not to depend on it (see
services.routing.outbox.pending_as_filter); the lists filtered by status
read along their indexes sooner. PostgreSQL only; the setting takes no lock
that stops reads or writes (SHARE UPDATE EXCLUSIVE)."""

from django.db import migrations

TABLES = ("services_delivery", "services_outboxevent", "services_application")
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
        ("services", "0023_delivery_event_no_own_index"),
    ]

    operations = [
        migrations.RunPython(analyzed_sooner, analyzed_as_by_default, elidable=False),
    ]

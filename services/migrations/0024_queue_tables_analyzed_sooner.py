"""Deliveries, events and applications analyzed after 1 % of their rows
changed (config.schema.AnalyzeSoonerOnPostgres): a backlog that arrives
between two analyses (an endpoint switched back on, a burst of submissions)
made the statistics say few rows were pending, and a list filtered by
status read the whole backlog for a page. The routing code is written not
to depend on it (see services.routing.outbox.pending_as_filter)."""

from django.db import migrations

from config.schema import AnalyzeSoonerOnPostgres


class Migration(migrations.Migration):
    dependencies = [
        ("services", "0023_delivery_event_no_own_index"),
    ]

    operations = [
        AnalyzeSoonerOnPostgres(
            "services_delivery", "services_outboxevent", "services_application"
        ),
    ]

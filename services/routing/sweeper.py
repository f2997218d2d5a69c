"""Periodic work (beat): the sweep that nudges again whatever is due and not
in hand, the probes that ping paused endpoints until they answer, and the
purge of old pings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, F, Q, UUIDField, Value
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from config.queries import Row
from services.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint, OutboxEvent
from services.routing import endpoints, events, outbox


def deliveries_sweep(*, limit: int = 500) -> dict[str, int]:
    """Nudge again whatever is due and not in hand: deliveries whose nudge
    was lost, events whose subscribers have not run."""
    now = timezone.now()
    grace = dt.timedelta(seconds=settings.ROUTING_SWEEP_GRACE_SECONDS)
    due = list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now - grace)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - grace))
        # One waiting for an earlier event is left alone: that one's end
        # nudges it (and, if that nudge is lost, a later sweep finds it).
        .filter(~outbox.delivery_waits_for_earlier())
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    Delivery.objects.filter(pk__in=due).update(enqueued_at=now)
    unhandled = list(
        OutboxEvent.objects.filter(handled_at__isnull=True, created_at__lte=now - grace)
        .filter(Q(handle_after__isnull=True) | Q(handle_after__lte=now))
        .order_by("created_at")
        .values_list("id", flat=True)[:limit]
    )
    # One wake takes them all, batch after batch (a nudge per row would cost
    # a task each); forced, as the mark may be what a lost wake left behind.
    woken = outbox.deliveries_wake(force=True) if due else True
    sent = woken and outbox.events_nudge([str(i) for i in unhandled])
    if not sent:
        # The rows stay due; the next sweep tries again.
        Delivery.objects.filter(pk__in=due).update(enqueued_at=None)
        return {"deliveries": 0, "events": 0}
    return {"deliveries": len(due), "events": len(unhandled)}


def endpoints_probe_paused() -> int:
    """Ping every paused endpoint whose last probe is older than the probe
    interval; the ping's success resumes it."""
    now = timezone.now()
    interval = dt.timedelta(seconds=settings.ROUTING_PROBE_INTERVAL_SECONDS)
    paused = Endpoint.objects.filter(
        paused_at__isnull=False, is_active=True, deleted_at=None
    ).filter(Q(last_probe_at__isnull=True) | Q(last_probe_at__lt=now - interval))
    count = 0
    for endpoint in paused:
        Endpoint.objects.filter(pk=endpoint.pk).update(last_probe_at=now)
        endpoints.endpoint_ping(endpoint=endpoint, actor=None)
        count += 1
    return count


def pings_purge(*, older_than: dt.timedelta | None = None, batch: int = 1000) -> int:
    """Delete ``ping`` events older than ``ROUTING_PING_RETENTION_DAYS``
    (unless ``older_than``) that are finished (no delivery of theirs still
    pending), with their deliveries and attempts, ``batch`` events at a time
    (each batch its own transaction); how many events went.

    A paused endpoint is pinged every ``ROUTING_PROBE_INTERVAL_SECONDS`` for
    as long as it stays paused, and a department's ``/test/`` pings are
    tests: neither is anyone's record. Events of applications and payments,
    and their deliveries, are the department's record and are never purged."""
    if older_than is None:
        older_than = dt.timedelta(days=settings.ROUTING_PING_RETENTION_DAYS)
    cutoff = timezone.now() - older_than
    old = OutboxEvent.objects.filter(
        type=events.PING, created_at__lt=cutoff, handled_at__isnull=False
    ).order_by("created_at", "pk")
    purged = 0
    after: tuple[dt.datetime, Any] | None = None
    while True:
        with transaction.atomic():
            # Walked along outbox_ping_age, past the ones still pending. The
            # pending ones are found among each batch's own deliveries: asked
            # of each old ping as a NOT EXISTS, PostgreSQL with statistics
            # older than a backlog compared every old ping with every pending
            # delivery (5.7 s for a batch against 20,000 pending).
            page = old if after is None else old.filter(_after(*after))
            picked = list(page.values_list("created_at", "pk")[:batch])
            if not picked:
                return purged
            after = picked[-1]
            ids = [pk for _, pk in picked]
            # A ping with a delivery pending (in flight, or replayed) stays,
            # with its deliveries. Only finished deliveries are locked, as
            # every other writer of deliveries writes pending ones: one
            # replayed after this read is pending again when its lock is
            # taken, so it is not locked, and keeps its event.
            busy = set(
                Delivery.objects.filter(event_id__in=ids)
                .filter(outbox.pending_as_filter())
                .values_list("event_id", flat=True)
            )
            done = list(
                Delivery.objects.select_for_update()
                .filter(event_id__in=[pk for pk in ids if pk not in busy])
                .exclude(status=DeliveryStatus.PENDING)  # not a condition an index takes
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            DeliveryAttempt.objects.filter(delivery_id__in=done).delete()
            Delivery.objects.filter(pk__in=done).delete()
            _, per_model = OutboxEvent.objects.filter(
                pk__in=[pk for pk in ids if pk not in busy], deliveries__isnull=True
            ).delete()
            purged += per_model.get(OutboxEvent._meta.label, 0)


def _after(created_at: dt.datetime, pk: Any) -> GreaterThan:
    """Past (created_at, pk), compared as one row value: a range along
    outbox_ping_age (an OR of the two fields' comparisons read every event)."""
    return GreaterThan(
        Row(F("created_at"), F("pk")),
        Row(Value(created_at, output_field=DateTimeField()), Value(pk, output_field=UUIDField())),
    )

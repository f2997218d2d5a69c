"""Periodic work (beat): the sweep that nudges again whatever is due and not
in hand, the probes that ping paused endpoints until they answer, and the
purge of old pings."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

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
    old = OutboxEvent.objects.filter(type=events.PING, created_at__lt=cutoff)
    finished = old.filter(handled_at__isnull=False).exclude(
        deliveries__status=DeliveryStatus.PENDING
    )
    purged = 0
    while True:
        with transaction.atomic():
            ids = list(finished.order_by("created_at").values_list("pk", flat=True)[:batch])
            if not ids:
                return purged
            # Locked, and read again under the lock: one replayed (pending
            # again) since it was picked stays, with its event.
            done = list(
                Delivery.objects.select_for_update()
                .filter(event_id__in=ids)
                .exclude(status=DeliveryStatus.PENDING)
                .values_list("pk", flat=True)
            )
            DeliveryAttempt.objects.filter(delivery_id__in=done).delete()
            Delivery.objects.filter(pk__in=done).delete()
            _, per_model = OutboxEvent.objects.filter(pk__in=ids, deliveries__isnull=True).delete()
            gone = per_model.get(OutboxEvent._meta.label, 0)
            purged += gone
            if gone == 0:
                return purged  # what is left was replayed meanwhile

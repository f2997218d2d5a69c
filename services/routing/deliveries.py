"""One try of one delivery: the claim (due, not held by another worker, no
earlier event of its application pending to its endpoint), the signed POST,
the attempt on record, the retry schedule, then the dead letter; releasing
the next event in order, and replaying a delivery.

What a delivered event means beyond the engine (``application.submitted``
delivered: the application is ``routed``) is not known here: the app that
knows registers a handler with :func:`on_delivered` in its
``AppConfig.ready``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.audit import audit_record
from services.errors import DELIVERY_NOT_RETRYABLE, ServicesError
from services.models import Delivery, DeliveryAttempt, DeliveryStatus, OutboxEvent
from services.routing import endpoints, events, outbox, transport

# Called with the event and the reference the department's answer named
# (``{"reference": "..."}``, else ""), in the transaction recording the try.
Delivered = Callable[[OutboxEvent, str], None]
_on_delivered: dict[str, list[Delivered]] = defaultdict(list)


def on_delivered(event_type: str, handler: Delivered) -> None:
    """Call ``handler(event, reference)`` whenever an event of
    ``event_type`` reaches an endpoint (2xx), inside the transaction that
    records the attempt: the two commit together or not at all. A handler
    may run more than once for one event (several endpoints, replays)."""
    if handler not in _on_delivered[event_type]:
        _on_delivered[event_type].append(handler)


def _retryable(status_code: int | None) -> bool:
    return status_code is None or status_code in (408, 429) or status_code >= 500


def _jittered(seconds: float) -> float:
    spread = settings.ROUTING_RETRY_JITTER
    return seconds * random.uniform(1 - spread, 1 + spread)


def delivery_attempt(delivery_id: Any) -> Delivery | None:
    """One try of one delivery, if it is due, nobody else holds it and no
    earlier event of its application to its endpoint is still pending."""
    now = timezone.now()
    lease = now + dt.timedelta(seconds=settings.ROUTING_LEASE_SECONDS)
    # One statement: an earlier delivery leaves "pending" only by a commit,
    # so whichever worker runs this sees it either pending (and waits for its
    # nudge) or finished.
    claimed = (
        Delivery.objects.filter(
            pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .filter(~outbox.delivery_waits_for_earlier())
        .update(locked_until=lease)
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("event", "endpoint__department").get(pk=delivery_id)
    endpoint, event = delivery.endpoint, delivery.event

    if endpoint.deleted_at is not None:
        Delivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.CANCELLED, next_attempt_at=None, locked_until=None
        )
        return delivery
    if not outbox.endpoint_takes_deliveries(endpoint, event.type):
        # Paused or disabled: held, not failed, its retries kept for later.
        # Resuming or enabling the endpoint makes it due again.
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None, locked_until=None)
        return delivery

    body = outbox.event_body(event)
    headers = transport.signature_headers(
        msg_id=event.webhook_id, body=body, keys=endpoints.signing_keys_of(endpoint, now), now=now
    )
    result = transport.webhook_post(
        endpoint.url, body=body, headers=headers, timeout=settings.ROUTING_TIMEOUT_SECONDS
    )
    try:
        return _record(delivery, result, started_at=now, lease=lease)
    except Exception:
        # Recording failed (a database error): let go at once so the task's
        # retry can try again. The department may see this event twice,
        # under the same webhook-id.
        Delivery.objects.filter(pk=delivery.pk, locked_until=lease).update(locked_until=None)
        raise


def _record(
    delivery: Delivery, result: transport.SendResult, *, started_at: dt.datetime, lease: dt.datetime
) -> Delivery:
    now = timezone.now()
    endpoint, event = delivery.endpoint, delivery.event
    schedule = settings.ROUTING_RETRY_SCHEDULE
    with transaction.atomic():
        current = (
            Delivery.objects.select_for_update()
            .filter(pk=delivery.pk)
            .values("status", "locked_until", "attempt_count", "schedule_index")
            .get()
        )
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=current["attempt_count"] + 1,
            started_at=started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=result.error[:500],
            response_body=result.body,
            succeeded=result.ok,
        )
        if result.ok:
            endpoints.endpoint_mark_succeeded(endpoint, now)
            handlers = _on_delivered.get(event.type, ())
            reference = _reference(result.body) if handlers else ""
            for handler in handlers:
                handler(event, reference)
        else:
            endpoints.endpoint_mark_failed(endpoint, now, result)
        if current["status"] != DeliveryStatus.PENDING or current["locked_until"] != lease:
            # Our hold ran out and another worker (or a deletion) took over:
            # the try is on record, the delivery's state is theirs to write.
            Delivery.objects.filter(pk=delivery.pk).update(attempt_count=F("attempt_count") + 1)
            return delivery
        delivery.attempt_count = current["attempt_count"] + 1
        delivery.schedule_index = current["schedule_index"]
        delivery.last_status_code = result.status_code
        delivery.last_error = result.error[:500]
        delivery.last_attempt_at = now
        delivery.locked_until = None
        if result.ok:
            delivery.status = DeliveryStatus.SUCCEEDED
            delivery.succeeded_at = now
            delivery.next_attempt_at = None
        elif result.status_code == 410:
            # The endpoint is now disabled (see endpoints.endpoint_mark_failed);
            # the event waits for the department to enable it again.
            delivery.next_attempt_at = None
        else:
            if not _retryable(result.status_code) or event.type == events.PING:
                delay = None  # a client error is final; a ping is a test
            elif delivery.schedule_index >= len(schedule):
                delay = None
            else:
                delay = _jittered(schedule[delivery.schedule_index])
                if result.status_code == 429 and result.retry_after:
                    delay = max(delay, min(result.retry_after, max(schedule)))
                delivery.schedule_index += 1
            if delay is None:
                delivery.status = DeliveryStatus.FAILED
                delivery.failed_at = now
                delivery.next_attempt_at = None
            else:
                delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
                # Short waits ride on a countdown; longer ones are left to
                # the sweeper, so no broker message outlives its visibility.
                if delay <= settings.CELERY_MAX_COUNTDOWN:
                    delivery.enqueued_at = now
                    delivery_ids = [str(delivery.id)]
                    transaction.on_commit(
                        lambda: outbox.deliveries_nudge(delivery_ids, countdown=delay), robust=True
                    )
        delivery.save(
            update_fields=[
                "attempt_count",
                "schedule_index",
                "last_status_code",
                "last_error",
                "last_attempt_at",
                "locked_until",
                "status",
                "succeeded_at",
                "failed_at",
                "next_attempt_at",
                "enqueued_at",
            ]
        )
        if delivery.status != DeliveryStatus.PENDING and delivery.ordering_key is not None:
            finished = delivery
            transaction.on_commit(lambda: _release_next(finished), robust=True)
    return delivery


def _release_next(finished: Delivery) -> None:
    """Nudge the event that may have waited for ``finished`` (the next one of
    its application to its endpoint) now rather than at the next sweep.

    Runs after ``finished`` is committed: a next event committed before this
    query is found here, one committed after it sees ``finished`` done when
    its own nudge claims it. One not due yet keeps its own countdown; held
    ones wait for their endpoint; the events after it wait for it in turn."""
    following = (
        Delivery.objects.filter(
            ordering_key=finished.ordering_key,
            endpoint_id=finished.endpoint_id,
            sequence__gt=finished.sequence,
            status=DeliveryStatus.PENDING,
        )
        .order_by("sequence")
        .values("id", "next_attempt_at")
        .first()
    )
    if following is None or following["next_attempt_at"] is None:
        return
    now = timezone.now()
    if following["next_attempt_at"] <= now:
        Delivery.objects.filter(pk=following["id"]).update(enqueued_at=now)
        outbox.deliveries_nudge([str(following["id"])])


def _reference(body: str) -> str:
    try:
        reference = json.loads(body).get("reference")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return str(reference).replace("\x00", "")[:100] if reference else ""


def delivery_replay(*, delivery: Delivery, actor: endpoints.Actor) -> Delivery:
    """Send a delivery again with a fresh retry schedule: a dead letter, a
    delivered event the department lost, or a pending one, now.

    A replay keeps its event's place in its application's order: it goes at
    once unless an earlier event to the same endpoint is still pending, and
    a later event still pending waits for it again. Later events already
    delivered are not sent again: the department asked for this one only."""
    now = timezone.now()
    with transaction.atomic():
        locked = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("endpoint")
            .get(pk=delivery.pk)
        )
        if locked.locked_until and locked.locked_until > now:
            raise ServicesError(DELIVERY_NOT_RETRYABLE)
        if locked.status == DeliveryStatus.CANCELLED or locked.endpoint.deleted_at is not None:
            raise ServicesError(DELIVERY_NOT_RETRYABLE)
        locked.status = DeliveryStatus.PENDING
        locked.schedule_index = 0
        locked.next_attempt_at = now
        locked.failed_at = None
        locked.save(update_fields=["status", "schedule_index", "next_attempt_at", "failed_at"])
        audit_record(actor=actor, action="delivery.replayed", target=locked)
        delivery_ids = [str(locked.id)]
        transaction.on_commit(lambda: outbox.deliveries_nudge(delivery_ids), robust=True)
    return locked

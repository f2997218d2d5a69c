"""Routing events to department systems: endpoints, the outbox, deliveries.

The outbox row is the truth and is written in the same transaction as the
change it reports, together with one delivery row per subscribed endpoint.
After commit a Celery task is nudged; if the nudge is lost (broker down,
worker killed) the periodic sweeper finds the due delivery and nudges again.
A delivery is claimed with a short lease before each try, so duplicate
nudges never send twice at once, and a killed worker's claim simply expires.
Every try is recorded; failures follow the retry schedule, then dead-letter.

Events of one application reach each endpoint in the order they happened:
every delivery carries the application as its ordering key and the event's
place among that application's events, and a delivery is claimed only when
no earlier one of its key to its endpoint is still pending. The claim is one
conditional UPDATE, so this holds however many workers race; a delivery that
finishes (delivered or dead-lettered) nudges the one that waited for it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, Max, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from kombu.exceptions import OperationalError as BrokerError

from accounts.audit import audit_record
from accounts.inbox import message_post
from accounts.models import ApiKey, Department, User
from services import events, transport
from services.errors import (
    DELIVERY_NOT_RETRYABLE,
    ENDPOINT_URL_INVALID,
    ENDPOINT_URL_NOT_ALLOWED,
    ServicesError,
)
from services.models import (
    Application,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Endpoint,
    OutboxEvent,
)

logger = logging.getLogger(__name__)

Actor = User | ApiKey | None


# --- Endpoints ---------------------------------------------------------------------------


def _checked_url(url: str) -> str:
    """The URL as stored (host in ASCII), if it may receive events."""
    try:
        transport.allowed_addresses(url)
        return transport.normalize_url(url)
    except transport.UrlNotAllowed as exc:
        error = ENDPOINT_URL_INVALID if exc.shape else ENDPOINT_URL_NOT_ALLOWED
        raise ServicesError(error, str(exc), errors={"url": [str(exc)]}) from exc


def endpoint_create(
    *,
    department: Department,
    url: str,
    events: list[str],
    description: str = "",
    is_active: bool = True,
    actor: Actor,
) -> tuple[Endpoint, str]:
    """Register a department system's URL; returns it with its new secret
    (``whsec_...``), which is shown this once."""
    secret = transport.new_secret()
    with transaction.atomic():
        endpoint = Endpoint.objects.create(
            department=department,
            url=_checked_url(url),
            events=list(dict.fromkeys(events)),
            description=description,
            is_active=is_active,
            secret=secret,
        )
        audit_record(
            actor=actor,
            action="endpoint.created",
            target=endpoint,
            data={"url": url, "events": events},
        )
    return endpoint, secret


def endpoint_update(*, endpoint: Endpoint, actor: Actor, **values: Any) -> Endpoint:
    """Change URL, events, description or the active switch. Switching an
    endpoint (back) on also lifts a circuit-breaker pause."""
    changes: dict[str, Any] = {}
    if "url" in values and values["url"] != endpoint.url:
        changes["url"] = _checked_url(values["url"])
    if "events" in values:
        changes["events"] = list(dict.fromkeys(values["events"]))
    if "description" in values:
        changes["description"] = values["description"]
    with transaction.atomic():
        # Locked and saved field by field: a concurrent secret rotation,
        # pause or 410 must not be written back over by this change.
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        resume = False
        if "is_active" in values:
            changes["is_active"] = values["is_active"]
            if values["is_active"]:
                changes["disabled_reason"] = ""
                resume = endpoint.paused_at is not None or not endpoint.is_active
        for name, value in changes.items():
            setattr(endpoint, name, value)
        endpoint.save(update_fields=list(changes))
        audit_record(
            actor=actor,
            action="endpoint.updated",
            target=endpoint,
            data={k: v for k, v in changes.items() if k != "disabled_reason"},
        )
        if resume:
            _resume(endpoint)
    return endpoint


def endpoint_delete(*, endpoint: Endpoint, actor: Actor) -> None:
    """Stop delivering to the endpoint; its history stays for the record."""
    with transaction.atomic():
        endpoint.deleted_at = timezone.now()
        endpoint.is_active = False
        endpoint.save(update_fields=["deleted_at", "is_active"])
        endpoint.deliveries.filter(status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.CANCELLED, next_attempt_at=None
        )
        audit_record(actor=actor, action="endpoint.deleted", target=endpoint)


def endpoint_rotate_secret(*, endpoint: Endpoint, actor: Actor) -> str:
    """A new secret; the old one keeps signing alongside it for
    ``ROUTING_SECRET_OVERLAP_HOURS`` so the department can switch over."""
    secret = transport.new_secret()
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = timezone.now() + dt.timedelta(
            hours=settings.ROUTING_SECRET_OVERLAP_HOURS
        )
        endpoint.secret = secret
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
        audit_record(actor=actor, action="endpoint.secret_rotated", target=endpoint)
    return secret


def endpoint_ping(*, endpoint: Endpoint, actor: Actor) -> Delivery:
    """Send a ``ping`` to this endpoint only. A paused endpoint that answers
    the ping is resumed."""
    with transaction.atomic():
        event = event_publish(
            type=events.PING,
            data={"endpoint": str(endpoint.id), "department": endpoint.department.code},
            endpoints=[endpoint],
        )
        audit_record(actor=actor, action="endpoint.pinged", target=endpoint)
    return event.deliveries.get()


def _takes_deliveries(endpoint: Endpoint, event_type: str) -> bool:
    """Whether the endpoint is sent to now. A ping goes even to a paused or
    disabled endpoint: it is how a department checks it before resuming."""
    if event_type == events.PING:
        return endpoint.deleted_at is None
    return endpoint.is_active and endpoint.paused_at is None and endpoint.deleted_at is None


def _signing_keys(endpoint: Endpoint, now: dt.datetime) -> list[str]:
    keys = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_expires_at
        and now < endpoint.previous_secret_expires_at
    ):
        keys.append(endpoint.previous_secret)
    return keys


# --- Publishing ----------------------------------------------------------------------------


def event_publish(
    *,
    type: str,
    data: dict[str, Any],
    department: Department | None = None,
    application: Application | None = None,
    endpoints: Iterable[Endpoint] | None = None,
) -> OutboxEvent:
    """Write an event and its deliveries in the caller's transaction.

    Deliveries go to ``endpoints`` if given, else to every endpoint of
    ``department`` subscribed to ``type`` (paused ones included: they get
    it when they resume). In-process subscribers run after commit.
    """
    with transaction.atomic(savepoint=False):
        return _publish(
            type=type,
            data=data,
            department=department,
            application=application,
            endpoints=endpoints,
        )


def _publish(
    *,
    type: str,
    data: dict[str, Any],
    department: Department | None,
    application: Application | None,
    endpoints: Iterable[Endpoint] | None,
) -> OutboxEvent:
    now = timezone.now()
    has_subscribers = bool(events.subscribers(type))
    sequence = None
    if application is not None:
        # The application's row lock (the callers hold it already; SQLite's
        # IMMEDIATE transactions hold the whole database) makes a second event
        # of one application wait for the first to commit: no two take the
        # same place, and the later one is numbered after the earlier.
        Application.objects.select_for_update(of=("self",)).filter(pk=application.pk).exists()
        last = Delivery.objects.filter(ordering_key=application.pk).aggregate(last=Max("sequence"))
        sequence = (last["last"] or 0) + 1
    event = OutboxEvent.objects.create(
        type=type,
        department=department,
        application=application,
        data=data,
        created_at=now,
        handled_at=None if has_subscribers else now,
    )
    if endpoints is None:
        # Paused and disabled endpoints get their deliveries too, held (no
        # due time) until they are resumed or enabled again: nothing is lost.
        endpoints = (
            [
                e
                for e in Endpoint.objects.filter(department=department, deleted_at=None)
                if type in e.events
            ]
            if department is not None
            else []
        )
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                event=event,
                endpoint=endpoint,
                next_attempt_at=now if _takes_deliveries(endpoint, type) else None,
                created_at=now,
                ordering_key=application.pk if application is not None else None,
                sequence=sequence,
            )
            for endpoint in endpoints
        ]
    )
    delivery_ids = [str(d.id) for d in deliveries if d.next_attempt_at is not None]
    transaction.on_commit(
        lambda: _nudge(delivery_ids, str(event.id) if has_subscribers else None), robust=True
    )
    return event


def _nudge(delivery_ids: list[str], event_id: str | None) -> None:
    """Wake the workers now rather than at the next sweep. Losing a nudge
    loses nothing: the rows are committed and the sweeper finds them."""
    from services import tasks

    try:
        for delivery_id in delivery_ids:
            tasks.deliver.apply_async((delivery_id,), retry=False)
        if event_id:
            tasks.handle_event.apply_async((event_id,), retry=False)
    except (BrokerError, OSError) as exc:
        logger.warning("broker unavailable, the sweeper will deliver: %s", exc)


def event_body(event: OutboxEvent) -> str:
    """The JSON body departments receive, identical on every try."""
    return json.dumps(
        {
            "type": event.type,
            "timestamp": timezone.localtime(event.created_at).isoformat(),
            "data": event.data,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def events_pseudonymise(*, application_ids: Iterable[Any], subject: str) -> int:
    """Strip the personal data from the stored events of these applications
    (their applicant closed the account). Each event keeps its id, so its
    ``webhook-id``, type and time: a replay is the same event to the
    department, now carrying the pseudonymous ``subject`` only."""
    stored = list(OutboxEvent.objects.filter(application_id__in=list(application_ids)))
    for event in stored:
        event.data = events.pseudonymised(event.data, subject=subject)
    OutboxEvent.objects.bulk_update(stored, ["data"], batch_size=500)
    return len(stored)


def event_handle(event_id: Any) -> bool:
    """Run the in-process subscribers of one event, once. A subscriber that
    fails rolls the whole run back; it is tried again later, waiting twice as
    long each time (up to an hour), so one bad event cannot spin."""
    try:
        with transaction.atomic():
            event = OutboxEvent.objects.select_for_update().filter(pk=event_id).first()
            if event is None or event.handled_at is not None:
                return False
            for subscriber in events.subscribers(event.type):
                subscriber(event)
            event.handled_at = timezone.now()
            event.save(update_fields=["handled_at"])
    except Exception:
        logger.exception("subscribers of event %s failed; will try again", event_id)
        failed = OutboxEvent.objects.filter(pk=event_id).first()
        if failed is not None:
            wait = min(3600, 5 * 2**failed.handle_attempts)
            OutboxEvent.objects.filter(pk=event_id).update(
                handle_attempts=F("handle_attempts") + 1,
                handle_after=timezone.now() + dt.timedelta(seconds=wait),
            )
        return False
    return True


# --- Delivering ------------------------------------------------------------------------------


def _retryable(status_code: int | None) -> bool:
    return status_code is None or status_code in (408, 429) or status_code >= 500


def _jittered(seconds: float) -> float:
    spread = settings.ROUTING_RETRY_JITTER
    return seconds * random.uniform(1 - spread, 1 + spread)


def _waits_for_earlier() -> Exists:
    """An earlier event of the same application is still pending (retrying,
    held or in a worker's hands) to the same endpoint. Never true without an
    ordering key: NULL equals nothing."""
    return Exists(
        Delivery.objects.filter(
            ordering_key=OuterRef("ordering_key"),
            endpoint=OuterRef("endpoint"),
            sequence__lt=OuterRef("sequence"),
            status=DeliveryStatus.PENDING,
        )
    )


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
        .filter(~_waits_for_earlier())
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
    if not _takes_deliveries(endpoint, event.type):
        # Paused or disabled: held, not failed, its retries kept for later.
        # Resuming or enabling the endpoint makes it due again.
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None, locked_until=None)
        return delivery

    body = event_body(event)
    headers = transport.signature_headers(
        msg_id=event.webhook_id, body=body, keys=_signing_keys(endpoint, now), now=now
    )
    result = transport.post(
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
            _endpoint_succeeded(endpoint, now)
            if event.type == events.APPLICATION_SUBMITTED and event.application_id:
                # Imported here: the applications module imports this one.
                from services.applications import application_mark_routed

                application_mark_routed(
                    application_id=event.application_id, reference=_reference(result.body)
                )
        else:
            _endpoint_failed(endpoint, now, result)
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
            # The endpoint is now disabled (see _endpoint_failed); the event
            # waits for the department to enable it again.
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
                    delivery_id = str(delivery.id)
                    transaction.on_commit(lambda: _nudge_later(delivery_id, delay), robust=True)
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
        _nudge([str(following["id"])], None)


def _nudge_later(delivery_id: str, countdown: float) -> None:
    from services import tasks

    try:
        tasks.deliver.apply_async((delivery_id,), countdown=countdown, retry=False)
    except (BrokerError, OSError) as exc:
        logger.warning("broker unavailable, the sweeper will retry: %s", exc)


def _reference(body: str) -> str:
    try:
        reference = json.loads(body).get("reference")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return str(reference).replace("\x00", "")[:100] if reference else ""


def _endpoint_succeeded(endpoint: Endpoint, now: dt.datetime) -> None:
    # Every delivery to a busy endpoint would otherwise queue on this one
    # row; the success time is kept to the second, the failure count exactly.
    stale = endpoint.last_success_at is None or now - endpoint.last_success_at > dt.timedelta(
        seconds=1
    )
    if endpoint.consecutive_failures or stale:
        Endpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0, last_success_at=now)
    if endpoint.paused_at is not None and endpoint.is_active:
        endpoint.refresh_from_db()
        _resume(endpoint)
        audit_record(actor=None, action="endpoint.resumed", target=endpoint, data={"by": "ping"})


def _endpoint_failed(endpoint: Endpoint, now: dt.datetime, result: transport.SendResult) -> None:
    if result.status_code == 410 and endpoint.is_active:
        _endpoint_gone(endpoint)
    Endpoint.objects.filter(pk=endpoint.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_failure_at=now
    )
    endpoint.refresh_from_db(fields=["consecutive_failures", "paused_at", "is_active"])
    if (
        endpoint.is_active
        and endpoint.paused_at is None
        and endpoint.consecutive_failures >= settings.ROUTING_BREAKER_THRESHOLD
    ):
        reason = f"{endpoint.consecutive_failures} consecutive failures, last: {result.status_code or result.error}"
        Endpoint.objects.filter(pk=endpoint.pk).update(paused_at=now, pause_reason=reason[:200])
        _tell_department(
            endpoint,
            action="endpoint.paused",
            title=_("回调地址已暂停投递"),
            body=_(
                "回调地址 %(url)s 连续失败，已暂停投递；事件不会丢失，恢复后补发。请排查后在接口中发送测试事件或重新启用。"
            ),
            reason=reason,
        )


def _endpoint_gone(endpoint: Endpoint) -> None:
    Endpoint.objects.filter(pk=endpoint.pk).update(is_active=False, disabled_reason="410 Gone")
    _tell_department(
        endpoint,
        action="endpoint.disabled",
        title=_("回调地址已停用"),
        body=_("回调地址 %(url)s 返回 410 Gone，已停用。事件会保留，重新启用后补发。"),
        reason="410 Gone",
    )


def _tell_department(
    endpoint: Endpoint, *, action: str, title: Any, body: Any, reason: str
) -> None:
    audit_record(actor=None, action=action, target=endpoint, data={"reason": reason})
    for staff in User.objects.filter(department_id=endpoint.department_id, is_active=True):
        message_post(
            user=staff,
            kind=action,
            title=title,
            body=body,
            params={"url": endpoint.url},
            data={"endpoint": str(endpoint.id)},
        )


def _resume(endpoint: Endpoint) -> None:
    """Lift a pause and send everything that waited, now."""
    now = timezone.now()
    Endpoint.objects.filter(pk=endpoint.pk).update(
        paused_at=None, pause_reason="", consecutive_failures=0
    )
    endpoint.paused_at = None
    waiting = Delivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.PENDING)
    waiting.update(next_attempt_at=now)
    # Only the first waiting event of each application goes now; each one
    # delivered or dead-lettered releases the next (see _release_next).
    first = list(
        waiting.filter(~_waits_for_earlier()).order_by("created_at").values_list("id", flat=True)
    )
    ids = [str(i) for i in first]
    transaction.on_commit(lambda: _nudge(ids, None), robust=True)


def delivery_replay(*, delivery: Delivery, actor: Actor) -> Delivery:
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
        delivery_id = str(locked.id)
        transaction.on_commit(lambda: _nudge([delivery_id], None), robust=True)
    return locked


# --- Periodic work --------------------------------------------------------------------------


def sweep(*, limit: int = 500) -> dict[str, int]:
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
        .filter(~_waits_for_earlier())
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
    from services import tasks

    try:
        for delivery_id in due:
            tasks.deliver.apply_async((str(delivery_id),), retry=False)
        for event_id in unhandled:
            tasks.handle_event.apply_async((str(event_id),), retry=False)
    except (BrokerError, OSError) as exc:
        # The rows stay due; the next sweep tries again.
        Delivery.objects.filter(pk__in=due).update(enqueued_at=None)
        logger.warning("sweep could not reach the broker: %s", exc)
        return {"deliveries": 0, "events": 0}
    return {"deliveries": len(due), "events": len(unhandled)}


def probe_paused_endpoints() -> int:
    """Ping every paused endpoint whose last probe is older than the probe
    interval; the ping's success resumes it."""
    now = timezone.now()
    interval = dt.timedelta(seconds=settings.ROUTING_PROBE_INTERVAL_SECONDS)
    endpoints = Endpoint.objects.filter(
        paused_at__isnull=False, is_active=True, deleted_at=None
    ).filter(Q(last_probe_at__isnull=True) | Q(last_probe_at__lt=now - interval))
    count = 0
    for endpoint in endpoints:
        Endpoint.objects.filter(pk=endpoint.pk).update(last_probe_at=now)
        endpoint_ping(endpoint=endpoint, actor=None)
        count += 1
    return count

"""The event outbox: publishing an event with its deliveries in the caller's
transaction, nudging the workers after commit, and running in-process
subscribers.

A delivery is written due (an endpoint that takes events now) or held (a
paused, held or disabled one: it waits, without spending its retries, until the
endpoint comes back), and with its place among its application's events;
:func:`delivery_waits_for_earlier` says what waiting for an earlier place
means, for the claim, the sweeper and a resumed endpoint alike.

Workers are woken by task name through the Celery app, never by importing
``services.tasks`` (which calls this package): the rows are the truth, a
nudge is only a shortcut, and losing one loses nothing. A new event wakes a
worker to send whatever is due (:func:`deliveries_wake`), and while one such
wake is on its way no other is sent: under load one message carries a batch.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Exists, F, Max, OuterRef, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from accounts.models import Department
from config.queries import equal_unindexed
from config.redis_client import REDIS_ERRORS, redis_client, redis_enabled, redis_key
from services.models import (
    Application,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Endpoint,
    OutboxEvent,
)
from services.routing import events

logger = logging.getLogger(__name__)

# The Celery tasks the engine wakes (services/tasks.py); the names are the
# contract with the queues (CELERY_TASK_ROUTES) and with queued messages.
DELIVER_TASK = "routing.deliver"
DELIVER_DUE_TASK = "routing.deliver_due"
HANDLE_EVENT_TASK = "routing.handle_event"


def endpoint_takes_deliveries(endpoint: Endpoint, event_type: str) -> bool:
    """Whether the endpoint is sent to now (else its deliveries are held). A
    ping goes even to a paused or disabled endpoint: it is how a department
    checks it before resuming."""
    if event_type == events.PING:
        return endpoint.deleted_at is None
    return endpoint_open(endpoint)


def endpoint_open(endpoint: Endpoint) -> bool:
    """Whether events go to the endpoint now: switched on by its
    department, and neither paused by the breaker, held by an operator nor
    deleted."""
    return (
        endpoint.is_active
        and endpoint.paused_at is None
        and endpoint.held_at is None
        and endpoint.deleted_at is None
    )


def delivery_waits_for_earlier() -> Exists:
    """An earlier event of the same application is still pending (retrying,
    held or in a worker's hands) to the same endpoint. Never true without an
    ordering key: NULL equals nothing."""
    return Exists(
        Delivery.objects.filter(
            ordering_key=OuterRef("ordering_key"),
            endpoint=OuterRef("endpoint"),
            sequence__lt=OuterRef("sequence"),
        ).filter(pending_as_filter())
    )


def pending_as_filter() -> Q:
    """Pending, as a filter on the rows a lookup finds (delivery_in_order, a
    key), never along delivery_due or delivery_endpoint_status: see
    :func:`config.queries.equal_unindexed`."""
    return equal_unindexed("status", DeliveryStatus.PENDING)


# --- Nudges --------------------------------------------------------------------------------


def _send(task_name: str, ids: Iterable[str], countdown: float | None = None) -> None:
    # Looked up in the app's registry by name: apply_async honours eager
    # mode (tests) and the task's routes, as a direct call would.
    task = current_app.tasks[task_name]
    for id_ in ids:
        task.apply_async((id_,), countdown=countdown, retry=False)


def deliveries_nudge(delivery_ids: Iterable[str], *, countdown: float | None = None) -> bool:
    """Wake the workers for these deliveries now (or in ``countdown``
    seconds) rather than at the next sweep. Losing a nudge loses nothing:
    the rows are committed and the sweeper finds them. False if the broker
    could not be reached."""
    try:
        _send(DELIVER_TASK, delivery_ids, countdown)
    except (BrokerError, OSError) as exc:
        logger.warning("broker unavailable, the sweeper will send them: %s", exc)
        return False
    return True


# Set while a wake is on its way to a worker; the worker that takes it clears
# it before its first claim (see :func:`deliveries_wake`).
_WAKE_KEY = "routing:wake"


def deliveries_wake(*, force: bool = False) -> bool:
    """Wake a worker to send every due delivery, unless a wake is already on
    its way: then that worker, which clears the mark before it claims, finds
    what the caller committed. ``force``: send one whatever the mark says
    (the sweeper, for rows a lost wake left behind). Without Redis every
    call sends one. False if it could not be sent (the sweeper sends them
    then)."""
    key = redis_key(_WAKE_KEY) if redis_enabled() else None
    if key is not None:
        try:
            marked = redis_client().set(key, 1, nx=not force, ex=settings.ROUTING_WAKE_SECONDS)
            if not marked:
                return True
        except REDIS_ERRORS as exc:
            logger.warning("wake mark unavailable, waking anyway: %s", exc)
            key = None
    try:
        current_app.tasks[DELIVER_DUE_TASK].apply_async(retry=False)
    except Exception as exc:
        # Whatever stopped it (the broker away, a message that would not
        # serialise), the mark must not hold other wakes back.
        logger.warning("could not wake a worker, the sweeper will send them: %s", exc)
        if key is not None:
            deliveries_wake_taken()
        return False
    return True


def deliveries_wake_taken() -> None:
    """A worker took the wake: the next new event sends another. Called
    before the worker's first claim; a mark left by a failure here expires
    after ``ROUTING_WAKE_SECONDS`` (the sweeper covers the gap)."""
    if not redis_enabled():
        return
    try:
        redis_client().delete(redis_key(_WAKE_KEY))
    except REDIS_ERRORS as exc:
        logger.warning("could not clear the wake mark: %s", exc)


def events_nudge(event_ids: Iterable[str]) -> bool:
    """Wake a worker to run the subscribers of these events (see :func:`deliveries_nudge`)."""
    try:
        _send(HANDLE_EVENT_TASK, event_ids)
    except (BrokerError, OSError) as exc:
        logger.warning("broker unavailable, the sweeper will hand them over: %s", exc)
        return False
    return True


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
        publication = event_prepare(
            type=type,
            data=data,
            department=department,
            application=application,
            endpoints=endpoints,
        )
        publication.event.save(force_insert=True)
        Delivery.objects.bulk_create(publication.deliveries)
        publication.written()
    return publication.event


@dataclass
class Publication:
    """An event and its deliveries, made and not yet written (see
    :func:`event_prepare`)."""

    event: OutboxEvent
    deliveries: list[Delivery]

    @property
    def rows(self) -> list[list[Any]]:
        """What to write, one model's rows after another."""
        return [[self.event], self.deliveries]

    def written(self) -> None:
        """Call once the rows are written, in their transaction: after its
        commit, the due deliveries' worker and the in-process subscribers are
        woken (and deliveries written held while their endpoint resumed are
        made due)."""
        type = self.event.type
        delivery_ids = [str(d.id) for d in self.deliveries if d.next_attempt_at is not None]
        held: dict[Any, list[Any]] = {}
        for d in self.deliveries:
            if d.next_attempt_at is None:
                held.setdefault(d.endpoint_id, []).append(d.id)
        # Handled at once when no in-process subscriber takes its type.
        event_ids = [str(self.event.id)] if self.event.handled_at is None else []

        def nudge() -> None:
            due = bool(delivery_ids)
            if held and _held_made_due(held, event_type=type):
                due = True
            if (deliveries_wake() if due else True) and event_ids:
                events_nudge(event_ids)

        transaction.on_commit(nudge, robust=True)


def event_prepare(
    *,
    type: str,
    data: dict[str, Any],
    department: Department | None = None,
    application: Application | None = None,
    endpoints: Iterable[Endpoint] | None = None,
    first_of_application: bool = False,
) -> Publication:
    """The event :func:`event_publish` writes and its deliveries, made in
    the caller's transaction (the endpoints read, the application's place
    taken) and not yet written: for a caller that writes them with its own
    rows in one statement (:func:`config.queries.rows_insert`), then calls
    :meth:`Publication.written`. ``first_of_application``: the application
    is being created in this transaction and this is its first event (no
    other transaction can see it yet, so it takes the first place without
    asking)."""
    now = timezone.now()
    has_subscribers = bool(events.subscribers(type))
    sequence = None
    if application is not None and first_of_application:
        sequence = 1
    elif application is not None:
        # The application's row lock (the callers hold it already; SQLite's
        # IMMEDIATE transactions hold the whole database) makes a second event
        # of one application wait for the first to commit: no two take the
        # same place, and the later one is numbered after the earlier.
        Application.objects.select_for_update(of=("self",)).filter(pk=application.pk).exists()
        last = Delivery.objects.filter(ordering_key=application.pk).aggregate(last=Max("sequence"))
        sequence = (last["last"] or 0) + 1
    event = OutboxEvent(
        type=type,
        department=department,
        application=application,
        data=data,
        created_at=now,
        handled_at=None if has_subscribers else now,
    )
    if endpoints is None:
        # Paused, held and disabled endpoints get their deliveries too, held
        # (no due time) until they are resumed, released or enabled again:
        # nothing is lost.
        endpoints = (
            [
                e
                for e in Endpoint.objects.filter(department=department, deleted_at=None)
                if type in e.events
            ]
            if department is not None
            else []
        )
    deliveries = [
        Delivery(
            event=event,
            endpoint=endpoint,
            # The endpoint's, whatever the event names (a ping names none).
            department_id=endpoint.department_id,
            next_attempt_at=now if endpoint_takes_deliveries(endpoint, type) else None,
            created_at=now,
            ordering_key=application.pk if application is not None else None,
            sequence=sequence,
        )
        for endpoint in endpoints
    ]
    return Publication(event=event, deliveries=deliveries)


def _held_made_due(held: dict[Any, list[Any]], *, event_type: str) -> bool:
    """After the commit of deliveries written held: make due those whose
    endpoint takes events after all, and cancel those whose endpoint was
    removed. The publishing transaction read the endpoint before a resume
    (or a removal) committed, and that made due (or cancelled) only the
    deliveries it could see, not these; without this they would wait for a
    resume that has happened, or for good. The endpoint rows are locked
    first, as a resume or a removal writes them: one in progress ends before
    they are read, one after finds these rows. Whether any became due."""
    try:
        with transaction.atomic():
            current = list(
                Endpoint.objects.select_for_update(no_key=True)
                .filter(pk__in=list(held))
                .order_by("pk")  # the order every locker of several endpoints takes
                .only("is_active", "paused_at", "held_at", "deleted_at")
            )
            resumed = [e.pk for e in current if endpoint_takes_deliveries(e, event_type)]
            removed = [e.pk for e in current if e.deleted_at is not None]
            # By their keys (see pending_as_filter: not along delivery_due).
            waiting = Delivery.objects.filter(pending_as_filter(), next_attempt_at__isnull=True)
            if removed:
                waiting.filter(pk__in=[pk for e in removed for pk in held[e]]).update(
                    status=DeliveryStatus.CANCELLED
                )
            if not resumed:
                return False
            return bool(
                waiting.filter(pk__in=[pk for e in resumed for pk in held[e]]).update(
                    next_attempt_at=timezone.now()
                )
            )
    except DatabaseError as exc:
        logger.warning("could not check the endpoints of held deliveries again: %s", exc)
        return False


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
    department, now carrying the pseudonymous ``subject`` only. The bodies
    the departments answered to its deliveries go too; the attempts keep
    their status and times."""
    ids = list(application_ids)
    stored = list(OutboxEvent.objects.filter(application_id__in=ids))
    for event in stored:
        event.data = events.pseudonymised(event.data, subject=subject)
    OutboxEvent.objects.bulk_update(stored, ["data"], batch_size=500)
    # What the departments' systems answered to them (kept for the
    # operators' eyes) may echo the application back.
    DeliveryAttempt.objects.filter(delivery__event__application_id__in=ids).exclude(
        response_body=""
    ).update(response_body="")
    return len(stored)


# --- In-process subscribers ------------------------------------------------------------------


def event_handle(event_id: Any) -> bool:
    """Run the in-process subscribers of one event, once. A subscriber that
    fails rolls the whole run back; it is tried again later, waiting twice as
    long each time (up to an hour), so one bad event cannot spin."""
    try:
        with transaction.atomic():
            # The event's application first, then the event: the order an
            # account's close takes them in (it erases the applications, then
            # their events), and the subscribers lock the application anyway.
            # The other order lets the two wait on each other.
            application_id = (
                OutboxEvent.objects.filter(pk=event_id)
                .values_list("application_id", flat=True)
                .first()
            )
            if application_id is not None:
                Application.objects.select_for_update(of=("self",)).filter(
                    pk=application_id
                ).exists()
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

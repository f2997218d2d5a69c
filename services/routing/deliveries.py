"""Trying deliveries: the claim (due, not held by another worker, no earlier
event of its application pending to its endpoint), the signed POSTs, the
attempts on record, the retry schedule, then the dead letter; releasing the
next event in order, and replaying a delivery.

A worker takes due deliveries in batches (:func:`deliveries_send_due`): one
claim for the batch, the POSTs sent side by side over kept-alive
connections, the outcomes recorded together; so what a task costs is paid
once per batch rather than once per event. A nudge by id
(:func:`delivery_attempt`: retries, replays, the sweeper) tries just that one.

What a delivered event means beyond the engine (``application.submitted``
delivered: the application is ``routed``) is not known here: the app that
knows registers a handler with :func:`on_delivered` in its
``AppConfig.ready``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.audit import audit_record
from config.errors import NOT_FOUND
from services.errors import DELIVERY_NOT_RETRYABLE, ServicesError
from services.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint, OutboxEvent
from services.routing import endpoints, events, outbox, transport

logger = logging.getLogger(__name__)

# Called with every (event, reference) of one type delivered in a batch, the
# reference being what the department's answer named (``{"reference": "..."}``,
# else ""), in the transaction recording the tries.
Delivered = Callable[[list[tuple[OutboxEvent, str]]], None]
_on_delivered: dict[str, list[Delivered]] = defaultdict(list)


def on_delivered(event_type: str, handler: Delivered) -> None:
    """Call ``handler([(event, reference), ...])`` whenever events of
    ``event_type`` reach an endpoint (2xx), inside the transaction that
    records the attempts: they commit together or not at all. A handler may
    hear of one event more than once (several endpoints, replays)."""
    if handler not in _on_delivered[event_type]:
        _on_delivered[event_type].append(handler)


def _retryable(status_code: int | None) -> bool:
    return status_code is None or status_code in (408, 429) or status_code >= 500


def _jittered(seconds: float) -> float:
    spread = settings.ROUTING_RETRY_JITTER
    return seconds * random.uniform(1 - spread, 1 + spread)


# --- Claiming ----------------------------------------------------------------------------


def _due(now: dt.datetime, pk: Any = None) -> QuerySet[Delivery]:
    """Due, not in another worker's hands, not waiting for an earlier event
    (only ``pk``, if given). An earlier delivery leaves "pending" only by a
    commit, so whichever worker claims sees it either pending (and leaves
    this one to its release) or finished."""
    pending = (
        Delivery.objects.filter(status=DeliveryStatus.PENDING)
        if pk is None
        # One delivery: looked up by its key. Said as status = 'pending',
        # PostgreSQL with statistics older than a backlog read every due
        # delivery along delivery_due to find it.
        else Delivery.objects.filter(outbox.pending_as_filter(), pk=pk)
    )
    return (
        pending.filter(next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .filter(~outbox.delivery_waits_for_earlier())
    )


def _lease(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=settings.ROUTING_LEASE_SECONDS)


def _claim_one(delivery_id: Any) -> tuple[list[Delivery], dt.datetime]:
    now = timezone.now()
    lease = _lease(now)
    if not _due(now, delivery_id).update(locked_until=lease):
        return [], lease
    return [Delivery.objects.select_related("event", "endpoint").get(pk=delivery_id)], lease


def _claim_due(limit: int) -> tuple[list[Delivery], dt.datetime]:
    """Up to ``limit`` due deliveries, oldest due first, held for this worker.
    Rows another worker is claiming at this moment are skipped, not waited
    for (SKIP LOCKED; SQLite's write lock makes the two statements one)."""
    now = timezone.now()
    lease = _lease(now)
    with transaction.atomic():
        claimed = list(
            _due(now)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("event", "endpoint")
            .order_by("next_attempt_at")[:limit]
        )
        if claimed:
            Delivery.objects.filter(pk__in=[d.pk for d in claimed]).update(locked_until=lease)
    return claimed, lease


def delivery_attempt(delivery_id: Any) -> Delivery | None:
    """One try of one delivery, if it is due, nobody else holds it and no
    earlier event of its application to its endpoint is still pending."""
    claimed, lease = _claim_one(delivery_id)
    return _attempt(claimed, lease)[0] if claimed else None


def deliveries_send_due(
    *, batch_size: int | None = None, budget_seconds: float | None = None
) -> int:
    """Send whatever is due, a batch at a time, until a claim comes back
    short of a full batch or the time budget is spent; how many were tried.

    The wake this answers is taken before the first claim, so whatever was
    committed before a publisher found a wake already on its way is seen
    here. A full batch wakes another worker to share the backlog; running out
    of budget with a full batch wakes one to carry on."""
    batch_size = batch_size or settings.ROUTING_BATCH_SIZE
    budget = settings.ROUTING_BATCH_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    outbox.deliveries_wake_taken()
    deadline = time.monotonic() + budget
    tried = 0
    while True:
        claimed, lease = _claim_due(batch_size)
        full = len(claimed) == batch_size
        if full:
            outbox.deliveries_wake()
        tried += len(_attempt(claimed, lease))
        if not full or time.monotonic() > deadline:
            return tried


# --- Sending -----------------------------------------------------------------------------


@dataclass
class _Try:
    delivery: Delivery
    body: str
    keys: list[str]
    lease: dt.datetime
    started_at: dt.datetime | None = None  # when it was sent


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _sender() -> ThreadPoolExecutor:
    """The threads that send a batch's POSTs side by side; one pool per
    process (a forked worker starts its own) and size."""
    key = (os.getpid(), settings.ROUTING_SEND_CONCURRENCY)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = ThreadPoolExecutor(max_workers=key[1], thread_name_prefix="delivery")
    return pool


def slowest_post_seconds(timeout: float) -> float:
    """How long one POST may take at worst: ``webhook_post``'s timeout bounds
    connecting and each read, not their sum (about twice the timeout seen),
    and a second for the rest."""
    return 2 * timeout + 1


def _post(one: _Try) -> transport.SendResult | None:
    """Send one try (in a sender thread: no database here), signed as it
    leaves; or None when it may not go now: its endpoint stopped taking
    events since the claim (an earlier answer of this batch paused or
    disabled it), or the hold would run out before the slowest POST ends
    and another worker could take the delivery over while this one is on
    the wire."""
    delivery = one.delivery
    if not outbox.endpoint_takes_deliveries(delivery.endpoint, delivery.event.type):
        return None
    now = timezone.now()
    left = (one.lease - now).total_seconds()
    if left < slowest_post_seconds(settings.ROUTING_TIMEOUT_SECONDS):
        return None
    one.started_at = now
    headers = transport.signature_headers(
        msg_id=delivery.event.webhook_id, body=one.body, keys=one.keys, now=now
    )
    return transport.webhook_post(
        delivery.endpoint.url,
        body=one.body,
        headers=headers,
        timeout=settings.ROUTING_TIMEOUT_SECONDS,
    )


def _sent(one: _Try) -> transport.SendResult | None:
    """:func:`_post`, whose failure to even send (a secret that does not
    decode fails only as it signs) is a failed try on record, alone in a
    batch as in company: retried, then dead-lettered, never a delivery held
    back for a lease again and again."""
    try:
        return _post(one)
    except Exception as exc:  # webhook_post never raises; signing may
        logger.exception("delivery %s could not be sent", one.delivery.pk)
        return transport.SendResult(None, "", 0, error=f"{type(exc).__name__}: {exc}"[:500])


def _outcome(future: Future[transport.SendResult | None]) -> transport.SendResult | None:
    try:
        return future.result()
    except Exception as exc:  # _sent never raises; a thread that could not run did
        logger.exception("a delivery's send did not run")
        return transport.SendResult(None, "", 0, error=f"{type(exc).__name__}: {exc}"[:500])


def _interleaved(tries: list[_Try]) -> list[_Try]:
    """The tries taking turns by endpoint, so one slow or failing
    department's backlog does not take every sender thread first."""
    by_endpoint: dict[Any, list[_Try]] = defaultdict(list)
    for one in tries:
        by_endpoint[one.delivery.endpoint_id].append(one)
    queues = list(by_endpoint.values())
    ordered: list[_Try] = []
    for turn in range(max(len(q) for q in queues)):
        ordered.extend(q[turn] for q in queues if turn < len(q))
    return ordered


def _attempt(claimed: list[Delivery], lease: dt.datetime) -> list[Delivery]:
    """Try the claimed deliveries: cancel those of deleted endpoints, hold
    those of paused or disabled ones, send the rest side by side, and record
    the answers every ``ROUTING_RECORD_EVERY_SECONDS`` as they come."""
    if not claimed:
        return []
    now = timezone.now()
    shared: dict[Any, Endpoint] = {}
    cancelled: list[Any] = []
    held: list[Delivery] = []
    tries: list[_Try] = []
    unprepared: list[tuple[_Try, transport.SendResult]] = []
    for delivery in claimed:
        # One instance per endpoint, so what one outcome changes on it
        # (failure count, pause) the next outcome in the batch sees.
        delivery.endpoint = shared.setdefault(delivery.endpoint_id, delivery.endpoint)
        endpoint, event = delivery.endpoint, delivery.event
        if endpoint.deleted_at is not None:
            cancelled.append(delivery.pk)
        elif not outbox.endpoint_takes_deliveries(endpoint, event.type):
            # Paused or disabled: held, not failed, its retries kept for
            # later. Resuming or enabling the endpoint makes it due again.
            held.append(delivery)
        else:
            try:
                one = _Try(
                    delivery,
                    outbox.event_body(event),
                    endpoints.signing_keys_of(endpoint, now),
                    lease,
                )
            except Exception as exc:
                # A try that cannot even be made (a secret that does not
                # decode, data that does not serialise) is a failed try on
                # record, retried and in the end dead-lettered, not a row
                # held back for a lease again and again.
                logger.exception("delivery %s could not be prepared", delivery.pk)
                failed_try = _Try(delivery, "", [], lease, started_at=now)
                error = f"{type(exc).__name__}: {exc}"[:500]
                unprepared.append((failed_try, transport.SendResult(None, "", 0, error=error)))
                continue
            tries.append(one)
    if cancelled:
        Delivery.objects.filter(pk__in=cancelled).update(
            status=DeliveryStatus.CANCELLED, next_attempt_at=None, locked_until=None
        )
    if held:
        _hold(held, lease)
    if unprepared:
        _record_safely(unprepared, lease)
    if len(tries) == 1:
        _settle([(tries[0], _sent(tries[0]))], lease)
    elif tries:
        pool = _sender()
        pending = {pool.submit(_sent, one): one for one in _interleaved(tries)}
        failure: BaseException | None = None
        while pending:
            done, _ = wait(pending, timeout=settings.ROUTING_RECORD_EVERY_SECONDS)
            if not done:
                continue
            outcomes = [(pending.pop(f), _outcome(f)) for f in done]
            try:
                _settle(outcomes, lease)
            except Exception as exc:  # recorded what it could; the rest still gets its turn
                failure = failure or exc
        if failure is not None:
            raise failure
    return claimed


def _settle(outcomes: list[tuple[_Try, transport.SendResult | None]], lease: dt.datetime) -> None:
    """Record what was sent; let go of what was not: held if its endpoint
    stopped taking events, else released for the next claim (a wake follows)."""
    sent = [(one, result) for one, result in outcomes if result is not None]
    unsent = [one.delivery for one, result in outcomes if result is None]
    held: list[Delivery] = []
    released: list[Any] = []
    for d in unsent:
        takes = outbox.endpoint_takes_deliveries(d.endpoint, d.event.type)
        if takes:
            released.append(d.pk)
        else:
            held.append(d)
    if held:
        _hold(held, lease)
    if released:
        Delivery.objects.filter(pk__in=released, locked_until=lease).update(locked_until=None)
        transaction.on_commit(outbox.deliveries_wake, robust=True)
    if sent:
        _record_safely(sent, lease)


_OPEN_FIELDS = ("is_active", "paused_at", "held_at", "deleted_at")


def _hold(held: list[Delivery], lease: dt.datetime) -> None:
    """Hold these claimed deliveries, whose endpoint stopped taking events
    as this worker saw it, until it is resumed or switched on again.

    What the worker saw may be out of date: a resume that committed since
    made every waiting event of the endpoint due, and holding one now would
    leave it waiting for a resume that has already happened. So the
    endpoints' rows are locked (a resume in progress ends first; one after
    this finds the held rows) and read again: what may go after all is let
    go for the next claim instead. (No key: the inserts of new deliveries
    to the endpoint, which take a key-share lock on it, are not waited for.)"""
    with transaction.atomic():
        current = {
            e.pk: e
            for e in Endpoint.objects.select_for_update(no_key=True)
            .filter(pk__in={d.endpoint_id for d in held})
            .order_by("pk")  # the order every locker of several endpoints takes
            .only(*_OPEN_FIELDS)
        }
        still: list[Any] = []
        released: list[Any] = []
        for d in held:
            now_open = current.get(d.endpoint_id)
            if now_open is not None and outbox.endpoint_takes_deliveries(now_open, d.event.type):
                for field in _OPEN_FIELDS:  # the batch's tries still to go see it too
                    setattr(d.endpoint, field, getattr(now_open, field))
                released.append(d.pk)
            else:
                still.append(d.pk)
        if still:
            Delivery.objects.filter(pk__in=still, locked_until=lease).update(
                next_attempt_at=None, locked_until=None
            )
        if released:
            Delivery.objects.filter(pk__in=released, locked_until=lease).update(locked_until=None)
            transaction.on_commit(outbox.deliveries_wake, robust=True)


def _record_safely(outcomes: list[tuple[_Try, transport.SendResult]], lease: dt.datetime) -> None:
    try:
        _record(outcomes, lease)
    except Exception:
        # Recording failed (a database error): let go at once so a retry
        # can try again. The department may see these events twice, under
        # the same webhook-ids.
        Delivery.objects.filter(
            pk__in=[one.delivery.pk for one, _ in outcomes], locked_until=lease
        ).update(locked_until=None)
        raise


# --- Recording ---------------------------------------------------------------------------

_FAILED_FIELDS = [
    "attempt_count",
    "schedule_index",
    "last_status_code",
    "last_error",
    "last_attempt_at",
    "locked_until",
    "status",
    "failed_at",
    "next_attempt_at",
    "enqueued_at",
]


def _record(outcomes: list[tuple[_Try, transport.SendResult]], lease: dt.datetime) -> None:
    """Put the tries on record in one transaction: the attempts, the
    endpoints' health, the handlers of what was delivered, and each
    delivery's next step (done, a retry when, or the dead letter)."""
    now = timezone.now()
    schedule = settings.ROUTING_RETRY_SCHEDULE
    # Endpoint rows are written in one order by every worker (no deadlock
    # between two records touching the same endpoints).
    outcomes = sorted(
        outcomes, key=lambda o: (str(o[0].delivery.endpoint_id), str(o[0].delivery.pk))
    )
    with transaction.atomic():
        _endpoints_refresh({one.delivery.endpoint_id: one.delivery.endpoint for one, _ in outcomes})
        current = {
            row["id"]: row
            for row in Delivery.objects.select_for_update(of=("self",))
            .filter(pk__in=[one.delivery.pk for one, _ in outcomes])
            .order_by("pk")
            .values(
                "id",
                "status",
                "locked_until",
                "attempt_count",
                "schedule_index",
                # An answer that came after its applicant closed the account
                # is not kept (a department's system may echo the event).
                "event__application__applicant__closed_at",
            )
        }
        attempts: list[DeliveryAttempt] = []
        delivered: dict[str, list[tuple[OutboxEvent, str]]] = defaultdict(list)
        succeeded: dict[int, list[Any]] = defaultdict(list)  # by status code
        failed: list[Delivery] = []
        taken_over: list[Any] = []
        finished: list[Delivery] = []
        retries: list[tuple[str, float]] = []
        for one, result in outcomes:
            delivery = one.delivery
            row = current.get(delivery.pk)
            if row is None:  # gone with its event (an erased account's data)
                continue
            endpoint, event = delivery.endpoint, delivery.event
            attempts.append(
                DeliveryAttempt(
                    delivery=delivery,
                    number=row["attempt_count"] + 1,
                    started_at=one.started_at or now,
                    duration_ms=result.duration_ms,
                    status_code=result.status_code,
                    error=result.error[:500],
                    response_body=""
                    if row["event__application__applicant__closed_at"]
                    else result.body,
                    succeeded=result.ok,
                )
            )
            if result.ok:
                endpoints.endpoint_mark_succeeded(endpoint, now)
                if _on_delivered.get(event.type):
                    delivered[event.type].append((event, _reference(result.answer)))
            else:
                endpoints.endpoint_mark_failed(endpoint, now, result)
            if row["status"] != DeliveryStatus.PENDING or row["locked_until"] != lease:
                # Our hold ran out and another worker (or a deletion) took
                # over: the try is on record, the delivery's state is theirs.
                taken_over.append(delivery.pk)
                continue
            delivery.attempt_count = row["attempt_count"] + 1
            delivery.schedule_index = row["schedule_index"]
            delivery.last_status_code = result.status_code
            delivery.last_error = result.error[:500]
            delivery.last_attempt_at = now
            delivery.locked_until = None
            if result.ok:
                delivery.status = DeliveryStatus.SUCCEEDED
                delivery.succeeded_at = now
                delivery.next_attempt_at = None
                succeeded[result.status_code or 0].append(delivery.pk)
                finished.append(delivery)
                continue
            if result.status_code == 410 and event.type != events.PING:
                # The endpoint is now disabled (see endpoints.endpoint_mark_failed);
                # the event waits for the department to enable it again. (A
                # ping is a test tried once: its answer ends it, 410 as any.)
                delivery.next_attempt_at = None
            else:
                delay = _retry_delay(delivery, event, result, schedule)
                if delay is None:
                    delivery.status = DeliveryStatus.FAILED
                    delivery.failed_at = now
                    delivery.next_attempt_at = None
                    finished.append(delivery)
                else:
                    delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
                    # Short waits ride on a countdown; longer ones are left to
                    # the sweeper, so no broker message outlives its visibility.
                    if delay <= settings.CELERY_MAX_COUNTDOWN:
                        delivery.enqueued_at = now
                        retries.append((str(delivery.pk), delay))
            failed.append(delivery)
        DeliveryAttempt.objects.bulk_create(attempts)
        for event_type, items in delivered.items():
            for handler in _on_delivered[event_type]:
                handler(items)
        if taken_over:
            Delivery.objects.filter(pk__in=taken_over).update(attempt_count=F("attempt_count") + 1)
        for status_code, ids in succeeded.items():
            Delivery.objects.filter(pk__in=ids).update(
                status=DeliveryStatus.SUCCEEDED,
                succeeded_at=now,
                next_attempt_at=None,
                locked_until=None,
                attempt_count=F("attempt_count") + 1,
                last_status_code=status_code,
                last_error="",
                last_attempt_at=now,
            )
        if failed:
            Delivery.objects.bulk_update(failed, _FAILED_FIELDS)
        if retries:
            transaction.on_commit(lambda: _nudge_retries(retries), robust=True)
        ordered = [d for d in finished if d.ordering_key is not None and d.sequence is not None]
        if ordered:
            transaction.on_commit(lambda: _release_next(ordered), robust=True)


def _endpoints_refresh(shared: dict[Any, Endpoint]) -> None:
    """The batch's endpoints' health as the database has it now (another
    worker's answers may have changed it since the claim, or a chunk of this
    batch rolled back)."""
    fields = ("consecutive_failures", "last_success_at", "paused_at", "held_at", "is_active")
    for row in Endpoint.objects.filter(pk__in=list(shared)).values("id", *fields):
        endpoint = shared[row["id"]]
        for field in fields:
            setattr(endpoint, field, row[field])


def _nudge_retries(retries: list[tuple[str, float]]) -> None:
    for delivery_id, delay in retries:
        outbox.deliveries_nudge([delivery_id], countdown=delay)


def _retry_delay(
    delivery: Delivery, event: OutboxEvent, result: transport.SendResult, schedule: Sequence[float]
) -> float | None:
    """Seconds until the next try of a failed delivery, or None: no more
    tries (a client error is final, a ping is a test, the schedule is spent).
    Moves ``delivery.schedule_index`` on when there is a next try."""
    if not _retryable(result.status_code) or event.type == events.PING:
        return None
    if delivery.schedule_index >= len(schedule):
        return None
    delay = _jittered(schedule[delivery.schedule_index])
    if result.status_code == 429 and result.retry_after:
        delay = max(delay, min(result.retry_after, max(schedule)))
    delivery.schedule_index += 1
    return delay


def _release_next(finished: list[Delivery]) -> None:
    """Nudge the events that may have waited for these (the next one of each
    one's application to its endpoint) now rather than at the next sweep.

    Runs after ``finished`` is committed: a next event committed before this
    query is found here, one committed after it sees its predecessor done
    when its own nudge claims it. One not due yet keeps its own countdown;
    held ones wait for their endpoint; the events after it wait in turn."""
    following = list(
        Delivery.objects.filter(
            ordering_key__in={d.ordering_key for d in finished},
            endpoint_id__in={d.endpoint_id for d in finished},
        )
        .filter(outbox.pending_as_filter())
        .order_by("sequence")
        .values("id", "ordering_key", "endpoint_id", "sequence", "next_attempt_at")
    )
    now = timezone.now()
    due = []
    for done in finished:
        after = next(
            (
                f
                for f in following
                if f["ordering_key"] == done.ordering_key
                and f["endpoint_id"] == done.endpoint_id
                and (f["sequence"] or 0) > (done.sequence or 0)
            ),
            None,
        )
        if after is not None and after["next_attempt_at"] and after["next_attempt_at"] <= now:
            due.append(after["id"])
    if due:
        Delivery.objects.filter(pk__in=due).update(enqueued_at=now)
        outbox.deliveries_nudge([str(i) for i in dict.fromkeys(due)])


def _reference(body: str) -> str:
    """The department's ``reference`` from its answer (the whole answer
    read, not the excerpt kept on record), as text a database column holds:
    no NUL, no lone surrogate (valid JSON may carry both)."""
    try:
        reference = json.loads(body).get("reference")
    except (ValueError, AttributeError, RecursionError):
        return ""
    if not reference:
        return ""
    text = str(reference).encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "")[:100]


def delivery_replay(
    *, delivery: Delivery, actor: endpoints.Actor, ip: str | None = None
) -> Delivery:
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
            .filter(pk=delivery.pk)
            .first()
        )
        if locked is None:  # an old ping, purged since it was read
            raise ServicesError(NOT_FOUND)
        if locked.locked_until and locked.locked_until > now:
            raise ServicesError(DELIVERY_NOT_RETRYABLE)
        if locked.status == DeliveryStatus.CANCELLED or locked.endpoint.deleted_at is not None:
            raise ServicesError(DELIVERY_NOT_RETRYABLE)
        locked.status = DeliveryStatus.PENDING
        locked.schedule_index = 0
        locked.next_attempt_at = now
        locked.failed_at = None
        locked.save(update_fields=["status", "schedule_index", "next_attempt_at", "failed_at"])
        audit_record(actor=actor, action="delivery.replayed", target=locked, ip=ip)
        delivery_ids = [str(locked.id)]
        transaction.on_commit(lambda: outbox.deliveries_nudge(delivery_ids), robust=True)
    return locked

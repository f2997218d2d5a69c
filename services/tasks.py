"""Celery tasks of the services app: thin, idempotent, by id.

The routing engine wakes these by name (``routing.deliver``,
``routing.deliver_due``, ``routing.handle_event``: see :mod:`services.routing.outbox`); the names are
fixed, the queues are set by name in ``CELERY_TASK_ROUTES``.
"""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from services.routing import deliveries, outbox, sweeper

# A database hiccup (deadlock, failover) is retried shortly; anything that
# outlives the retries the sweeper finds.
_SENDING = {
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": (DatabaseError,),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "max_retries": 5,
}


@shared_task(name=outbox.DELIVER_TASK, **_SENDING)
def delivery_attempt(delivery_id: str) -> None:
    """One try of one delivery (a retry, a replay, the sweeper's nudge)."""
    deliveries.delivery_attempt(delivery_id)


@shared_task(name=outbox.DELIVER_DUE_TASK, **_SENDING)
def deliveries_send_due() -> int:
    """Send whatever is due, in batches (the wake of a new event)."""
    return deliveries.deliveries_send_due()


@shared_task(name=outbox.HANDLE_EVENT_TASK, acks_late=True, ignore_result=True)
def event_handle(event_id: str) -> None:
    outbox.event_handle(event_id)


@shared_task(name="routing.sweep", acks_late=True, ignore_result=True)
def deliveries_sweep() -> dict[str, int]:
    return sweeper.deliveries_sweep()


@shared_task(name="routing.probe_paused", acks_late=True, ignore_result=True)
def endpoints_probe_paused() -> int:
    return sweeper.endpoints_probe_paused()


@shared_task(name="routing.purge_pings", acks_late=True, ignore_result=True)
def pings_purge() -> int:
    return sweeper.pings_purge()

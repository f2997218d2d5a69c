"""Celery tasks of the services app: thin, idempotent, by id."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from services import routing


@shared_task(
    name="routing.deliver",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=5,
)
def deliver(delivery_id: str) -> None:
    """One try of one delivery. A database hiccup (deadlock, failover) is
    retried shortly; anything that outlives the retries the sweeper finds."""
    routing.delivery_attempt(delivery_id)


@shared_task(name="routing.handle_event", acks_late=True, ignore_result=True)
def handle_event(event_id: str) -> None:
    routing.event_handle(event_id)


@shared_task(name="routing.sweep", acks_late=True, ignore_result=True)
def sweep() -> dict[str, int]:
    return routing.sweep()


@shared_task(name="routing.probe_paused", acks_late=True, ignore_result=True)
def probe_paused() -> int:
    return routing.probe_paused_endpoints()

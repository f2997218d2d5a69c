"""Celery tasks of the services app: thin, idempotent, by id."""

from __future__ import annotations

from celery import shared_task

from services import routing


@shared_task(name="routing.deliver", acks_late=True, ignore_result=True)
def deliver(delivery_id: str) -> None:
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

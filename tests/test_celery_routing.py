"""Work is routed to its own queue, so one kind of work cannot starve another."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from accounts.models import OtpChallenge
from config.celery import app
from tests.processes import celery_worker, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored"),
]


def queue_depths(names: list[str]) -> dict[str, int]:
    """Messages waiting per queue (the Redis transport keeps a list per queue)."""
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        return {name: client.llen(name) for name in names}


def test_a_task_sent_to_a_queue_lands_only_in_that_queue() -> None:
    names = ["default", "deliveries", "payments", "housekeeping"]
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
            queue(conn.default_channel).purge()
    assert queue_depths(names) == dict.fromkeys(names, 0)
    try:
        app.send_task("accounts.purge_otp_challenges", queue="housekeeping")
        assert queue_depths(names) == {
            "default": 0,
            "deliveries": 0,
            "payments": 0,
            "housekeeping": 1,
        }
        app.send_task("accounts.purge_otp_challenges")
        assert queue_depths(names)["default"] == 1
    finally:
        with app.connection_for_write() as conn:
            for queue in app.conf.task_queues:
                queue(conn.default_channel).purge()


@pytest.mark.django_db(transaction=True)
def test_a_worker_started_without_q_consumes_every_queue() -> None:
    """The production command line, in a real process, on the test database."""
    names = ["default", "deliveries", "payments", "housekeeping"]
    old = timezone.now() - dt.timedelta(days=3)
    with celery_worker("--concurrency", "1"):
        for queue in names:
            OtpChallenge.objects.create(
                phone="13800138000", code_hash="x", created_at=old, expires_at=old
            )
            app.send_task("accounts.purge_otp_challenges", queue=queue)
            wait_for(
                lambda: not OtpChallenge.objects.exists(),
                message=f"the worker did not take the task from {queue!r}",
            )


@pytest.mark.django_db(transaction=True)
def test_a_published_event_wakes_a_delivery_worker_on_the_deliveries_queue() -> None:
    """The routing engine does not import the tasks module: it wakes the
    worker by task name, and the message lands on the ``deliveries`` queue
    as a task of that name sent by hand would (not eagerly, as in the rest
    of the suite)."""
    from services.routing import endpoints, events, outbox
    from tests.accounts.factories import DepartmentFactory

    names = ["default", "deliveries", "payments", "housekeeping"]
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
            queue(conn.default_channel).purge()
    eager = app.conf.task_always_eager
    department = DepartmentFactory()
    endpoints.endpoint_create(
        department=department,
        url="http://127.0.0.1:9/events",
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    app.conf.task_always_eager = False
    try:
        event = outbox.event_publish(
            type=events.APPLICATION_SUBMITTED, data={}, department=department
        )
        assert queue_depths(names) == {
            "default": 0,
            "deliveries": 1,
            "payments": 0,
            "housekeeping": 0,
        }
        with app.connection_for_write() as conn:
            [raw] = conn.default_channel.client.lrange("deliveries", 0, -1)
        message = json.loads(raw)
        assert message["headers"]["task"] == "routing.deliver_due"
        assert message["headers"]["argsrepr"] == "()"
        assert event.deliveries.get().next_attempt_at is not None  # due: the wake's worker finds it

        # While that wake waits for a worker, more events add no message;
        # once a worker has taken it, the next event sends another.
        outbox.event_publish(type=events.APPLICATION_SUBMITTED, data={}, department=department)
        assert queue_depths(names)["deliveries"] == 1
        outbox.deliveries_wake_taken()
        outbox.event_publish(type=events.APPLICATION_SUBMITTED, data={}, department=department)
        assert queue_depths(names)["deliveries"] == 2
    finally:
        app.conf.task_always_eager = eager
        outbox.deliveries_wake_taken()
        with app.connection_for_write() as conn:
            for queue in app.conf.task_queues:
                queue(conn.default_channel).purge()

"""Deliveries, submissions and status changes racing on PostgreSQL's row locks."""

from __future__ import annotations

import random
import time

import pytest
from django.utils import timezone

from accounts.api_keys import api_key_create
from services.applications import (
    application_cancel,
    application_department_update,
    application_submit,
)
from services.models import Application, Delivery, OutboxEvent
from services.routing import deliveries, endpoints, events, outbox
from tests.accounts.factories import CitizenFactory
from tests.concurrency import at_once
from tests.services.conftest import GOOD_FORM
from tests.services.department import Answer
from tests.services.factories import ServiceFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_one_citizens_applications_move_at_once_without_deadlocks(
    department_server, settings
) -> None:
    """Regression: locking an application for a change used to lock its
    citizen's and service's rows too. A worker marking one application
    routed then deadlocked with the web inserting the citizen's next one
    (whose foreign keys take share locks on those same rows)."""
    settings.ROUTING_BREAKER_THRESHOLD = 1000
    service = ServiceFactory()
    endpoints.endpoint_create(
        department=service.department,
        url=department_server.url(),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    key, _raw = api_key_create(department=service.department, scope="integrator")
    citizen = CitizenFactory(verified=True)
    for _round in range(4):
        department_server.default = Answer(503, {})  # first tries fail, so retries can race
        waiting = [
            application_submit(citizen=citizen, service=service, form=GOOD_FORM) for _ in range(12)
        ]
        department_server.default = Answer(200, {"reference": "R"})
        due = Delivery.objects.filter(event__application__in=waiting[:6], status="pending")
        due.update(next_attempt_at=timezone.now())
        delivery_ids = list(due.values_list("id", flat=True))

        def work(i: int, delivery_ids: list = delivery_ids, waiting: list = waiting) -> str:
            if i < 6:
                deliveries.delivery_attempt(delivery_ids[i])
                return "delivered"
            if i < 12:
                application_submit(citizen=citizen, service=service, form=GOOD_FORM)
                return "submitted"
            application_department_update(
                application=waiting[i - 6], status="accepted", api_key=key
            )
            return "accepted"

        results = at_once(16, work)
        assert results.count("delivered") == 6 and results.count("accepted") == 4
        routed = Application.objects.filter(pk__in=[a.pk for a in waiting[:6]], status="routed")
        assert routed.count() == 6
    assert Application.objects.filter(status="accepted").count() == 4 * 4


def test_identical_submits_racing_with_one_idempotency_key_make_one_application() -> None:
    """A phone that retries while the first request is still running: every
    answer is the one application, created once."""
    from tests.conftest import client_for

    service = ServiceFactory()
    citizen = CitizenFactory(verified=True)

    def submit(_: int):
        response = client_for(citizen).post(
            "/api/v1/applications/",
            {"service": service.code, "form": GOOD_FORM},
            format="json",
            HTTP_IDEMPOTENCY_KEY="retry-same-tap",
        )
        return response.status_code, response.json()

    answers = at_once(6, submit)
    assert {status for status, _ in answers} == {201}
    assert len({body["id"] for _, body in answers}) == 1
    assert Application.objects.count() == 1
    assert OutboxEvent.objects.filter(type="application.submitted").count() == 1


def test_identical_status_reports_racing_with_one_idempotency_key_apply_once() -> None:
    """A department's system that retries its report while the first is
    still running: every answer is the first one, and the application moves,
    is audited and tells its citizen once."""
    from accounts.models import AuditEntry, Message
    from services.models import TimelineEntry
    from tests.conftest import client_with_key

    service = ServiceFactory()
    _key, raw = api_key_create(department=service.department, scope="integrator")
    citizen = CitizenFactory(verified=True)
    application = application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    messages_before = Message.objects.count()

    def report(_: int):
        response = client_with_key(raw).post(
            f"/api/v1/dept/applications/{application.number}/status/",
            {"status": "accepted", "note": "已受理", "reference": "R-1"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="accept-once",
        )
        return response.status_code, response.json()

    answers = at_once(6, report)
    assert {status for status, _ in answers} == {200}, answers
    assert len({str(body) for _, body in answers}) == 1
    moves = TimelineEntry.objects.filter(application=application, status="accepted")
    assert moves.count() == 1
    assert AuditEntry.objects.filter(action="application.status_changed").count() == 1
    assert Message.objects.count() == messages_before + 1


@pytest.mark.parametrize("claim", ["by id", "in batches"])
def test_workers_racing_over_every_delivery_send_each_applications_events_in_order(
    department_server, settings, monkeypatch, claim
) -> None:
    """Eight workers try every delivery at once, over and over (each by id,
    or each taking small batches of whatever is due), while the department
    fails the first try of every submit: no cancel is claimed while its
    application's submit is still pending, whoever asks first."""
    settings.ROUTING_BREAKER_THRESHOLD = 1000
    settings.ROUTING_RETRY_SCHEDULE = [0] * 8  # a failed try is due again at once
    settings.ROUTING_RETRY_JITTER = 0
    # No nudges: the workers below find the deliveries by polling, so only
    # the claim itself keeps the order.
    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args, **kwargs: None)
    monkeypatch.setattr(outbox, "deliveries_wake", lambda *args, **kwargs: True)
    service = ServiceFactory()
    endpoints.endpoint_create(
        department=service.department,
        url=department_server.url(),
        events=[events.APPLICATION_SUBMITTED, events.APPLICATION_CANCELLED],
        actor=None,
    )
    citizen = CitizenFactory(verified=True)
    numbers = []
    for _ in range(10):
        application = application_submit(citizen=citizen, service=service, form=GOOD_FORM)
        application_cancel(citizen=citizen, application=application)
        numbers.append(application.number)
    failed_once: set[str] = set()

    def respond(received):
        event_id = received.headers["webhook-id"]
        if received.payload["type"] == events.APPLICATION_SUBMITTED and event_id not in failed_once:
            failed_once.add(event_id)
            return Answer(500, {}, delay=0.01)
        return Answer(200, {}, delay=0.01)

    department_server.respond = respond
    delivery_ids = list(Delivery.objects.values_list("id", flat=True))
    assert len(delivery_ids) == 20

    def work(i: int) -> int:
        order = list(delivery_ids)
        random.Random(i).shuffle(order)
        tries = 0
        deadline = time.monotonic() + 45
        while Delivery.objects.filter(status="pending").exists():
            assert time.monotonic() < deadline, "deliveries did not finish"
            if claim == "in batches":
                tries += deliveries.deliveries_send_due(batch_size=3, budget_seconds=0)
            else:
                for delivery_id in order:
                    tries += deliveries.delivery_attempt(delivery_id) is not None
            time.sleep(0.005)
        return tries

    assert sum(at_once(8, work)) == 10 * 2 + 10  # every delivery once, every submit twice
    for number in numbers:
        arrived = [
            r.payload["type"]
            for r in department_server.received
            if r.payload["data"]["application"]["number"] == number
        ]
        assert arrived == [
            events.APPLICATION_SUBMITTED,
            events.APPLICATION_SUBMITTED,
            events.APPLICATION_CANCELLED,
        ], number
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}

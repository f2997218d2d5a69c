"""An endpoint resumed while a worker holds its events: nothing is left held
behind an endpoint that takes events again."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from services.applications import application_submit
from services.models import Delivery, Endpoint
from services.routing import deliveries, endpoints, events, outbox
from tests.accounts.factories import CitizenFactory
from tests.services.conftest import GOOD_FORM, department_endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def quiet(monkeypatch):
    """No wakes: the test takes the batches itself."""
    monkeypatch.setattr(outbox, "deliveries_wake", lambda **kwargs: True)
    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args, **kwargs: True)


def test_an_endpoint_resumed_after_the_claim_gets_the_event_the_worker_saw_paused(
    quiet, department, service, department_server
) -> None:
    """The worker claims a due event while the breaker has its endpoint
    paused; before it acts on what it saw, the department's ping (or its
    PATCH) resumes the endpoint and makes its waiting events due. The worker
    must not hold the event behind the endpoint that now takes events: it
    goes with the next batch."""
    hook = department_endpoint(department, department_server, [events.APPLICATION_SUBMITTED])
    application_submit(citizen=CitizenFactory(verified=True), service=service, form=GOOD_FORM)
    Endpoint.objects.filter(pk=hook.pk).update(paused_at=timezone.now(), pause_reason="x")

    claimed, lease = deliveries._claim_due(32)
    assert [d.endpoint.paused_at is not None for d in claimed] == [True]
    endpoints.endpoint_update(endpoint=hook, actor=None, is_active=True)  # resumes it
    deliveries._attempt(claimed, lease)

    assert Endpoint.objects.get(pk=hook.pk).state == "active"
    assert deliveries.deliveries_send_due() == 1
    assert len(department_server.of_type(events.APPLICATION_SUBMITTED)) == 1
    assert Delivery.objects.get().status == "succeeded"


def test_a_try_left_unsent_for_a_pause_is_not_held_once_the_endpoint_resumed(
    quiet, department, service, department_server
) -> None:
    """A try of a batch is not sent because an earlier answer of the same
    batch paused its endpoint; by the time the worker lets it go, the
    endpoint was resumed. The try goes with the next batch instead of
    waiting, held, for a resume that already happened."""
    department_endpoint(department, department_server, [events.APPLICATION_SUBMITTED])
    application_submit(citizen=CitizenFactory(verified=True), service=service, form=GOOD_FORM)
    claimed, lease = deliveries._claim_due(32)
    [delivery] = claimed
    # What an earlier answer of the batch left on the worker's copy ...
    delivery.endpoint.paused_at = timezone.now() - dt.timedelta(seconds=1)
    one = deliveries._Try(delivery, outbox.event_body(delivery.event), [], lease)
    # ... and the database once the department's ping resumed it.
    deliveries._settle([(one, None)], lease)

    assert deliveries.deliveries_send_due() == 1
    assert len(department_server.of_type(events.APPLICATION_SUBMITTED)) == 1
    assert Delivery.objects.get().status == "succeeded"

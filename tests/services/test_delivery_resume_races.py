"""An endpoint resumed while a worker holds its events: nothing is left held
behind an endpoint that takes events again."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.utils import timezone

from services.applications import application_submit
from services.models import Delivery, Endpoint
from services.routing import deliveries, endpoints, events, outbox
from tests.accounts.factories import CitizenFactory
from tests.concurrency import a_backend_waits_on_a_lock, in_thread
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


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_event_written_while_its_endpoint_resumes_is_not_left_held(
    monkeypatch, department, service, department_server
) -> None:
    """A citizen applies while the department switches its paused endpoint
    back on. The application's transaction read the endpoint as paused and
    wrote the delivery held; the resume made due what it could see, which
    was not yet that delivery. Once both have committed the delivery must be
    due, not held behind an endpoint that takes events."""
    monkeypatch.setattr(outbox, "deliveries_wake", lambda **kwargs: True)
    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args, **kwargs: True)
    hook = department_endpoint(department, department_server, [events.APPLICATION_SUBMITTED])
    Endpoint.objects.filter(pk=hook.pk).update(paused_at=timezone.now(), pause_reason="x")
    citizen = CitizenFactory(verified=True)

    # The resume stops once it has lifted the pause, before it makes the
    # waiting events due (only the first call: the application's own check
    # of the endpoint goes on).
    paused, release = threading.Event(), threading.Event()
    real_open = outbox.endpoint_open
    calls = []

    def pausing(endpoint):
        calls.append(endpoint)
        if len(calls) == 1:
            paused.set()
            assert release.wait(30)
        return real_open(endpoint)

    monkeypatch.setattr(outbox, "endpoint_open", pausing)
    errors: list[BaseException] = []
    resuming = in_thread(
        lambda: endpoints.endpoint_update(endpoint=hook, actor=None, is_active=True), errors
    )
    assert paused.wait(30)
    applying = in_thread(
        lambda: application_submit(citizen=citizen, service=service, form=GOOD_FORM), errors
    )
    a_backend_waits_on_a_lock(timeout=2)  # the application's insert waits on the endpoint row
    release.set()
    resuming.join(60)
    applying.join(60)
    assert not errors, errors

    assert Endpoint.objects.get(pk=hook.pk).state == "active"
    delivery = Delivery.objects.get()
    assert delivery.next_attempt_at is not None
    assert deliveries.deliveries_send_due() == 1
    assert len(department_server.of_type(events.APPLICATION_SUBMITTED)) == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_event_written_while_its_paused_endpoint_is_removed_is_cancelled_with_it(
    monkeypatch, department, service, department_server
) -> None:
    """A citizen applies while the department removes its paused endpoint:
    the removal cancelled what it could see waiting, not the delivery the
    application's transaction was writing, held. Once both have committed
    that delivery is cancelled too, not left pending for good."""
    monkeypatch.setattr(outbox, "deliveries_wake", lambda **kwargs: True)
    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args, **kwargs: True)
    hook = department_endpoint(department, department_server, [events.APPLICATION_SUBMITTED])
    Endpoint.objects.filter(pk=hook.pk).update(paused_at=timezone.now(), pause_reason="x")
    hook.refresh_from_db()
    citizen = CitizenFactory(verified=True)

    # The removal stops after it cancelled what was waiting, before it commits.
    paused, release = threading.Event(), threading.Event()
    real_audit = endpoints.audit_record

    def pausing(**kwargs):
        paused.set()
        assert release.wait(30)
        return real_audit(**kwargs)

    monkeypatch.setattr(endpoints, "audit_record", pausing)
    errors: list[BaseException] = []
    removing = in_thread(lambda: endpoints.endpoint_delete(endpoint=hook, actor=None), errors)
    assert paused.wait(30)
    applying = in_thread(
        lambda: application_submit(citizen=citizen, service=service, form=GOOD_FORM), errors
    )
    a_backend_waits_on_a_lock(timeout=2)
    release.set()
    removing.join(60)
    applying.join(60)
    assert not errors, errors

    assert Endpoint.objects.get(pk=hook.pk).state == "deleted"
    assert Delivery.objects.get().status == "cancelled"

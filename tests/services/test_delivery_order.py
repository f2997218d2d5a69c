"""Events of one application reach an endpoint in the order they happened: a
later one waits while an earlier one to the same endpoint is still pending,
and goes as soon as that one is delivered or dead-lettered."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from services.models import Application, Delivery, Endpoint
from services.routing import deliveries, endpoints, events, outbox, sweeper
from tests.services.conftest import department_endpoint, try_again
from tests.services.department import Answer

pytestmark = pytest.mark.django_db

SUBMITTED, CANCELLED = events.APPLICATION_SUBMITTED, events.APPLICATION_CANCELLED


@pytest.fixture
def hook(department, department_server) -> Endpoint:
    """The department's endpoint for submits and cancels only."""
    return department_endpoint(department, department_server, [SUBMITTED, CANCELLED])


def cancel(client, capture, application: dict) -> None:
    with capture(execute=True):
        response = client.post(f"/api/v1/applications/{application['id']}/cancel/")
    assert response.status_code == 200, response.json()


def delivery_of(application: dict, event_type: str) -> Delivery:
    return Delivery.objects.get(event__application_id=application["id"], event__type=event_type)


def delivery_places() -> dict[tuple[int | None, str], tuple[int | None, int | None]]:
    """Each delivery's place in its order, by (application id, event type)."""
    return {
        (d.event.application_id, d.event.type): (d.ordering_key, d.sequence)
        for d in Delivery.objects.select_related("event")
    }


def arrivals(server) -> list[tuple[str, str]]:
    return [
        (r.payload["data"]["application"]["number"], r.payload["type"]) for r in server.received
    ]


def test_a_cancel_right_after_a_submit_waits_until_the_submit_is_delivered(
    citizen_api, apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    department_server.answer(Answer(500, {"error": "busy"}))
    application = apply()
    cancel(citizen_api, capture, application)
    number = application["number"]
    assert arrivals(department_server) == [(number, SUBMITTED)]
    waiting = delivery_of(application, CANCELLED)
    assert waiting.status == "pending" and waiting.attempt_count == 0

    # Nudging the waiting cancel again (a duplicate message) sends nothing.
    with capture(execute=True):
        assert deliveries.delivery_attempt(waiting.pk) is None
    assert len(department_server.received) == 1

    # The submit's retry succeeds; the cancel follows at once, not at a sweep.
    try_again(delivery_of(application, SUBMITTED), capture)
    assert arrivals(department_server) == [
        (number, SUBMITTED),
        (number, SUBMITTED),
        (number, CANCELLED),
    ]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}
    assert Application.objects.get(pk=application["id"]).status == "cancelled"


def test_a_dead_lettered_event_releases_the_next_one(
    settings, citizen_api, apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    settings.ROUTING_RETRY_SCHEDULE = [5]
    department_server.answer(Answer(500, {}), Answer(500, {}))
    application = apply()
    cancel(citizen_api, capture, application)
    assert len(department_server.received) == 1
    try_again(delivery_of(application, SUBMITTED), capture)  # the last try fails too
    assert delivery_of(application, SUBMITTED).status == "failed"
    assert delivery_of(application, CANCELLED).status == "succeeded"
    assert [t for _n, t in arrivals(department_server)] == [SUBMITTED, SUBMITTED, CANCELLED]


def test_a_client_error_on_the_earlier_event_does_not_hold_the_later_one(
    citizen_api, apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    department_server.answer(Answer(400, {"error": "schema"}))  # final at once: dead letter
    application = apply()
    cancel(citizen_api, capture, application)
    assert [t for _n, t in arrivals(department_server)] == [SUBMITTED, CANCELLED]
    assert delivery_of(application, CANCELLED).status == "succeeded"


def test_events_of_different_applications_do_not_wait_for_each_other(
    citizen_api, apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    department_server.answer(Answer(500, {}))
    stuck = apply()
    cancel(citizen_api, capture, stuck)
    other = apply()
    cancel(citizen_api, capture, other)
    assert arrivals(department_server) == [
        (stuck["number"], SUBMITTED),
        (other["number"], SUBMITTED),
        (other["number"], CANCELLED),
    ]
    assert delivery_of(stuck, CANCELLED).attempt_count == 0


def test_a_ping_does_not_wait_for_an_applications_events(
    apply, integrator_api, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    department_server.answer(Answer(500, {}))
    apply()
    with capture(execute=True):
        assert integrator_api.post(f"/api/v1/dept/endpoints/{hook.id}/test/").status_code == 202
    assert [r.payload["type"] for r in department_server.received] == [SUBMITTED, "ping"]


def test_the_sweeper_leaves_a_waiting_event_alone_until_its_turn(
    settings, citizen_api, apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    department_server.answer(Answer(500, {}))
    application = apply()
    cancel(citizen_api, capture, application)
    long_ago = timezone.now() - dt.timedelta(seconds=settings.ROUTING_SWEEP_GRACE_SECONDS + 1)
    Delivery.objects.filter(pk=delivery_of(application, CANCELLED).pk).update(
        next_attempt_at=long_ago, enqueued_at=None
    )
    with capture(execute=True):
        assert sweeper.deliveries_sweep()["deliveries"] == 0  # the submit's retry is not due yet
    assert len(department_server.received) == 1

    Delivery.objects.filter(pk=delivery_of(application, SUBMITTED).pk).update(
        next_attempt_at=long_ago,
        enqueued_at=long_ago,  # its countdown message was lost
    )
    with capture(execute=True):
        assert sweeper.deliveries_sweep()["deliveries"] == 1  # the submit; it releases the cancel
    assert [t for _n, t in arrivals(department_server)] == [SUBMITTED, SUBMITTED, CANCELLED]


def test_held_events_keep_their_order_when_the_endpoint_is_switched_back_on(
    citizen_api, integrator_api, apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    integrator_api.patch(f"/api/v1/dept/endpoints/{hook.id}/", {"is_active": False}, format="json")
    first = apply()
    cancel(citizen_api, capture, first)
    second = apply()
    cancel(citizen_api, capture, second)
    assert department_server.received == []
    with capture(execute=True):
        integrator_api.patch(
            f"/api/v1/dept/endpoints/{hook.id}/", {"is_active": True}, format="json"
        )
    for application in (first, second):
        mine = [t for n, t in arrivals(department_server) if n == application["number"]]
        assert mine == [SUBMITTED, CANCELLED]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}


def test_a_replayed_dead_letter_goes_at_once_and_the_later_retry_waits_for_it(
    citizen_api, integrator_api, apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    """A replay takes its event's old place: nothing delivered is recalled,
    an event after it that is still pending waits for it again."""
    capture = django_capture_on_commit_callbacks
    department_server.answer(Answer(400, {}), Answer(500, {}), Answer(503, {}))
    application = apply()  # 400: dead letter
    cancel(citizen_api, capture, application)  # goes, 500: retrying
    submitted = delivery_of(application, SUBMITTED)
    with capture(execute=True):
        response = integrator_api.post(f"/api/v1/dept/deliveries/{submitted.id}/retry/")
    assert response.status_code == 202  # sent at once, 503: retrying
    assert [t for _n, t in arrivals(department_server)] == [SUBMITTED, CANCELLED, SUBMITTED]

    try_again(delivery_of(application, CANCELLED), capture)  # waits for the replayed submit
    assert len(department_server.received) == 3
    try_again(submitted, capture)  # delivered, and the cancel follows
    assert [t for _n, t in arrivals(department_server)][3:] == [SUBMITTED, CANCELLED]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}


def test_each_event_of_an_application_takes_the_next_place(
    citizen, service, hook, department, department_server
) -> None:
    from services.applications import application_cancel, application_submit
    from tests.services.conftest import GOOD_FORM

    one = application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    two = application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    application_cancel(citizen=citizen, application=one)
    assert delivery_places() == {
        (one.pk, SUBMITTED): (one.pk, 1),
        (two.pk, SUBMITTED): (two.pk, 1),
        (one.pk, CANCELLED): (one.pk, 2),
    }
    ping = endpoints.endpoint_ping(endpoint=hook, actor=None)
    assert (ping.ordering_key, ping.sequence) == (None, None)


def test_deliveries_pending_at_the_upgrade_take_their_places(
    citizen, service, hook, department_server, monkeypatch
) -> None:
    """The migration that brought the order numbers the deliveries still on
    their way, by event time, so the order holds across the upgrade."""
    import importlib

    from django.apps import apps

    from services.applications import application_cancel, application_submit
    from tests.services.conftest import GOOD_FORM

    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args: None)  # nothing is sent
    monkeypatch.setattr(outbox, "deliveries_wake", lambda: True)
    one = application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    application_cancel(citizen=citizen, application=one)
    two = application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    Delivery.objects.filter(event__application=two).update(status="succeeded")
    endpoints.endpoint_ping(endpoint=hook, actor=None)
    Delivery.objects.update(ordering_key=None, sequence=None)  # as before the upgrade

    migration = importlib.import_module("services.migrations.0004_delivery_order")
    migration.order_pending_deliveries(apps, None)
    assert delivery_places() == {
        (one.pk, SUBMITTED): (one.pk, 1),
        (one.pk, CANCELLED): (one.pk, 2),
        (two.pk, SUBMITTED): (None, None),  # finished: holds nothing back
        (None, "ping"): (None, None),
    }

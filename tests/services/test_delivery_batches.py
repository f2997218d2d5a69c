"""A worker taking due deliveries in batches: one claim, the POSTs side by
side, the outcomes recorded together, each delivery's own fate kept."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Message
from services.applications import application_submit
from services.models import Application, Delivery, DeliveryAttempt, Endpoint
from services.routing import deliveries, endpoints, events, outbox, transport
from tests.accounts.factories import CitizenFactory
from tests.processes import wait_for
from tests.services.conftest import GOOD_FORM
from tests.services.department import Answer, DepartmentServer
from tests.services.factories import ServiceFactory


@pytest.fixture
def quiet(monkeypatch):
    """No wakes: the test takes the batches itself."""
    monkeypatch.setattr(outbox, "deliveries_wake", lambda: True)
    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args, **kwargs: True)


def submitted(service, count: int) -> list[Application]:
    citizens = [CitizenFactory(verified=True) for _ in range(count)]
    return [
        application_submit(citizen=citizen, service=service, form=GOOD_FORM) for citizen in citizens
    ]


@pytest.mark.django_db
def test_a_batch_keeps_each_deliverys_own_outcome(quiet, settings) -> None:
    """One batch to three departments' systems: one takes it, one fails for
    now (a retry is scheduled), one refuses it for good (a dead letter); each
    delivery and attempt says so, and only the delivered application is
    routed, with its department's reference."""
    settings.ROUTING_RETRY_JITTER = 0
    with DepartmentServer() as ok, DepartmentServer() as busy, DepartmentServer() as refusing:
        ok.default = Answer(200, {"reference": "OK-1"})
        busy.default = Answer(503, {})
        refusing.default = Answer(422, {})
        services = []
        for server in (ok, busy, refusing):
            service = ServiceFactory()
            endpoints.endpoint_create(
                department=service.department,
                url=server.url(),
                events=[events.APPLICATION_SUBMITTED],
                actor=None,
            )
            services.append(service)
        [delivered], [retried], [refused] = (submitted(s, 1) for s in services)

        assert deliveries.deliveries_send_due() == 3

    def delivery_of(application):
        return Delivery.objects.get(event__application=application)

    assert delivery_of(delivered).status == "succeeded"
    assert delivery_of(retried).status == "pending"
    assert delivery_of(retried).next_attempt_at is not None
    assert delivery_of(retried).schedule_index == 1
    assert delivery_of(refused).status == "failed"
    assert sorted(DeliveryAttempt.objects.values_list("status_code", "succeeded")) == [
        (200, True),
        (422, False),
        (503, False),
    ]
    assert Delivery.objects.filter(locked_until__isnull=False).count() == 0
    statuses = dict(Application.objects.values_list("pk", "status"))
    assert statuses == {delivered.pk: "routed", retried.pk: "submitted", refused.pk: "submitted"}
    assert Application.objects.get(pk=delivered.pk).department_reference == "OK-1"


@pytest.mark.django_db
def test_a_batch_stores_references_from_answers_longer_than_the_kept_excerpt(
    quiet, department, department_server, settings
) -> None:
    """The batched path reads each reference from the whole answer read, as
    a lone delivery does, not from the excerpt kept on record."""
    settings.ROUTING_SEND_CONCURRENCY = 4
    endpoints.endpoint_create(
        department=department,
        url=department_server.url(),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    service = ServiceFactory(department=department)
    department_server.respond = lambda received: Answer(
        200,
        {
            "echo": "x" * 5000,
            "reference": "R-" + received.payload["data"]["application"]["number"],
        },
    )
    applications = submitted(service, 3)
    assert deliveries.deliveries_send_due(batch_size=3) == 3
    stored = Application.objects.filter(pk__in=[a.pk for a in applications])
    assert {(a.status, a.department_reference) for a in stored} == {
        ("routed", f"R-{a.number}") for a in stored
    }
    assert all(
        len(body.encode()) <= transport.RESPONSE_KEEP_BYTES
        for body in DeliveryAttempt.objects.values_list("response_body", flat=True)
    )


@pytest.mark.django_db
def test_a_batch_costs_the_same_statements_for_five_deliveries_or_twenty(
    quiet, department, department_server, settings
) -> None:
    """Statements per batch, not per delivery: claiming, recording and
    routing twenty applications costs what five cost."""
    settings.ROUTING_SEND_CONCURRENCY = 20
    settings.ROUTING_RECORD_EVERY_SECONDS = 30  # every answer in one record
    endpoints.endpoint_create(
        department=department,
        url=department_server.url(),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    service = ServiceFactory(department=department)
    # Each application gets its own reference from the department.
    department_server.respond = lambda received: Answer(
        200, {"reference": "R-" + received.payload["data"]["application"]["number"]}
    )
    counts = []
    for size in (5, 20):
        applications = submitted(service, size)
        # The endpoint's success time is written at most once a second; held
        # ahead here so that neither batch writes it and the counts compare.
        Endpoint.objects.update(last_success_at=timezone.now() + dt.timedelta(hours=1))
        with CaptureQueriesContext(connection) as queries:
            assert deliveries.deliveries_send_due(batch_size=size) == size
        counts.append(len(queries))
        stored = Application.objects.filter(pk__in=[a.pk for a in applications])
        assert {(a.status, a.department_reference) for a in stored} == {
            ("routed", f"R-{a.number}") for a in stored
        }
        # Each citizen hears of the move once.
        assert (
            Message.objects.filter(
                kind="application.status", user__in=[a.applicant_id for a in applications]
            ).count()
            == size
        )
    # Two claims, the endpoints' health, the record, the routing; savepoints.
    assert counts[0] == counts[1] <= 17, counts


@pytest.mark.django_db
def test_a_full_batch_wakes_another_worker_and_the_rest_follows(
    monkeypatch, department, department_server
) -> None:
    """A claim that fills the batch wakes another worker to share the load,
    and the worker goes on taking batches until one comes back short."""
    woken = []
    monkeypatch.setattr(outbox, "deliveries_wake", lambda: woken.append(1) or True)
    endpoints.endpoint_create(
        department=department,
        url=department_server.url(),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    submitted(ServiceFactory(department=department), 7)
    woken.clear()  # the submits' own wakes

    assert deliveries.deliveries_send_due(batch_size=3) == 7  # 3 + 3 + 1
    assert len(woken) == 2  # after each full batch
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_slow_department_does_not_hold_back_the_record_of_a_quick_one(quiet) -> None:
    """In one batch, the quick department's delivery is on record (and its
    application routed) while the slow one's POST is still unanswered."""
    release = threading.Event()
    with DepartmentServer() as quick, DepartmentServer() as slow:
        slow.on_request = lambda received: release.wait(30)
        services = []
        for server in (quick, slow):
            service = ServiceFactory()
            endpoints.endpoint_create(
                department=service.department,
                url=server.url(),
                events=[events.APPLICATION_SUBMITTED],
                actor=None,
            )
            services.append(service)
        [fast], [late] = (submitted(s, 1) for s in services)
        outcome: list[int] = []

        def work() -> None:
            try:
                outcome.append(deliveries.deliveries_send_due())
            finally:
                connection.close()

        worker = threading.Thread(target=work)
        worker.start()
        try:
            wait_for(
                lambda: Application.objects.get(pk=fast.pk).status == "routed",
                timeout=20,
                interval=0.02,
                message="the quick delivery waited for the slow one",
            )
            assert Application.objects.get(pk=late.pk).status == "submitted"
            assert Delivery.objects.get(event__application=late).locked_until is not None
        finally:
            release.set()
            worker.join(30)
        assert outcome == [2]
        assert Application.objects.get(pk=late.pk).status == "routed"


@pytest.mark.django_db
def test_a_try_its_hold_would_not_cover_is_let_go_unsent(
    quiet, settings, department, department_server
) -> None:
    """A POST that could still be on the wire when the worker's hold runs
    out is not sent (another worker could take the delivery over and send
    the application's next event first): the delivery is let go, due, with
    nothing on record, and the next claim sends it."""
    endpoints.endpoint_create(
        department=department,
        url=department_server.url(),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    applications = submitted(ServiceFactory(department=department), 2)
    settings.ROUTING_TIMEOUT_SECONDS = settings.ROUTING_LEASE_SECONDS  # a POST could outlast it

    assert deliveries.deliveries_send_due() == 2
    assert department_server.received == []
    assert DeliveryAttempt.objects.count() == 0
    assert set(Delivery.objects.values_list("status", "locked_until", "attempt_count")) == {
        ("pending", None, 0)
    }

    settings.ROUTING_TIMEOUT_SECONDS = 2
    assert deliveries.deliveries_send_due() == 2
    assert len(department_server.received) == 2
    assert {a.status for a in Application.objects.filter(pk__in=[a.pk for a in applications])} == {
        "routed"
    }


@pytest.mark.django_db
def test_a_try_that_cannot_be_made_is_a_failed_try_on_record(
    quiet, monkeypatch, settings, department, department_server
) -> None:
    """A delivery whose request cannot even be built (here: its signing
    secret fails) is recorded as a failed try with the reason and follows
    the retry schedule; the rest of the batch goes out."""
    settings.ROUTING_RETRY_JITTER = 0
    broken = ServiceFactory()
    endpoint_broken, _ = endpoints.endpoint_create(
        department=broken.department,
        url=department_server.url("/broken"),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    endpoints.endpoint_create(
        department=department,
        url=department_server.url("/fine"),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    real_keys = endpoints.signing_keys_of

    def keys(endpoint, now):
        if endpoint.pk == endpoint_broken.pk:
            raise ValueError("secret does not decode")
        return real_keys(endpoint, now)

    monkeypatch.setattr(endpoints, "signing_keys_of", keys)
    [failing] = submitted(broken, 1)
    [fine] = submitted(ServiceFactory(department=department), 1)

    assert deliveries.deliveries_send_due() == 2
    assert [r.path for r in department_server.received] == ["/fine"]
    failed = Delivery.objects.get(event__application=failing)
    assert (failed.status, failed.attempt_count, failed.schedule_index) == ("pending", 1, 1)
    assert failed.locked_until is None and failed.next_attempt_at is not None
    assert "secret does not decode" in failed.attempts.get().error
    assert Application.objects.get(pk=fine.pk).status == "routed"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_sweeper_wakes_a_worker_past_a_wake_mark_left_behind(
    settings, department, department_server, django_capture_on_commit_callbacks
) -> None:
    """A wake that never reached a worker leaves its mark: publishes send no
    wake while it lasts. The sweeper wakes one anyway and the events go."""
    from config.redis_client import redis_client, redis_key

    settings.ROUTING_SWEEP_GRACE_SECONDS = 0
    endpoints.endpoint_create(
        department=department,
        url=department_server.url(),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    redis_client().set(redis_key("routing:wake"), 1, ex=60)  # a lost wake's mark
    [application] = submitted(ServiceFactory(department=department), 1)
    assert department_server.received == []  # the publish sent no wake

    from services.routing import sweeper

    assert sweeper.deliveries_sweep()["deliveries"] == 1
    assert len(department_server.received) == 1
    assert Application.objects.get(pk=application.pk).status == "routed"

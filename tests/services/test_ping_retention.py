"""Finished pings (a paused endpoint's probes, a department's /test/) go
after ROUTING_PING_RETENTION_DAYS, with their deliveries and attempts; the
events of applications, and their deliveries, stay."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from config.errors import NOT_FOUND
from services import tasks
from services.errors import ServicesError
from services.models import Delivery, DeliveryAttempt, DeliveryStatus, OutboxEvent
from services.routing import deliveries, endpoints, events, sweeper
from tests.services.department import Answer

pytestmark = pytest.mark.django_db


def _ping(hook) -> Delivery:
    """A ping sent and answered."""
    delivery = endpoints.endpoint_ping(endpoint=hook, actor=None)
    deliveries.delivery_attempt(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status != DeliveryStatus.PENDING and delivery.attempts.count() == 1
    return delivery


def _age(delivery: Delivery, days: float) -> None:
    then = timezone.now() - dt.timedelta(days=days)
    OutboxEvent.objects.filter(pk=delivery.event_id).update(created_at=then)
    Delivery.objects.filter(pk=delivery.pk).update(created_at=then)


def test_old_pings_go_and_the_departments_record_of_applications_stays(
    apply, hook, integrator_api, department_server
) -> None:
    apply()
    application_delivery = Delivery.objects.get(event__type=events.APPLICATION_SUBMITTED)
    _age(application_delivery, 400)
    old = [_ping(hook) for _ in range(3)]
    department_server.default = Answer(503, {})
    old.append(_ping(hook))  # failed: a dead letter
    for delivery in old:
        _age(delivery, settings.ROUTING_PING_RETENTION_DAYS + 1)
    recent = _ping(hook)
    _age(recent, settings.ROUTING_PING_RETENTION_DAYS - 1)

    assert sweeper.pings_purge(batch=2) == 4

    remaining = integrator_api.get("/api/v1/dept/deliveries/").json()["results"]
    assert sorted(d["id"] for d in remaining) == sorted(
        [str(application_delivery.pk), str(recent.pk)]
    )
    assert not OutboxEvent.objects.filter(pk__in=[d.event_id for d in old]).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id__in=[d.pk for d in old]).exists()
    assert application_delivery.attempts.count() == 1
    gone = integrator_api.get(f"/api/v1/dept/deliveries/{old[0].pk}/")
    assert gone.status_code == 404


def test_a_ping_still_pending_stays_however_old(hook) -> None:
    waiting = endpoints.endpoint_ping(endpoint=hook, actor=None)  # never sent
    _age(waiting, 30)
    assert sweeper.pings_purge() == 0
    assert Delivery.objects.filter(pk=waiting.pk, status=DeliveryStatus.PENDING).exists()


def test_a_paused_endpoints_probes_are_purged_by_the_daily_task(
    hook, department_server, settings
) -> None:
    department_server.default = Answer(503, {})
    hook.paused_at = timezone.now()
    hook.save(update_fields=["paused_at"])
    for _ in range(3):
        assert sweeper.endpoints_probe_paused() == 1
        probe = Delivery.objects.filter(event__type=events.PING).latest("created_at")
        deliveries.delivery_attempt(probe.pk)
        _age(probe, 8)
        hook.__class__.objects.filter(pk=hook.pk).update(last_probe_at=None)
    settings.ROUTING_PING_RETENTION_DAYS = 7

    assert tasks.pings_purge() == 3
    assert not OutboxEvent.objects.exists()
    assert not DeliveryAttempt.objects.exists()


def test_the_purge_runs_daily_on_the_housekeeping_queue() -> None:
    entry = next(
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "routing.purge_pings"
    )
    assert entry["options"]["queue"] == "housekeeping"
    assert entry["schedule"].hour == {3}  # once a day
    assert settings.CELERY_TASK_ROUTES["routing.purge_pings"] == {"queue": "housekeeping"}


def test_a_replay_of_a_ping_purged_since_it_was_read_is_not_found(hook, integrator_key) -> None:
    stale = _ping(hook)
    _age(stale, 30)
    assert sweeper.pings_purge() == 1
    with pytest.raises(ServicesError) as refused:
        deliveries.delivery_replay(delivery=stale, actor=integrator_key)
    assert refused.value.error is NOT_FOUND


def test_a_ping_replayed_after_it_was_picked_stays(hook, monkeypatch) -> None:
    """The purge picks a batch, then locks its deliveries and reads them
    again: one replayed in between (pending again) stays, with its event."""
    kept, purged = _ping(hook), _ping(hook)
    _age(kept, 30)
    _age(purged, 30)
    real = Delivery.objects.select_for_update

    def replayed_meanwhile(*args, **kwargs):
        Delivery.objects.filter(pk=kept.pk).update(status=DeliveryStatus.PENDING)
        return real(*args, **kwargs)

    monkeypatch.setattr(Delivery.objects, "select_for_update", replayed_meanwhile)
    assert sweeper.pings_purge() == 1
    assert Delivery.objects.filter(pk=kept.pk).exists()
    assert OutboxEvent.objects.filter(pk=kept.event_id).exists()
    assert kept.attempts.count() == 1
    assert not Delivery.objects.filter(pk=purged.pk).exists()

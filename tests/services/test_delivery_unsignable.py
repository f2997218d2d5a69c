"""A delivery that cannot be signed (its endpoint's secret does not decode)
is a failed try on record, alone in its batch as in company: retried, then
dead-lettered, never held back for a lease again and again."""

from __future__ import annotations

import pytest

from services.applications import application_submit
from services.models import Delivery, Endpoint
from services.routing import deliveries, events, outbox
from tests.accounts.factories import CitizenFactory
from tests.services.conftest import GOOD_FORM, department_endpoint

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("via", ["batch", "by id"])
def test_a_secret_that_does_not_decode_is_a_failed_try_on_record(
    monkeypatch, settings, department, service, department_server, via
) -> None:
    monkeypatch.setattr(outbox, "deliveries_wake", lambda **kwargs: True)
    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args, **kwargs: True)
    settings.ROUTING_RETRY_JITTER = 0
    hook = department_endpoint(department, department_server, [events.APPLICATION_SUBMITTED])
    Endpoint.objects.filter(pk=hook.pk).update(secret="whsec_!!!!")
    application_submit(citizen=CitizenFactory(verified=True), service=service, form=GOOD_FORM)

    if via == "batch":
        deliveries.deliveries_send_due()
    else:
        deliveries.delivery_attempt(Delivery.objects.get().pk)

    delivery = Delivery.objects.get()
    assert department_server.received == []
    assert (delivery.status, delivery.attempt_count, delivery.schedule_index) == ("pending", 1, 1)
    assert delivery.locked_until is None
    assert "secret" in delivery.attempts.get().error.lower()

"""A department rotates its endpoint's secret and keeps receiving events it can verify."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from services.models import Endpoint
from services.routing import endpoints

pytestmark = pytest.mark.django_db


def _ping(client, endpoint_id, capture) -> None:
    with capture(execute=True):
        response = client.post(f"/api/v1/dept/endpoints/{endpoint_id}/test/")
    assert response.status_code == 202


def test_a_rotation_repeated_because_its_answer_was_lost_keeps_the_secret_in_use(
    integrator_api, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    # The department's system asks for a new secret; the answer is lost on
    # the way (a timeout), so it asks again and only ever sees the second one.
    rotate = f"/api/v1/dept/endpoints/{hook.id}/rotate-secret/"
    assert integrator_api.post(rotate).status_code == 200
    second = integrator_api.post(rotate).json()
    # Until it deploys that one it still verifies with the secret it has...
    _ping(integrator_api, hook.id, django_capture_on_commit_callbacks)
    assert department_server.received[-1].verified(hook.secret_shown)["type"] == "ping"
    # ...and the new one works as soon as it switches.
    assert department_server.received[-1].verified(second["secret"])["type"] == "ping"
    # The overlap still ends: after it, only the newest secret signs.
    endpoint = Endpoint.objects.get(pk=hook.id)
    later = endpoint.previous_secret_expires_at + dt.timedelta(seconds=1)
    assert endpoints.signing_keys_of(endpoint, later) == [second["secret"]]
    assert endpoint.previous_secret_expires_at > timezone.now()


def test_a_secret_whose_overlap_ended_does_not_sign_again_after_another_rotation(
    integrator_api, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    rotate = f"/api/v1/dept/endpoints/{hook.id}/rotate-secret/"
    first = integrator_api.post(rotate).json()
    Endpoint.objects.filter(pk=hook.id).update(
        previous_secret_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    second = integrator_api.post(rotate).json()
    _ping(integrator_api, hook.id, django_capture_on_commit_callbacks)
    [request] = department_server.received
    assert request.verified(first["secret"])["type"] == "ping"
    assert request.verified(second["secret"])["type"] == "ping"
    assert len(request.headers["webhook-signature"].split()) == 2  # the original is gone

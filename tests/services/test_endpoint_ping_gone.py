"""A ping answered 410 Gone: the endpoint is disabled, and the ping, a test
tried once, is over (not held to be sent again when the endpoint is back)."""

from __future__ import annotations

import pytest

from services.models import Delivery
from tests.services.department import Answer

pytestmark = pytest.mark.django_db


def test_a_ping_answered_gone_is_tried_once_and_not_sent_again_on_enabling(
    integrator_api, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    department_server.answer(Answer(410, {}))
    with django_capture_on_commit_callbacks(execute=True):
        response = integrator_api.post(f"/api/v1/dept/endpoints/{hook.id}/test/")
    assert response.status_code == 202
    ping = integrator_api.get(f"/api/v1/dept/deliveries/{response.json()['id']}/").json()
    assert ping["status"] == "failed" and ping["attempt_count"] == 1
    assert integrator_api.get(f"/api/v1/dept/endpoints/{hook.id}/").json()["state"] == "disabled"

    with django_capture_on_commit_callbacks(execute=True):
        enabled = integrator_api.patch(
            f"/api/v1/dept/endpoints/{hook.id}/", {"is_active": True}, format="json"
        )
    assert enabled.json()["state"] == "active"
    assert len(department_server.of_type("ping")) == 1
    assert Delivery.objects.get().status == "failed"

"""Two edits of one service guide at once both stay."""

from __future__ import annotations

import pytest

from services import catalog
from services.models import Service

pytestmark = pytest.mark.django_db


def test_a_departments_edit_does_not_undo_another_edit_made_meanwhile(
    integrator_api, service, monkeypatch
) -> None:
    checked = catalog.guide_check

    def operator_acts_meanwhile(values):
        # While this request works, an operator takes the service offline
        # and another of the department's staff changes its fee.
        Service.objects.filter(pk=service.pk).update(is_active=False, fee_fen=500)
        checked(values)

    monkeypatch.setattr(catalog, "guide_check", operator_acts_meanwhile)
    response = integrator_api.patch(
        f"/api/v1/dept/services/{service.code}/", {"summary": "新的简介"}, format="json"
    )
    assert response.status_code == 200, response.json()
    service.refresh_from_db()
    assert service.summary == "新的简介"
    assert (service.is_active, service.fee_fen) == (False, 500)
    assert response.json()["is_active"] is False and response.json()["fee_fen"] == 500

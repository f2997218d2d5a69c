"""Operators manage keys, venue codes and scanner profiles; scans are read-only and masked."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import api_keys
from accounts.models import ApiKeyScope, AuditEntry
from qr import keys
from qr.models import SigningKey
from tests.accounts.factories import DepartmentFactory
from tests.qr.conftest import create_venue, issue, recorded_scans, verify

pytestmark = pytest.mark.django_db


def test_the_admin_pages_render(
    operator_client, citizen, citizen_api, scanner_api, integrator_api, service, hall_key
):
    keys.signing_key_ensure()
    create_venue(integrator_api, service.code)
    verify(scanner_api, issue(citizen_api)["code"])
    recorded_scans()
    for page in ("signingkey", "venuecode", "scannerprofile", "scanevent"):
        response = operator_client.get(f"/admin/qr/{page}/")
        assert response.status_code == 200, page
    assert operator_client.get("/admin/qr/scannerprofile/add/").status_code == 200


def test_scan_events_show_no_full_subject_and_nothing_personal(
    operator_client, citizen, citizen_api, hall_api
):
    verify(hall_api, issue(citizen_api)["code"])
    (event,) = recorded_scans()
    listing = operator_client.get("/admin/qr/scanevent/").content.decode()
    detail = operator_client.get(f"/admin/qr/scanevent/{event.pk}/change/").content.decode()
    for page in (listing, detail):
        assert citizen.subject not in page
        assert citizen.subject[:6] in page
        for secret in (citizen.real_name, citizen.phone, citizen.id_number):
            assert secret not in page


def test_venue_codes_show_their_scan_counts(operator_client, integrator_api, service, api):
    body = create_venue(integrator_api, service.code)
    for _ in range(3):
        api.post("/api/v1/qr/resolve/", {"code": body["code"]}, format="json")
    recorded_scans()
    from qr.models import VenueCode
    from qr.selectors import venue_codes_with_scan_counts

    (venue,) = venue_codes_with_scan_counts(VenueCode.objects.all())
    assert venue.scan_count == 3
    page = operator_client.get("/admin/qr/venuecode/").content.decode()
    assert '<td class="field-scan_count_display">3</td>' in page


def test_the_rotate_button_publishes_a_new_key(operator_client):
    keys.signing_key_ensure()
    response = operator_client.post("/admin/qr/signingkey/rotate/", {"immediately": "1"})
    assert response.status_code == 302
    assert SigningKey.objects.count() == 2
    assert operator_client.get("/admin/qr/signingkey/rotate/").status_code == 405


def test_a_rotation_from_the_admin_is_audited_with_the_operators_address(operator_client):
    keys.signing_key_ensure()
    operator_client.post("/admin/qr/signingkey/rotate/", REMOTE_ADDR="203.0.113.9")
    entry = AuditEntry.objects.get(action="qr.signing_key.created", actor_label="operator")
    assert entry.ip == "203.0.113.9"


def test_the_deactivate_action_revokes_codes(operator_client, integrator_api, service, api):
    body = create_venue(integrator_api, service.code)
    operator_client.post(
        "/admin/qr/venuecode/",
        {"action": "deactivate", "_selected_action": [body["id"]]},
    )
    resolved = api.post("/api/v1/qr/resolve/", {"code": body["code"]}, format="json")
    assert resolved.status_code == 410


def test_an_operator_deactivates_a_code_from_its_page(
    operator_client, integrator_api, service, api
):
    body = create_venue(integrator_api, service.code)
    page = operator_client.get(f"/admin/qr/venuecode/{body['id']}/change/").content.decode()
    button = f'action="/admin/qr/venuecode/{body["id"]}/do/deactivate/"'
    assert button in page
    assert 'name="_save"' not in page  # a record, not a form
    response = operator_client.post(f"/admin/qr/venuecode/{body['id']}/do/deactivate/")
    assert response.status_code == 302
    resolved = api.post("/api/v1/qr/resolve/", {"code": body["code"]}, format="json")
    assert resolved.status_code == 410
    assert button not in operator_client.get(response.url).content.decode()


def test_an_operator_sets_a_scanner_profile(operator_client, scanner_key, citizen_api, scanner_api):
    response = operator_client.post(
        "/admin/qr/scannerprofile/add/",
        {"api_key": str(scanner_key.pk), "place": "市图书馆 一楼", "disclosure": "masked_name"},
    )
    assert response.status_code == 302, response.content[:2000]
    answer = verify(scanner_api, issue(citizen_api)["code"])
    assert answer["subject"]["name_masked"] == "张**"


def test_the_scanner_key_picker_costs_the_same_queries_however_many_keys(operator_client):
    """The profile's key picker (the admin's autocomplete) names each key
    with its department: read with the keys, not one query per key."""

    def picker_queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            response = operator_client.get(
                "/admin/autocomplete/",
                {"app_label": "qr", "model_name": "scannerprofile", "field_name": "api_key"},
            )
        assert response.status_code == 200
        return len(queries), len(response.json()["results"])

    def add_keys(n: int) -> None:
        for _ in range(n):
            api_keys.api_key_create(
                department=DepartmentFactory(), scope=ApiKeyScope.SCANNER, name="闸机"
            )

    add_keys(2)
    few, shown = picker_queries()
    add_keys(5)
    many, shown_after = picker_queries()
    assert (shown, shown_after) == (2, 7)
    assert many == few

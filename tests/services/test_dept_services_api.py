"""A department publishes and edits its own service guides."""

from __future__ import annotations

import json

import pytest

from accounts.models import AuditEntry
from services.models import Service
from tests.services.factories import SIMPLE_FORM, ServiceFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/dept/services/"


def guide(**overrides) -> dict:
    return {
        "code": "sbk-apply",
        "name": "社会保障卡申领",
        "category": "shebao",
        "summary": "首次申领社会保障卡",
        "eligibility": "参保人员",
        "materials": [{"name": "居民身份证", "required": True, "note": ""}],
        "fee_fen": 0,
        "time_limit_days": 5,
        "legal_basis": "《社会保险法》",
        "channels": ["online", "hall"],
        "identity_level": 2,
        "form_schema": SIMPLE_FORM,
        "keywords": ["社保卡"],
        **overrides,
    }


def test_a_department_publishes_a_service_that_is_live_at_once(
    integrator_api, api, category
) -> None:
    response = integrator_api.post(URL, guide(), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["department"] == "hrss"
    assert response.json()["is_active"] is True
    assert api.get("/api/v1/services/sbk-apply/").status_code == 200
    assert "sbk-apply" in [
        s["code"] for s in api.get("/api/v1/services/", {"q": "sbk"}).json()["results"]
    ]
    entry = AuditEntry.objects.get(action="service.created")
    assert entry.actor_kind == "api_key" and entry.ip == "127.0.0.1"
    changed = integrator_api.patch(
        f"{URL}sbk-apply/", {"fee_fen": 100, "summary": "新的简介"}, format="json"
    )
    assert changed.status_code == 200, changed.json()
    entry = AuditEntry.objects.get(action="service.updated")
    assert entry.ip == "127.0.0.1"
    # The fee's old and new amounts; the long texts by name only.
    assert entry.data["fields"] == ["fee_fen", "summary"]
    assert entry.data["values"] == {"fee_fen": {"from": 0, "to": 100}}


def test_a_service_published_inactive_stays_hidden(integrator_api, api, category) -> None:
    integrator_api.post(URL, guide(is_active=False), format="json")
    assert api.get("/api/v1/services/sbk-apply/").status_code == 404


def test_an_invalid_form_schema_is_refused(integrator_api, category) -> None:
    response = integrator_api.post(
        URL,
        guide(form_schema={"type": "object", "properties": {"a": {"type": "nope"}}}),
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "form_schema_invalid"
    assert "form_schema" in response.json()["errors"]
    response = integrator_api.post(URL, guide(form_schema={"type": "array"}), format="json")
    assert response.json()["code"] == "form_schema_invalid"


def test_field_shapes_are_checked(integrator_api, category) -> None:
    response = integrator_api.post(
        URL,
        guide(channels=["fax"], fee_fen=-1, category="nope", materials=[{"x": 1}]),
        format="json",
    )
    assert response.status_code == 400
    assert {"channels.0", "fee_fen", "category", "materials.0.name"} <= set(
        response.json()["errors"]
    )


def test_a_taken_code_is_a_conflict(integrator_api, category) -> None:
    ServiceFactory(code="sbk-apply")
    response = integrator_api.post(URL, guide(), format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "service_code_taken"


def test_a_department_lists_only_its_own_services(
    integrator_api, department, other_department
) -> None:
    ServiceFactory(code="mine", department=department)
    ServiceFactory(code="theirs", department=other_department)
    ServiceFactory(code="mine-offline", department=department, is_active=False)
    codes = [s["code"] for s in integrator_api.get(URL).json()["results"]]
    assert sorted(codes) == ["mine", "mine-offline"]


def test_a_department_edits_its_guide(integrator_api, department, category) -> None:
    ServiceFactory(code="mine", department=department, keywords=[])
    response = integrator_api.patch(
        f"{URL}mine/", {"fee_fen": 1500, "keywords": ["证明"]}, format="json"
    )
    assert response.status_code == 200, response.json()
    service = Service.objects.get(code="mine")
    assert service.fee_fen == 1500
    assert "zhengming" in service.search_text


def test_code_and_department_cannot_be_changed(integrator_api, department) -> None:
    ServiceFactory(code="mine", department=department)
    integrator_api.patch(f"{URL}mine/", {"code": "other", "department": "gjj"}, format="json")
    assert Service.objects.get(code="mine").department == department


def test_another_departments_service_is_not_found(integrator_api, other_department) -> None:
    ServiceFactory(code="theirs", department=other_department)
    assert integrator_api.get(f"{URL}theirs/").status_code == 404
    response = integrator_api.patch(f"{URL}theirs/", {"fee_fen": 1}, format="json")
    assert response.status_code == 404
    assert Service.objects.get(code="theirs").fee_fen == 0


def test_scanner_keys_and_citizens_cannot_manage_services(
    scanner_api, citizen_api, category
) -> None:
    assert scanner_api.post(URL, guide(), format="json").json()["code"] == "api_key_scope"
    response = citizen_api.get(URL)
    assert response.status_code == 401


@pytest.mark.parametrize("material", [{}, {"note": "原件"}, {"required": False}])
def test_a_material_without_a_name_is_refused_in_an_edit_too(
    integrator_api, department, material
) -> None:
    """A PATCH is partial at the guide's level only: each material it sends
    is whole, named, as in a POST (it was a 500)."""
    ServiceFactory(code="mine", department=department)
    before = Service.objects.get(code="mine").materials
    response = integrator_api.patch(
        f"{URL}mine/", {"materials": [{"name": "户口簿"}, material]}, format="json"
    )
    assert response.status_code == 400, response.content
    problem = response.json()
    assert problem["code"] == "invalid"
    assert list(problem["errors"]) == ["materials.1.name"]
    assert Service.objects.get(code="mine").materials == before


def test_a_material_named_alone_in_an_edit_takes_the_defaults(integrator_api, department) -> None:
    ServiceFactory(code="mine", department=department)
    response = integrator_api.patch(
        f"{URL}mine/", {"materials": [{"name": "户口簿"}]}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert Service.objects.get(code="mine").materials == [
        {"name": "户口簿", "required": True, "note": ""}
    ]


@pytest.mark.parametrize(
    ("before", "after"),
    [({"const": 1}, {"const": True}), ({"enum": [False]}, {"enum": [0]})],
)
def test_an_edit_from_a_number_to_a_boolean_in_the_form_is_kept(
    integrator_api, citizen_api, department, before, after
) -> None:
    """1 and true are different answers to a form (Python's == has them
    equal: the edit was answered 200 and dropped)."""

    def schema(rule: dict) -> dict:
        return {"type": "object", "properties": {"agree": rule}, "required": ["agree"]}

    ServiceFactory(code="mine", department=department, form_schema=schema(before))
    response = integrator_api.patch(f"{URL}mine/", {"form_schema": schema(after)}, format="json")
    assert response.status_code == 200, response.json()
    assert json.dumps(response.json()["form_schema"]["properties"]["agree"]) == json.dumps(after)
    stored = Service.objects.get(code="mine").form_schema["properties"]["agree"]
    assert json.dumps(stored) == json.dumps(after)
    [answer] = after.get("enum") or [after["const"]]
    applied = citizen_api.post(
        "/api/v1/applications/", {"service": "mine", "form": {"agree": answer}}, format="json"
    )
    assert applied.status_code == 201, applied.json()


def test_the_same_form_with_numbers_spelled_otherwise_is_no_change(
    integrator_api, department
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "number", "minimum": 1}}}
    ServiceFactory(code="mine", department=department, form_schema=schema)
    again = {"type": "object", "properties": {"n": {"type": "number", "minimum": 1.0}}}
    response = integrator_api.patch(f"{URL}mine/", {"form_schema": again}, format="json")
    assert response.status_code == 200, response.json()
    assert not AuditEntry.objects.filter(action="service.updated").exists()


def test_creations_and_edits_count_against_the_write_rate_and_reads_do_not(
    integrator_api, department, category, settings, steady_throttle_clock
) -> None:
    """Each write checks a form schema the department wrote: a key may make
    DEPT_SERVICE_WRITE_RATE of them, creations and edits together."""
    settings.DEPT_SERVICE_WRITE_RATE = "2/min"
    assert integrator_api.post(URL, guide(), format="json").status_code == 201
    assert (
        integrator_api.patch(f"{URL}sbk-apply/", {"fee_fen": 1}, format="json").status_code == 200
    )
    refused = integrator_api.patch(f"{URL}sbk-apply/", {"fee_fen": 2}, format="json")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert integrator_api.post(URL, guide(code="other"), format="json").status_code == 429
    for _ in range(3):
        assert integrator_api.get(f"{URL}sbk-apply/").status_code == 200
        assert integrator_api.get(URL).status_code == 200
    assert Service.objects.get(code="sbk-apply").fee_fen == 1


def test_an_edit_of_a_service_deleted_meanwhile_is_not_found(department) -> None:
    """An operator deletes the service between the department's read of it
    and its edit: not found, not a server error."""
    from services import catalog
    from services.errors import ServicesError

    service = ServiceFactory(code="gone", department=department)
    Service.objects.filter(pk=service.pk).delete()
    with pytest.raises(ServicesError) as refused:
        catalog.service_update(service=service, actor=None, fee_fen=5)
    assert refused.value.error.code == "not_found"


def test_a_service_the_operators_took_offline_stays_offline_until_they_put_it_online(
    integrator_api, operator_client, department, api
) -> None:
    service = ServiceFactory(code="held", department=department)
    url = f"{URL}held/"
    operator_client.post(
        "/admin/services/service/", {"action": "take_offline", "_selected_action": [service.pk]}
    )

    refused = integrator_api.patch(url, {"is_active": True}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "service_held"
    # The rest of the guide is still the department's to edit.
    edited = integrator_api.patch(url, {"fee_fen": 300, "is_active": False}, format="json")
    assert edited.status_code == 200, edited.json()
    assert api.get("/api/v1/services/held/").status_code == 404

    operator_client.post(
        "/admin/services/service/", {"action": "put_online", "_selected_action": [service.pk]}
    )
    assert integrator_api.patch(url, {"is_active": False}, format="json").status_code == 200
    assert integrator_api.patch(url, {"is_active": True}, format="json").status_code == 200
    assert api.get("/api/v1/services/held/").status_code == 200


def test_a_department_that_took_its_own_service_offline_puts_it_back(integrator_api, department):
    ServiceFactory(code="own", department=department)
    assert (
        integrator_api.patch(f"{URL}own/", {"is_active": False}, format="json").status_code == 200
    )
    assert integrator_api.patch(f"{URL}own/", {"is_active": True}, format="json").status_code == 200
    assert Service.objects.get(code="own").offline_held_at is None


def test_an_operator_taking_offline_a_service_its_department_took_offline_holds_it(
    integrator_api, operator_client, department
) -> None:
    service = ServiceFactory(code="both", department=department)
    url = f"{URL}both/"
    assert integrator_api.patch(url, {"is_active": False}, format="json").status_code == 200
    operator_client.post(
        "/admin/services/service/", {"action": "take_offline", "_selected_action": [service.pk]}
    )
    refused = integrator_api.patch(url, {"is_active": True}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "service_held"


def test_a_service_the_operators_create_offline_is_held(
    integrator_api, department, category
) -> None:
    from services import catalog
    from tests.accounts.factories import StaffFactory

    record = {key: value for key, value in guide().items() if key != "code"}
    catalog.service_create(
        code="later",
        department=department,
        actor=StaffFactory(),
        **{**record, "category": category, "is_active": False},
    )
    refused = integrator_api.patch(f"{URL}later/", {"is_active": True}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "service_held"


def test_a_catalog_record_saying_nothing_of_is_active_keeps_the_hold(
    integrator_api, operator_client, department
) -> None:
    from services import catalog

    service = ServiceFactory(code="kept", department=department)
    operator_client.post(
        "/admin/services/service/", {"action": "take_offline", "_selected_action": [service.pk]}
    )
    [record] = catalog.catalog_export(Service.objects.filter(pk=service.pk))
    del record["is_active"]
    catalog.catalog_import([{**record, "fee_fen": 9}], actor=None)

    kept = Service.objects.get(pk=service.pk)
    assert (kept.fee_fen, kept.is_active) == (9, False)
    assert kept.offline_held_at is not None
    assert (
        integrator_api.patch(f"{URL}kept/", {"is_active": True}, format="json").status_code == 409
    )

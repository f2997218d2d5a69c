"""A department's form schema cannot reach the network or the disk, nor hold
a worker: refused where it is saved (department API, admin, catalog file),
harmless where one saved earlier checks a citizen's form."""

from __future__ import annotations

import io
import json
import socket

import pytest

from services.errors import ServicesError
from services.models import Application, Service
from tests.services.conftest import GOOD_FORM, submit
from tests.services.factories import SIMPLE_FORM, CategoryFactory, ServiceFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/dept/services/"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_field(**subschema) -> dict:
    """SIMPLE_FORM with one more field "extra" described by ``subschema``."""
    return {**SIMPLE_FORM, "properties": {**SIMPLE_FORM["properties"], "extra": subschema}}


def guide(form_schema: dict, code: str = "sbk-apply") -> dict:
    return {
        "code": code,
        "name": "社会保障卡申领",
        "category": "shebao",
        "channels": ["online"],
        "form_schema": form_schema,
    }


def attacks(host_url: str) -> dict[str, dict]:
    return {
        "http": with_field(**{"$ref": host_url}),
        "redirect-or-loop": with_field(**{"$ref": f"http://127.0.0.1:{closed_port()}/x"}),
        "file": with_field(**{"$ref": "file:///etc/passwd"}),
        "urn": with_field(**{"$ref": "urn:example:form"}),
        "remote base + relative ref": {
            **with_field(**{"$ref": "schema.json"}),
            "$id": host_url.rsplit("/", 1)[0] + "/",
        },
        "remote base + local ref": with_field(**{"$id": host_url, "$ref": "#/$defs/x"}),
        "dynamic ref": with_field(**{"$dynamicRef": host_url}),
        "dangling local ref": with_field(**{"$ref": "#/$defs/missing"}),
        "loop": {**with_field(**{"$ref": "#/$defs/a"}), "$defs": {"a": {"$ref": "#/$defs/a"}}},
        "backreference": with_field(type="string", pattern="^(a)\\1$"),
        # Crashed the rules (500s) rather than breaking them.
        "ref into a string": with_field(**{"$ref": "#/type/x"}),
        "ref into a list": with_field(**{"$ref": "#/required/x"}),
        "ref into a number": with_field(**{"$ref": "#/properties/copies/minimum/x"}),
        "long chain of refs": long_chain(),
    }


def long_chain(links: int = 1500) -> dict:
    """Valid, but validation would follow it recursively, past the stack."""
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(links)}
    defs[f"d{links}"] = {"type": "string"}
    return {**with_field(**{"$ref": "#/$defs/d0"}), "$defs": defs}


def test_a_department_cannot_publish_a_form_that_reaches_out(
    integrator_api, category, schema_host
) -> None:
    for name, schema in attacks(schema_host.url()).items():
        response = integrator_api.post(URL, guide(schema), format="json")
        assert response.status_code == 400, name
        body = response.json()
        assert body["code"] == "form_schema_invalid", name
        assert body["errors"]["form_schema"], name
        assert response["Content-Type"] == "application/problem+json"
    assert not Service.objects.exists()
    assert schema_host.requests == []


def test_a_department_cannot_edit_its_form_into_one_that_reaches_out(
    integrator_api, department, schema_host
) -> None:
    ServiceFactory(code="mine", department=department)
    for name, schema in attacks(schema_host.url()).items():
        response = integrator_api.patch(f"{URL}mine/", {"form_schema": schema}, format="json")
        assert response.status_code == 400, name
        assert response.json()["errors"]["form_schema"], name
    assert Service.objects.get(code="mine").form_schema == SIMPLE_FORM
    assert schema_host.requests == []


def test_a_form_with_local_definitions_is_published(integrator_api, category, citizen_api) -> None:
    schema = {
        **SIMPLE_FORM,
        "$defs": {"phone": SIMPLE_FORM["properties"]["phone"]},
        "properties": {**SIMPLE_FORM["properties"], "phone": {"$ref": "#/$defs/phone"}},
    }
    response = integrator_api.post(URL, guide(schema), format="json")
    assert response.status_code == 201, response.json()
    assert submit(citizen_api).status_code == 201
    response = submit(citizen_api, form={**GOOD_FORM, "phone": "12345"})
    assert response.json()["errors"] == {"form.phone": ["格式不正确"]}


def save_in_admin(operator_client, service: Service, form_schema: dict):
    form = {
        "name": service.name, "category": service.category.pk, "summary": "", "eligibility": "",
        "materials": "[]", "fee_fen": 0, "time_limit_days": 3, "legal_basis": "",
        "channels": '["online"]', "identity_level": 2, "keywords": "[]", "is_active": "on",
        "form_schema": json.dumps(form_schema),  # escapes a lone surrogate as \\ud800
    }  # fmt: skip
    return operator_client.post(f"/admin/services/service/{service.pk}/change/", form)


def test_an_operator_cannot_save_a_form_that_reaches_out(operator_client, schema_host) -> None:
    service = ServiceFactory(code="x1")
    response = save_in_admin(operator_client, service, with_field(**{"$ref": schema_host.url()}))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["form_schema"]
    service.refresh_from_db()
    assert service.form_schema == SIMPLE_FORM
    assert schema_host.requests == []


def test_a_catalog_file_with_a_form_that_reaches_out_is_refused(
    operator_client, department, schema_host
) -> None:
    CategoryFactory(code="shebao")
    record = {**guide(with_field(**{"$ref": schema_host.url()})), "department": department.code}
    data = io.BytesIO(json.dumps({"services": [record]}).encode())
    data.name = "catalog.json"
    response = operator_client.post("/admin/services/service/import/", {"file": data}, follow=True)
    assert "errorlist" in response.content.decode()
    assert "0.form_schema" in response.content.decode()
    assert not Service.objects.exists()
    assert schema_host.requests == []


# --- Forms saved before the rules --------------------------------------------------------


def stored_before_the_rules(service: Service, schema: dict) -> None:
    """Write straight to the table, as a schema saved before these rules was."""
    Service.objects.filter(pk=service.pk).update(form_schema=schema)


@pytest.mark.parametrize(
    "name",
    [
        "http",
        "redirect-or-loop",
        "file",
        "urn",
        "remote base + relative ref",
        "remote base + local ref",
        "dynamic ref",
        "dangling local ref",
        "loop",
        "backreference",
        "ref into a string",
        "ref into a list",
        "ref into a number",
        "long chain of refs",
    ],
)
def test_applying_with_a_stored_form_that_reaches_out_fetches_nothing(
    citizen_api, service, schema_host, name
) -> None:
    stored_before_the_rules(service, attacks(schema_host.url())[name])
    response = submit(citizen_api, form={**GOOD_FORM, "extra": "x"})
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "form_schema_unusable"
    assert response.json()["detail"] == "该事项的申请表暂不可用，请联系办理部门"
    assert schema_host.requests == []
    assert not Application.objects.exists()


def test_a_supplement_against_a_stored_form_that_reaches_out_fetches_nothing(
    citizen_api, service, schema_host
) -> None:
    from tests.services.test_applications_api import move

    application = Application.objects.get(id=submit(citizen_api).json()["id"])
    move(application, "accepted", "needs_info")
    stored_before_the_rules(service, with_field(**{"$ref": schema_host.url()}))
    response = citizen_api.post(
        f"/api/v1/applications/{application.id}/supplement/",
        {"form": {"extra": "x"}},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "form_schema_unusable"
    assert schema_host.requests == []


@pytest.mark.timeout(10)
def test_a_catastrophic_pattern_cannot_hold_the_worker(citizen_api, service) -> None:
    # Valid RE2, so a department may save it; a backtracking engine would
    # need about 2**5000 steps for each of these answers.
    stored_before_the_rules(
        service,
        {
            **with_field(type="string", pattern="^(a+)+$"),
            "patternProperties": {"^(b+)+$": {"type": "integer"}},
        },
    )
    response = submit(citizen_api, form={**GOOD_FORM, "extra": "a" * 5000 + "!"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"form.extra": ["格式不正确"]}
    response = submit(citizen_api, form={**GOOD_FORM, "b" * 5000 + "!": 1})
    assert response.status_code == 400
    assert response.json()["errors"] == {"form": ["含有表单未定义的字段"]}


def test_a_department_may_publish_that_pattern_because_re2_runs_it(
    integrator_api, category
) -> None:
    response = integrator_api.post(
        URL, guide(with_field(type="string", pattern="^(a+)+$")), format="json"
    )
    assert response.status_code == 201, response.json()


# --- Schemas that crashed the rules, forms that held the worker ---------------------------

# Neither the admin nor a catalog file goes through the API's JSON parser.
CRASHED_THE_RULES = {
    "ref into a string": (attacks("http://127.0.0.1:9/x")["ref into a string"], "指向不存在的位置"),
    "lone surrogate": (with_field(type="string", title="\ud800"), "不成对的代理码元"),
    # PostgreSQL's jsonb refuses it: the row was a 500.
    "NUL": (with_field(type="string", title="a\x00b"), "NUL"),
}


@pytest.mark.parametrize("name", CRASHED_THE_RULES)
def test_an_operator_is_told_what_breaks_the_rules_in_a_schema(operator_client, name) -> None:
    schema, problem = CRASHED_THE_RULES[name]
    service = ServiceFactory(code="x1")
    response = save_in_admin(operator_client, service, schema)
    assert response.status_code == 200
    assert problem in " ".join(response.context["adminform"].form.errors["form_schema"])
    service.refresh_from_db()
    assert service.form_schema == SIMPLE_FORM


@pytest.mark.parametrize("name", CRASHED_THE_RULES)
def test_a_catalog_file_breaking_the_rules_is_refused_with_the_reason(
    operator_client, department, name
) -> None:
    schema, problem = CRASHED_THE_RULES[name]
    CategoryFactory(code="shebao")
    record = {**guide(schema), "department": department.code}
    data = io.BytesIO(json.dumps({"services": [record]}).encode())
    data.name = "catalog.json"
    response = operator_client.post("/admin/services/service/import/", {"file": data}, follow=True)
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert problem in response.content.decode()
    assert not Service.objects.exists()


def test_a_form_holding_a_lone_surrogate_is_refused_not_a_crash(citizen_api, service) -> None:
    # Written by hand: a JSON encoder would refuse to write it.
    body = '{"service": "sbk-apply", "form": {"reason": "\\ud800\\ud800", "phone": "13800138000"}}'
    response = citizen_api.post("/api/v1/applications/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert not Application.objects.exists()


@pytest.mark.timeout(20)
def test_a_wide_form_schema_cannot_hold_the_worker(integrator_api, category, citizen_api) -> None:
    # 24 KB, within every rule of the schema; this 6 KB form took 162 s and
    # millions of error objects to check: the cost is schema times form.
    wide = with_field(type="array", items={"anyOf": [{"const": i} for i in range(1, 1500)]})
    response = integrator_api.post(URL, guide(wide), format="json")
    assert response.status_code == 201, response.json()
    response = submit(citizen_api, form={**GOOD_FORM, "extra": [1, 2, 3]})
    assert response.status_code == 201, response.json()
    response = submit(citizen_api, form={**GOOD_FORM, "extra": [0] * 2000})
    assert response.status_code == 400
    assert response.json()["code"] == "form_invalid"
    assert response.json()["errors"] == {"form": ["申请表内容过于复杂，无法完成检查"]}


def test_a_department_may_use_re2s_unicode_classes_in_patterns(
    integrator_api, category, citizen_api
) -> None:
    # Python's re refused \p{Han}, and recursed past the stack on the groups.
    schema = {
        **SIMPLE_FORM,
        "properties": {
            **SIMPLE_FORM["properties"],
            "name": {"type": "string", "pattern": "^\\p{Han}{2,10}$"},
            "code": {"type": "string", "pattern": "(" * 1000 + "[0-9]" + ")" * 1000},
        },
    }
    response = integrator_api.post(URL, guide(schema), format="json")
    assert response.status_code == 201, response.json()
    response = submit(citizen_api, form={**GOOD_FORM, "name": "张三", "code": "7"})
    assert response.status_code == 201, response.json()
    response = submit(citizen_api, form={**GOOD_FORM, "name": "Zhang San", "code": "x"})
    assert response.json()["errors"] == {"form.code": ["格式不正确"], "form.name": ["格式不正确"]}


def test_a_number_too_large_for_a_float_is_checked_exactly(citizen_api, service) -> None:
    stored_before_the_rules(service, with_field(type="integer", multipleOf=0.5))
    body = '{"service": "sbk-apply", "form": {"reason": "首次申领", "phone": "13800138000", '
    response = citizen_api.post(
        "/api/v1/applications/",
        body + '"extra": 1' + "0" * 400 + "}}",
        content_type="application/json",
    )
    assert response.status_code == 201, response.content


def test_a_form_naming_a_format_is_checked_by_it_or_refused(
    integrator_api, category, citizen_api
) -> None:
    # A format nothing checks would let any answer through as checked.
    response = integrator_api.post(URL, guide(with_field(format="duration")), format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "form_schema_invalid"
    assert "properties/extra/format" in response.json()["errors"]["form_schema"][0]

    schema = {
        **SIMPLE_FORM,
        "properties": {
            **SIMPLE_FORM["properties"],
            "when": {"type": "string", "format": "date-time"},
            "site": {"type": "string", "format": "uri"},
        },
    }
    response = integrator_api.post(URL, guide(schema), format="json")
    assert response.status_code == 201, response.json()
    response = submit(citizen_api, form={**GOOD_FORM, "when": "下周某天", "site": "not a uri"})
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "form.site": ["格式不正确（uri）"],
        "form.when": ["格式不正确（date-time）"],
    }
    good = {**GOOD_FORM, "when": "2026-12-08T09:30:00+08:00", "site": "https://example.cn/a"}
    assert submit(citizen_api, form=good).status_code == 201


def test_an_operator_edits_a_service_whose_stored_form_names_a_format_nothing_checks(
    operator_client,
) -> None:
    # Stored before formats were checked on save: the guide stays editable
    # (as through the department API, which checks a schema only when sent);
    # a new schema naming such a format is refused.
    service = ServiceFactory(code="x1")
    old = with_field(type="string", format="duration")
    Service.objects.filter(pk=service.pk).update(form_schema=old)
    service.refresh_from_db()
    service.name = "改名"
    response = save_in_admin(operator_client, service, old)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Service.objects.get(pk=service.pk).name == "改名"

    response = save_in_admin(operator_client, service, with_field(type="string", format="iri"))
    assert response.status_code == 200
    assert "iri" in " ".join(response.context["adminform"].form.errors["form_schema"])


@pytest.mark.parametrize(
    "changed",
    [
        {"additionalProperties": 0},  # the stored schema has False
        {"properties": {**SIMPLE_FORM["properties"], "n": {"type": "integer", "minimum": True}}},
    ],
)
def test_a_schema_that_differs_from_the_stored_one_only_as_true_and_1_differ_is_checked(
    integrator_api, department, changed
) -> None:
    # Python's == takes True for 1 and False for 0; JSON does not, and the
    # save writes the difference: it was written unchecked, and citizens
    # then met 409 form_schema_unusable.
    stored = {**SIMPLE_FORM, "additionalProperties": False, "properties": {
        **SIMPLE_FORM["properties"], "n": {"type": "integer", "minimum": 1}}}  # fmt: skip
    ServiceFactory(code="mine", department=department, form_schema=stored)
    sent = {**stored, **changed}
    response = integrator_api.patch(f"{URL}mine/", {"form_schema": sent}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "form_schema_invalid"
    assert Service.objects.get(code="mine").form_schema == stored


def test_a_schema_checked_as_unchanged_is_checked_again_if_the_row_changed_meanwhile(
    department, integrator_key
) -> None:
    """Read before another edit replaced the stored schema and sent back as
    read: it is not the stored one any more, so it is checked."""
    from services import catalog

    old = with_field(type="string", format="duration")  # stored before the rule
    service = ServiceFactory(code="mine", department=department)
    Service.objects.filter(pk=service.pk).update(form_schema=old)
    read = Service.objects.get(pk=service.pk)
    Service.objects.filter(pk=service.pk).update(form_schema=SIMPLE_FORM)  # the other edit
    with pytest.raises(ServicesError) as refused:
        catalog.service_update(service=read, actor=integrator_key, form_schema=old)
    assert refused.value.code == "form_schema_invalid"
    assert Service.objects.get(pk=service.pk).form_schema == SIMPLE_FORM

"""Operators manage the catalog in the admin, including bulk files."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from services.models import Service
from tests.services.factories import SIMPLE_FORM, CategoryFactory, ServiceFactory

pytestmark = pytest.mark.django_db


def upload(operator_client, document) -> object:
    data = io.BytesIO(json.dumps(document, ensure_ascii=False).encode())
    data.name = "catalog.json"
    return operator_client.post("/admin/services/service/import/", {"file": data}, follow=True)


def test_export_then_import_round_trips_the_catalog(operator_client) -> None:
    call_command("seed_demo", verbosity=0)
    ids = list(Service.objects.values_list("pk", flat=True))
    exported = operator_client.post(
        "/admin/services/service/", {"action": "export_json", "_selected_action": ids}
    )
    assert exported["Content-Disposition"].startswith("attachment")
    document = json.loads(exported.content)
    assert len(document["services"]) == len(ids)
    document["services"][0]["fee_fen"] = 12345
    response = upload(operator_client, document)
    assert "更新 1" in response.content.decode()
    assert Service.objects.get(code=document["services"][0]["code"]).fee_fen == 12345


def test_a_bad_record_aborts_the_whole_import(operator_client, department) -> None:
    CategoryFactory(code="shebao")
    good = {
        "code": "new-one", "department": department.code, "category": "shebao", "name": "新事项",
        "channels": ["online"], "form_schema": SIMPLE_FORM,
    }  # fmt: skip
    bad = {**good, "code": "bad-one", "form_schema": {"type": "object", "required": "yes"}}
    response = upload(operator_client, {"services": [good, bad]})
    html = response.content.decode()
    assert "bad-one" not in Service.objects.values_list("code", flat=True)
    assert not Service.objects.filter(code="new-one").exists()
    assert "errorlist" in html
    assert "第 2 条（bad-one）有误" in html and "1.form_schema" in html


def test_a_file_past_the_size_bound_is_refused_before_it_is_parsed(
    operator_client, monkeypatch
) -> None:
    from services import admin as catalog_admin

    monkeypatch.setattr(catalog_admin, "CATALOG_FILE_MAX_BYTES", 1024 * 1024)
    big = {"services": [{"code": f"s{i}", "name": "事项" * 20} for i in range(20000)]}
    response = upload(operator_client, big)
    html = response.content.decode()
    assert "errorlist" in html and "文件过大" in html
    assert not Service.objects.exists()


def test_a_file_that_is_not_a_catalog_is_refused(operator_client) -> None:
    response = upload(operator_client, {"nothing": 1})
    assert "errorlist" in response.content.decode()


def upload_text(operator_client, text: str) -> object:
    data = io.BytesIO(text.encode())
    data.name = "catalog.json"
    return operator_client.post("/admin/services/service/import/", {"file": data})


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        '{"services": ["shebao"]}',
        "[null]",
        "[" * 100_000 + "]" * 100_000,  # past Python's recursion limit
    ],
    ids=["number", "string", "null", "deep"],
)
def test_a_file_a_catalog_cannot_be_made_of_is_refused_on_the_page(operator_client, text) -> None:
    response = upload_text(operator_client, text)
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not Service.objects.exists()


def test_operator_edits_a_service_and_the_schema_is_checked(operator_client) -> None:
    service = ServiceFactory(code="x1")
    form = {
        "name": service.name, "category": service.category.pk, "summary": "", "eligibility": "",
        "materials": "[]", "fee_fen": 0, "time_limit_days": 3, "legal_basis": "",
        "channels": '["online"]', "identity_level": 2, "form_schema": '{"type": "string"}',
        "keywords": "[]", "is_active": "on",
    }  # fmt: skip
    response = operator_client.post(f"/admin/services/service/{service.pk}/change/", form)
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    form["form_schema"] = json.dumps(SIMPLE_FORM)
    response = operator_client.post(f"/admin/services/service/{service.pk}/change/", form)
    assert response.status_code == 302
    service.refresh_from_db()
    assert service.time_limit_days == 3


def _opened_form(operator_client, service: Service, url: str) -> dict:
    """The change form as the operator opened it (its ``seen`` mark), with
    the time limit changed to 9 days."""
    import re

    [seen] = re.findall(r'name="seen" value="([^"]+)"', operator_client.get(url).content.decode())
    return {
        "name": service.name, "category": service.category.pk, "summary": "", "eligibility": "",
        "materials": "[]", "fee_fen": 0, "time_limit_days": 9, "legal_basis": "",
        "channels": '["online"]', "identity_level": 2, "form_schema": json.dumps(SIMPLE_FORM),
        "keywords": "[]", "is_active": "on", "seen": seen,
    }  # fmt: skip


def test_a_form_opened_before_a_change_made_since_is_not_saved_over_it(
    operator_client, integrator_api, department
) -> None:
    """The operator opened the page; the department then took the service
    offline through its API; the operator's save would have put it back."""
    import re

    service = ServiceFactory(code="x1", department=department, form_schema=SIMPLE_FORM)
    url = f"/admin/services/service/{service.pk}/change/"
    form = _opened_form(operator_client, service, url)
    taken = integrator_api.patch(
        f"/api/v1/dept/services/{service.code}/", {"is_active": False}, format="json"
    )
    assert taken.status_code == 200, taken.json()

    response = operator_client.post(url, form)
    assert response.status_code == 200 and "已被修改" in response.content.decode()
    service.refresh_from_db()
    assert service.is_active is False and service.time_limit_days != 9
    # Reopened, the page shows the service as it is now, and saves.
    [seen] = re.findall(r'name="seen" value="([^"]+)"', operator_client.get(url).content.decode())
    assert operator_client.post(url, {**form, "seen": seen}).status_code == 302
    service.refresh_from_db()
    assert service.time_limit_days == 9


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_change_made_while_the_form_is_being_saved_waits_for_it(
    operator_client, integrator_api, department, monkeypatch
) -> None:
    """The page's check that nothing changed since it was opened holds the
    service's row until the save: a department's edit arriving between the
    check and the save waits, then applies to what the operator saved
    (before, it was written over by the operator's form)."""

    from services.admin import ServiceAdmin
    from tests.concurrency import a_backend_waits_on_a_lock, in_thread, pause_in

    service = ServiceFactory(code="x1", department=department, form_schema=SIMPLE_FORM)
    url = f"/admin/services/service/{service.pk}/change/"
    form = _opened_form(operator_client, service, url)
    paused, release = pause_in(monkeypatch, ServiceAdmin, "save_model")
    errors: list[BaseException] = []
    answers: dict[str, int] = {}
    saving = in_thread(
        lambda: answers.update(admin=operator_client.post(url, form).status_code), errors
    )
    assert paused.wait(30)
    editing = in_thread(
        lambda: answers.update(
            department=integrator_api.patch(
                f"/api/v1/dept/services/{service.code}/", {"is_active": False}, format="json"
            ).status_code
        ),
        errors,
    )
    waited = a_backend_waits_on_a_lock(timeout=5)
    release.set()
    saving.join(60)
    editing.join(60)
    assert not errors
    assert answers == {"admin": 302, "department": 200}
    assert waited
    service.refresh_from_db()
    assert (service.time_limit_days, service.is_active) == (9, False)


def test_catalog_admin_pages_render(operator_client) -> None:
    ServiceFactory()
    for page in (
        "/admin/services/service/",
        "/admin/services/service/add/",
        "/admin/services/service/import/",
        "/admin/services/category/",
    ):
        assert operator_client.get(page).status_code == 200, page


def test_a_service_deleted_in_the_admin_is_audited(operator_client, operator) -> None:
    from accounts.models import AuditEntry

    service = ServiceFactory(code="to-go")
    response = operator_client.post(
        f"/admin/services/service/{service.pk}/delete/", {"post": "yes"}, REMOTE_ADDR="10.0.0.8"
    )
    assert response.status_code == 302
    assert not Service.objects.filter(pk=service.pk).exists()
    entry = AuditEntry.objects.get(action="admin.service.deleted")
    assert (entry.actor_id, entry.target_id, entry.ip) == (
        str(operator.pk),
        str(service.pk),
        "10.0.0.8",
    )


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("materials", "[1]"),
        ("materials", "[{}]"),
        ("materials", '"x"'),
        ("materials", '[{"name": "a\\u0000"}]'),  # no database text holds NUL
        ("keywords", "[null]"),
        ("keywords", '[{"a": 1}]'),
        ("keywords", '"abc"'),  # was saved as ["a", "b", "c"]
        ("channels", '{"online": 1}'),
    ],
)
def test_a_guide_list_in_the_wrong_shape_is_a_field_error(operator_client, field, text) -> None:
    """The admin takes these as JSON text: held to the shapes the department
    API takes, they are refused on the page, not a server error or a guide
    that the catalog cannot show."""
    _refused_on_the_page(operator_client, field, text)


def _refused_on_the_page(operator_client, field: str, text: str) -> None:
    """A service's change form with ``text`` in ``field``: a field error on
    the page, and the service as it was."""
    service = ServiceFactory(code="x1")
    form = {
        "name": service.name, "category": service.category.pk, "summary": "", "eligibility": "",
        "materials": "[]", "fee_fen": 0, "time_limit_days": 3, "legal_basis": "",
        "channels": '["online"]', "identity_level": 2, "keywords": "[]", "is_active": "on",
        "form_schema": json.dumps(SIMPLE_FORM), field: text,
    }  # fmt: skip
    response = operator_client.post(f"/admin/services/service/{service.pk}/change/", form)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field]
    stored = Service.objects.get(pk=service.pk)
    assert getattr(stored, field) == getattr(service, field)


def test_catalog_changes_from_the_admin_are_audited_with_the_operators_address(
    operator_client,
) -> None:
    from accounts.models import AuditEntry

    service = ServiceFactory(code="x2")
    where = {"REMOTE_ADDR": "203.0.113.7"}
    operator_client.post(
        "/admin/services/service/",
        {"action": "take_offline", "_selected_action": [service.pk]},
        **where,
    )
    document = {"services": [{**_exported(operator_client, service), "fee_fen": 777}]}
    data = io.BytesIO(json.dumps(document, ensure_ascii=False).encode())
    data.name = "catalog.json"
    operator_client.post("/admin/services/service/import/", {"file": data}, **where)
    entries = AuditEntry.objects.filter(action="service.updated", target_id=str(service.pk))
    assert entries.count() == 2
    assert {entry.ip for entry in entries} == {"203.0.113.7"}


def _exported(operator_client, service: Service) -> dict:
    exported = operator_client.post(
        "/admin/services/service/", {"action": "export_json", "_selected_action": [service.pk]}
    )
    return json.loads(exported.content)["services"][0]


@pytest.mark.parametrize(
    "number",
    ["NaN", "Infinity", "-Infinity", "1e400", "1" * 5000],
    ids=["NaN", "Infinity", "-Infinity", "1e400", "5000-digits"],
)
@pytest.mark.parametrize("field", ["form_schema", "materials"])
def test_a_number_json_has_not_is_a_field_error(operator_client, field, number) -> None:
    """Python's JSON reader takes NaN and Infinity (and 1e400 as infinity);
    no JSON column holds them: refused on the page, not a server error."""
    texts = {
        "form_schema": '{"type": "object", "properties": {"n": {"type": "number", "maximum": %s}}}',
        "materials": '[{"name": "a", "note": %s}]',
    }
    _refused_on_the_page(operator_client, field, texts[field] % number)


@pytest.mark.parametrize("number", ["NaN", "-Infinity", "1e400"])
def test_a_catalog_file_with_a_number_json_has_not_is_refused(
    operator_client, department, number
) -> None:
    """Not JSON: it was imported, the keyword or note stored as "nan"."""
    CategoryFactory(code="shebao")
    record = {
        "code": "new-one", "department": department.code, "category": "shebao", "name": "新事项",
        "channels": ["online"], "form_schema": SIMPLE_FORM, "keywords": ["__N__"],
        "materials": [{"name": "居民身份证", "note": "__N__"}],
    }  # fmt: skip
    text = json.dumps({"services": [record]}, ensure_ascii=False).replace('"__N__"', number)
    response = upload_text(operator_client, text)
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not Service.objects.exists()

"""Departments and their API keys: commands, authentication, scopes."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.api_keys import api_key_revoke
from accounts.models import ApiKey, AuditEntry, Department
from tests.conftest import client_for, client_with_key

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.scope_urls")]


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_create_department_is_idempotent() -> None:
    assert run("create_department", "hrss", "长沙市人社局")[-1].startswith("created")
    assert run("create_department", "hrss", "长沙市人社局")[-1].startswith("exists")
    run("create_department", "hrss", "长沙市人力资源和社会保障局")
    assert Department.objects.get(code="hrss").name == "长沙市人力资源和社会保障局"
    assert Department.objects.count() == 1
    assert AuditEntry.objects.filter(action="department.renamed").count() == 1


def test_create_department_refuses_a_bad_code() -> None:
    with pytest.raises(CommandError):
        run("create_department", "Bad Code!", "x")


def test_create_api_key_prints_the_key_alone_on_the_last_line(department) -> None:
    lines = run("create_api_key", "hrss", "--scope", "integrator", "--name", "审批系统")
    raw = lines[-1]
    assert raw.startswith("mcs_") and " " not in raw
    key = ApiKey.objects.get()
    assert key.name == "审批系统" and key.scope == "integrator"
    assert raw not in key.key_hash and key.key_hash != raw
    response = client_with_key(raw).get("/probe/integrator/")
    assert response.status_code == 200
    assert response.json() == {"department": "hrss"}


def test_create_api_key_for_an_unknown_department_fails() -> None:
    with pytest.raises(CommandError, match="no department"):
        run("create_api_key", "nope", "--scope", "scanner")


def test_integrator_key_cannot_act_as_a_scanner(integrator_api) -> None:
    assert integrator_api.get("/probe/integrator/").status_code == 200
    response = integrator_api.get("/probe/scanner/")
    assert response.status_code == 403
    assert response.json()["code"] == "api_key_scope"


def test_scanner_key_cannot_act_as_an_integrator(scanner_api) -> None:
    assert scanner_api.get("/probe/scanner/").status_code == 200
    response = scanner_api.get("/probe/integrator/")
    assert response.status_code == 403
    assert response.json()["code"] == "api_key_scope"


def test_a_citizen_token_is_not_a_department_key(citizen) -> None:
    response = client_for(citizen).get("/probe/integrator/")
    assert response.status_code == 403
    assert response.json()["code"] == "api_key_scope"


def test_a_department_key_is_not_a_citizen(integrator_api) -> None:
    response = integrator_api.get("/probe/citizen/")
    assert response.status_code == 403
    assert response.json()["code"] == "citizen_required"


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key",
        "Api-Key mcs_deadbeef_nope",
        "Api-Key a b",
        "Api-Key mcs_x",
        "Api-Key \u00e9\u00e9",
    ],
)
def test_a_wrong_key_is_401(api, header, integrator_key) -> None:
    response = api.get("/probe/integrator/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_invalid"
    assert response["WWW-Authenticate"]


def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_401(integrator_key) -> None:
    forged = integrator_key.raw[:-4] + "AAAA"
    response = client_with_key(forged).get("/probe/integrator/")
    assert response.status_code == 401


def test_a_revoked_key_stops_working(integrator_key, integrator_api, operator) -> None:
    assert integrator_api.get("/probe/integrator/").status_code == 200
    api_key_revoke(key=integrator_key, actor=operator)
    response = integrator_api.get("/probe/integrator/")
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_invalid"
    assert AuditEntry.objects.filter(
        action="api_key.revoked", target_id=str(integrator_key.pk)
    ).exists()


def test_a_deactivated_departments_keys_stop_working(integrator_api, department) -> None:
    department.is_active = False
    department.save()
    assert integrator_api.get("/probe/integrator/").status_code == 401


def test_last_use_is_recorded(integrator_key, integrator_api) -> None:
    assert integrator_key.last_used_at is None
    integrator_api.get("/probe/integrator/")
    integrator_key.refresh_from_db()
    assert integrator_key.last_used_at is not None


def test_key_authentication_is_one_query_when_recently_used(
    integrator_api, django_assert_num_queries
) -> None:
    integrator_api.get("/probe/integrator/")
    with django_assert_num_queries(1):
        assert integrator_api.get("/probe/integrator/").status_code == 200

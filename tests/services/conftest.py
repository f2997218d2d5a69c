"""Actors and helpers for the catalog, applications and routing stories."""

from __future__ import annotations

import pytest

from services.models import Service
from tests.services.department import DepartmentServer
from tests.services.factories import CategoryFactory, ServiceFactory

GOOD_FORM = {"reason": "首次申领", "phone": "13800138000"}


@pytest.fixture
def service(department) -> Service:
    """A free service of the citizen's fixture department (hrss)."""
    return ServiceFactory(
        code="sbk-apply",
        name="社会保障卡申领",
        department=department,
        category=CategoryFactory(code="shebao"),
    )


@pytest.fixture
def paid_service(department) -> Service:
    return ServiceFactory(
        code="id-card-renew", name="居民身份证换领", department=department, fee_fen=2000
    )


@pytest.fixture
def other_service(other_department) -> Service:
    return ServiceFactory(
        code="hpf-certificate", name="住房公积金缴存证明", department=other_department
    )


@pytest.fixture
def department_server():
    with DepartmentServer() as server:
        yield server


def submit(client, service_code: str = "sbk-apply", form: dict | None = None, **headers):
    return client.post(
        "/api/v1/applications/",
        {"service": service_code, "form": GOOD_FORM if form is None else form},
        format="json",
        **headers,
    )

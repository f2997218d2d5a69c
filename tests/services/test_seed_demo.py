"""The demo data reads like Changsha's catalog and loads idempotently."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import Department, User
from services import catalog
from services.formschema import schema_problems
from services.models import Category, Service

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_complete() -> None:
    call_command("seed_demo", stdout=StringIO())
    counts = (
        Department.objects.count(),
        Category.objects.count(),
        Service.objects.count(),
        User.objects.count(),
    )
    call_command("seed_demo", stdout=StringIO())
    assert (
        Department.objects.count(),
        Category.objects.count(),
        Service.objects.count(),
        User.objects.count(),
    ) == counts
    assert counts[0] >= 8 and counts[2] >= 40
    assert {
        "shebao",
        "yibao",
        "gongjijin",
        "huji",
        "jiaotong",
        "jiaoyu",
        "wenlv",
        "qiye",
        "zhufang",
    } <= set(Category.objects.values_list("code", flat=True))


def test_seed_demo_again_leaves_what_operators_and_departments_changed(operator) -> None:
    """The command's promise (and DESIGN §8): running it again changes
    nothing that is already there. It imported every demo service over what
    was stored: a service the operators took offline and hold offline went
    back online with its hold lifted, a department's own edit of its guide
    was overwritten; categories and departments the operators renamed were
    renamed back. Only what is missing is added."""
    call_command("seed_demo", stdout=StringIO())
    held, edited, removed = Service.objects.order_by("code")[:3]
    catalog.service_update(service=held, actor=operator, is_active=False, hold=True)
    catalog.service_update(
        service=edited, actor=None, summary="部门自己改过的简介", fee_fen=edited.fee_fen + 100
    )
    Category.objects.filter(code="shebao").update(name="社会保险", sort_order=5)
    Department.objects.filter(code="hrss").update(name="长沙市人社局")
    removed_code = removed.code
    removed.delete()

    out = StringIO()
    call_command("seed_demo", stdout=out)

    held.refresh_from_db()
    assert held.is_active is False and held.offline_held_at is not None
    edited_now = Service.objects.get(pk=edited.pk)
    assert (edited_now.summary, edited_now.fee_fen) == ("部门自己改过的简介", edited.fee_fen + 100)
    assert Category.objects.filter(code="shebao", name="社会保险", sort_order=5).exists()
    assert Department.objects.get(code="hrss").name == "长沙市人社局"
    assert Service.objects.filter(code=removed_code).exists()  # the missing one is back
    assert "(1 new)" in out.getvalue()


def test_an_import_of_the_missing_only_still_checks_every_record(
    department, other_department
) -> None:
    """catalog_import(missing_only=True), the seeding's: a stored service is
    left as it is, a missing one created; a record naming another
    department's code is still refused (all or nothing), as an operator's
    import (which updates what is stored) refuses it."""
    from services.errors import SERVICE_CODE_TAKEN, ServicesError
    from tests.services.factories import ServiceFactory

    stored = ServiceFactory(code="stored", department=department, fee_fen=0)
    ServiceFactory(code="theirs", department=other_department)
    [record] = catalog.catalog_export(Service.objects.filter(pk=stored.pk))
    missing = {**record, "code": "missing"}

    report = catalog.catalog_import(
        [{**record, "fee_fen": 9, "is_active": False}, missing], actor=None, missing_only=True
    )
    assert (report.created, report.updated, report.unchanged) == (["missing"], [], ["stored"])
    kept = Service.objects.get(pk=stored.pk)
    assert (kept.fee_fen, kept.is_active, kept.updated_at) == (0, True, stored.updated_at)

    with pytest.raises(ServicesError) as refused:
        catalog.catalog_import(
            [{**record, "code": "another"}, {**record, "code": "theirs"}],
            actor=None,
            missing_only=True,
        )
    assert refused.value.error is SERVICE_CODE_TAKEN
    assert not Service.objects.filter(code="another").exists()

    updated = catalog.catalog_import([{**record, "fee_fen": 9}], actor=None)
    assert updated.updated == ["stored"] and Service.objects.get(pk=stored.pk).fee_fen == 9


def test_demo_services_have_valid_forms_and_mostly_no_fee() -> None:
    call_command("seed_demo", stdout=StringIO())
    services = list(Service.objects.all())
    assert all(schema_problems(s.form_schema) == [] for s in services)
    fee_bearing = [s for s in services if s.fee_fen]
    assert 3 <= len(fee_bearing) < len(services) / 2
    assert all(s.channels and s.materials and s.summary for s in services)


def test_demo_citizen_is_real_name_verified() -> None:
    call_command("seed_demo", stdout=StringIO())
    citizen = User.objects.get(phone="13800138000")
    assert citizen.identity_level == 2 and citizen.real_name == "张三"

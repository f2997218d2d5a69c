"""The demo data reads like Changsha's catalog and loads idempotently."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import Department, User
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

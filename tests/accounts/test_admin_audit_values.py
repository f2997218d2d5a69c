"""An admin change's audit entry names the fields it changed and keeps the
old and new values of the short ones an auditor asks about ("who moved the
holiday", "who took the category down"); personal data, secrets and free
arguments by name only."""

from __future__ import annotations

import pytest
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from accounts.models import AuditEntry
from services.models import Category, Holiday

pytestmark = pytest.mark.django_db

BEAT = "/admin/django_celery_beat"


def changed(action: str) -> dict:
    return AuditEntry.objects.get(action=action).data


def test_a_departments_change_keeps_its_old_and_new_values(operator_client, department) -> None:
    old_name = department.name
    response = operator_client.post(
        f"/admin/accounts/department/{department.pk}/change/",
        {
            "code": department.code,
            "name": "新名称",
            "name_en": department.name_en,
            "description": "新的简介",
            "contact_phone": department.contact_phone,
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    data = changed("admin.department.changed")
    assert data["fields"] == ["description", "name"]
    # The description by name only (a long text).
    assert data["values"] == {"name": {"from": old_name, "to": "新名称"}}
    assert "change" in data  # Django's own message, as before


def test_a_holidays_move_keeps_the_dates(operator_client) -> None:
    holiday = Holiday.objects.create(date="2027-10-01", name="国庆", is_workday=False)
    response = operator_client.post(
        f"/admin/services/holiday/{holiday.pk}/change/",
        {"date": "2027-10-02", "name": "国庆", "is_workday": "on"},
    )
    assert response.status_code == 302
    assert changed("admin.holiday.changed")["values"] == {
        "date": {"from": "2027-10-01", "to": "2027-10-02"},
        "is_workday": {"from": False, "to": True},
    }


def test_each_row_changed_in_the_list_keeps_its_own_values(operator_client) -> None:
    first = Category.objects.create(code="a", name="甲", sort_order=1)
    second = Category.objects.create(code="b", name="乙", sort_order=2)
    rows = [(first, 5, True), (second, 2, False)]
    form = {"form-TOTAL_FORMS": 2, "form-INITIAL_FORMS": 2, "_save": "保存"}
    for i, (category, order, active) in enumerate(rows):
        form[f"form-{i}-id"] = category.pk
        form[f"form-{i}-sort_order"] = order
        if active:
            form[f"form-{i}-is_active"] = "on"
    response = operator_client.post("/admin/services/category/?o=1", form)
    assert response.status_code == 302, response.content[:2000]
    entries = {
        entry.target_id: entry.data
        for entry in AuditEntry.objects.filter(action="admin.category.changed")
    }
    assert entries == {
        str(first.pk): {
            "change": entries[str(first.pk)]["change"],
            "fields": ["sort_order"],
            "values": {"sort_order": {"from": 1, "to": 5}},
        },
        str(second.pk): {
            "change": entries[str(second.pk)]["change"],
            "fields": ["is_active"],
            "values": {"is_active": {"from": True, "to": False}},
        },
    }


def test_a_tasks_arguments_are_named_not_kept(operator_client) -> None:
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    hourly = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    task = PeriodicTask.objects.create(
        name="对账", task="payments.reconcile", interval=every, kwargs="{}"
    )
    response = operator_client.post(
        f"{BEAT}/periodictask/{task.pk}/change/",
        {
            "name": "对账",
            "task": "payments.reconcile",
            "enabled": "on",
            "interval": hourly.pk,
            "args": "[]",
            "kwargs": '{"token": "not-for-the-audit-trail"}',
            "headers": "{}",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    data = changed("admin.periodictask.changed")
    assert data["fields"] == ["interval", "kwargs"]
    assert data["values"] == {"interval": {"from": every.pk, "to": hourly.pk}}
    assert "not-for-the-audit-trail" not in str(data)


def test_a_schedules_time_zone_is_kept_as_text(operator_client) -> None:
    crontab = CrontabSchedule.objects.create(minute="0", hour="3", timezone="Asia/Shanghai")
    response = operator_client.post(
        f"{BEAT}/crontabschedule/{crontab.pk}/change/",
        {
            "minute": "30",
            "hour": "3",
            "day_of_month": "*",
            "month_of_year": "*",
            "day_of_week": "*",
            "timezone": "UTC",
            "periodictask_set-TOTAL_FORMS": 0,
            "periodictask_set-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert changed("admin.crontabschedule.changed")["values"] == {
        "minute": {"from": "0", "to": "30"},
        "timezone": {"from": "Asia/Shanghai", "to": "UTC"},
    }

"""A time at the calendar's ends on the periodic tasks' forms (a clocked
schedule's time, a task's start and expiry) is a field error, not a server
error: 0001-01-01 in China time is before year 1 in UTC, and 9999-12-31
has no day after it."""

from __future__ import annotations

import pytest
from django_celery_beat.models import ClockedSchedule, IntervalSchedule, PeriodicTask

pytestmark = pytest.mark.django_db

BEAT = "/admin/django_celery_beat"
ENDS = [("0001-01-01", "00:00:00"), ("0001-01-01", "07:59:59"), ("9999-12-31", "23:59:59")]


@pytest.mark.parametrize(("day", "time"), ENDS)
def test_a_clocked_schedule_at_the_calendars_end_is_a_field_error(
    operator_client, day, time
) -> None:
    response = operator_client.post(
        f"{BEAT}/clockedschedule/add/",
        {
            "clocked_time_0": day,
            "clocked_time_1": time,
            "periodictask_set-TOTAL_FORMS": 0,
            "periodictask_set-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert "clocked_time" in response.context["adminform"].form.errors
    assert not ClockedSchedule.objects.exists()


def test_a_clocked_schedule_in_the_calendar_is_saved(operator_client) -> None:
    response = operator_client.post(
        f"{BEAT}/clockedschedule/add/",
        {
            "clocked_time_0": "2027-01-01",
            "clocked_time_1": "03:00:00",
            "periodictask_set-TOTAL_FORMS": 0,
            "periodictask_set-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302
    assert ClockedSchedule.objects.count() == 1


def _task(every: IntervalSchedule, **times: str) -> dict[str, object]:
    return {
        "name": "对账",
        "task": "payments.reconcile",
        "enabled": "on",
        "interval": every.pk,
        "args": "[]",
        "kwargs": "{}",
        "headers": "{}",
        **times,
    }


@pytest.mark.parametrize("field", ["start_time", "expires"])
@pytest.mark.parametrize(("day", "time"), ENDS)
def test_a_task_starting_or_expiring_at_the_calendars_end_is_a_field_error(
    operator_client, field, day, time
) -> None:
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    response = operator_client.post(
        f"{BEAT}/periodictask/add/", _task(every, **{f"{field}_0": day, f"{field}_1": time})
    )
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not PeriodicTask.objects.filter(name="对账").exists()


def test_a_task_in_the_calendar_is_saved(operator_client) -> None:
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    response = operator_client.post(
        f"{BEAT}/periodictask/add/",
        _task(
            every,
            start_time_0="2027-01-01",
            start_time_1="03:00:00",
            expires_0="2028-01-01",
            expires_1="03:00:00",
        ),
    )
    assert response.status_code == 302
    assert PeriodicTask.objects.filter(name="对账").exists()

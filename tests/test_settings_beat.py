"""Every periodic task expires about one period after beat sends it: while
the workers of its queue are down the sends do not pile up to all run when
they return (routing.sweep alone is some 17,000 a day)."""

from __future__ import annotations

import datetime as dt

import pytest
from celery.schedules import crontab, schedule
from django.conf import settings
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from config.celery import app

pytestmark = pytest.mark.django_db


def period_seconds(entry_schedule: object) -> float:
    """The longest time between two runs of a schedule (over a week for a crontab)."""
    if isinstance(entry_schedule, int | float):
        return float(entry_schedule)
    if isinstance(entry_schedule, dt.timedelta):
        return entry_schedule.total_seconds()
    if isinstance(entry_schedule, schedule) and not isinstance(entry_schedule, crontab):
        return entry_schedule.run_every.total_seconds()
    assert isinstance(entry_schedule, crontab)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    runs = []
    minute = start
    while minute < start + dt.timedelta(days=8):
        if minute.minute in entry_schedule.minute and minute.hour in entry_schedule.hour:
            runs.append(minute)
        minute += dt.timedelta(minutes=1)
    return max((b - a).total_seconds() for a, b in zip(runs, runs[1:], strict=False))


def test_every_beat_entry_expires_within_about_its_period() -> None:
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        # The project's scheduler takes each entry into its table, as beat
        # does at start (update_from_dict); what it keeps is what it sends.
        DatabaseScheduler.Entry.from_entry(name, app=app, **entry)
        task = PeriodicTask.objects.get(name=name)
        period = period_seconds(entry["schedule"])
        assert task.expire_seconds is not None, f"{name} never expires"
        # At least a period (one send is always waiting), at most two or a minute.
        assert period <= task.expire_seconds <= max(2 * period, 60), (name, period)
        # What beat sends it with.
        assert DatabaseScheduler.Entry(task, app=app).options["expires"] == task.expire_seconds


def test_the_period_of_a_schedule() -> None:
    assert period_seconds(5.0) == 5
    assert period_seconds(dt.timedelta(minutes=10)) == 600
    assert period_seconds(crontab(minute=23)) == 3600
    assert period_seconds(crontab(hour=3, minute=53)) == 86400

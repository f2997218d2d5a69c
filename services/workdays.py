"""Working days (工作日): Monday to Friday, minus public holidays, plus the
weekend days worked in exchange (调休), as kept in :class:`Holiday`."""

from __future__ import annotations

import datetime as dt

from services.models import Holiday


def _overrides(start: dt.date, end: dt.date) -> dict[dt.date, bool]:
    rows = Holiday.objects.filter(date__gte=start, date__lte=end).values_list("date", "is_workday")
    return dict(rows)


def _is_working(day: dt.date, overrides: dict[dt.date, bool]) -> bool:
    if day in overrides:
        return overrides[day]
    return day.weekday() < 5


def working_days_add(start: dt.date, days: int) -> dt.date:
    """The day on which ``days`` working days after ``start`` have passed
    (``start`` itself does not count; 0 gives ``start``)."""
    if days <= 0:
        return start
    # Generous window: even long holidays cannot stretch N working days
    # beyond 2N + 30 calendar days.
    overrides = _overrides(start, start + dt.timedelta(days=2 * days + 30))
    day, counted = start, 0
    while counted < days:
        day += dt.timedelta(days=1)
        if _is_working(day, overrides):
            counted += 1
    return day


def working_days_between(start: dt.date, end: dt.date) -> int:
    """Working days in (start, end]."""
    if end <= start:
        return 0
    overrides = _overrides(start, end)
    return sum(
        _is_working(start + dt.timedelta(days=n), overrides)
        for n in range(1, (end - start).days + 1)
    )

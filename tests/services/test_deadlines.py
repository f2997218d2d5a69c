"""Deadlines (办结时限) count working days: weekends and holidays skipped,
weekend make-up days worked, and the clock stops while waiting for the citizen."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from services.models import Application, Holiday
from services.workdays import working_days_add, working_days_between
from tests.services.conftest import submit
from tests.services.test_applications_api import move

pytestmark = pytest.mark.django_db

MON = dt.date(2026, 11, 23)  # a Monday


def test_weekends_are_skipped() -> None:
    assert working_days_add(MON, 0) == MON
    assert working_days_add(MON, 4) == dt.date(2026, 11, 27)  # Friday
    assert working_days_add(MON, 5) == dt.date(2026, 11, 30)  # next Monday
    assert working_days_add(dt.date(2026, 11, 28), 1) == dt.date(2026, 11, 30)  # from a Saturday


def test_holidays_are_skipped_and_make_up_days_are_worked() -> None:
    # National Day week, 2026: Oct 1–7 off, Sunday Sep 27 and Saturday Oct 10 worked.
    for day in range(1, 8):
        Holiday.objects.create(date=dt.date(2026, 10, day), name="国庆节")
    Holiday.objects.create(date=dt.date(2026, 9, 27), name="国庆调休", is_workday=True)
    Holiday.objects.create(date=dt.date(2026, 10, 10), name="国庆调休", is_workday=True)
    friday = dt.date(2026, 9, 25)
    assert working_days_add(friday, 1) == dt.date(2026, 9, 27)  # the worked Sunday
    assert working_days_add(dt.date(2026, 9, 30), 1) == dt.date(2026, 10, 8)
    assert working_days_add(dt.date(2026, 9, 30), 3) == dt.date(2026, 10, 10)  # the worked Saturday
    assert working_days_between(dt.date(2026, 9, 30), dt.date(2026, 10, 8)) == 1


def test_counting_between_matches_adding() -> None:
    for n in range(0, 30):
        assert working_days_between(MON, working_days_add(MON, n)) == n


def test_accepting_starts_the_clock(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    application = move(Application.objects.get(pk=body["id"]), "accepted")
    expected = working_days_add(timezone.localdate(), service.time_limit_days)
    assert application.due_date == expected
    assert (
        citizen_api.get(f"/api/v1/applications/{body['id']}/").json()["due_date"]
        == expected.isoformat()
    )


def test_waiting_for_the_citizen_does_not_count(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    application = move(Application.objects.get(pk=body["id"]), "accepted", "needs_info")
    due = application.due_date
    # The department asked a week ago (five working days).
    week_ago = timezone.now() - dt.timedelta(days=7)
    Application.objects.filter(pk=application.pk).update(paused_at=week_ago)
    citizen_api.post(
        f"/api/v1/applications/{body['id']}/supplement/", {"form": {"copies": 1}}, format="json"
    )
    application.refresh_from_db()
    paused = working_days_between(timezone.localdate(week_ago), timezone.localdate())
    assert paused == 5
    assert application.due_date == working_days_add(due, paused)


def test_operators_see_overdue_and_due_soon_applications(
    client, operator, citizen_api, service
) -> None:
    client.force_login(operator)
    late = move(Application.objects.get(pk=submit(citizen_api).json()["id"]), "accepted")
    soon = move(Application.objects.get(pk=submit(citizen_api).json()["id"]), "accepted")
    fine = move(Application.objects.get(pk=submit(citizen_api).json()["id"]), "accepted")
    today = timezone.localdate()
    Application.objects.filter(pk=late.pk).update(due_date=today - dt.timedelta(days=1))
    Application.objects.filter(pk=soon.pk).update(due_date=working_days_add(today, 1))
    Application.objects.filter(pk=fine.pk).update(due_date=working_days_add(today, 10))

    def listed(deadline: str) -> str:
        return client.get("/admin/services/application/", {"deadline": deadline}).content.decode()

    assert late.number in listed("overdue") and soon.number not in listed("overdue")
    assert soon.number in listed("due_soon") and fine.number not in listed("due_soon")
    assert fine.number in listed("on_track") and late.number not in listed("on_track")


def test_the_admin_list_costs_one_holiday_lookup_however_many_rows(
    client, operator, citizen_api, service, django_assert_max_num_queries
) -> None:
    client.force_login(operator)
    for _ in range(15):
        move(Application.objects.get(pk=submit(citizen_api).json()["id"]), "accepted")
    with django_assert_max_num_queries(12):
        response = client.get("/admin/services/application/")
    assert response.content.decode().count("期限内") >= 15


def test_the_deadline_filter_agrees_with_the_deadline_column_at_every_edge(
    citizen_api, service
) -> None:
    """The admin's filter works on the columns (an index answers it); the
    list's column is computed: the two put every application in the same
    place, on each side of today and of the due-soon limit."""
    from services import selectors
    from services.selectors import DUE_SOON_WORKING_DAYS

    today = timezone.localdate()
    soon = working_days_add(today, DUE_SOON_WORKING_DAYS)
    edges = [
        today - dt.timedelta(days=30),
        today - dt.timedelta(days=1),
        today,
        soon,
        soon + dt.timedelta(days=1),
        None,
    ]
    for due in edges:
        for status in ("accepted", "submitted"):
            made = Application.objects.get(pk=submit(citizen_api).json()["id"])
            if status == "accepted":
                made = move(made, "accepted")
            Application.objects.filter(pk=made.pk).update(due_date=due)
    annotated = selectors.applications_with_deadline_state(Application.objects.all())
    for state in ("overdue", "due_soon", "on_track"):
        by_column = set(selectors.applications_in_deadline_state(Application.objects.all(), state))
        by_annotation = {a for a in annotated if a.deadline == state}
        assert by_column == by_annotation and by_column, state


def test_the_overdue_list_shows_the_most_overdue_first(
    client, operator, citizen_api, service
) -> None:
    client.force_login(operator)
    today = timezone.localdate()
    numbers = []
    for days in (3, 30, 10):
        made = move(Application.objects.get(pk=submit(citizen_api).json()["id"]), "accepted")
        Application.objects.filter(pk=made.pk).update(due_date=today - dt.timedelta(days=days))
        numbers.append((days, made.number))
    page = client.get("/admin/services/application/", {"deadline": "overdue"}).content.decode()
    positions = [page.index(number) for _days, number in sorted(numbers, reverse=True)]
    assert positions == sorted(positions)

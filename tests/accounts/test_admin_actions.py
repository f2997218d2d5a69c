"""Every button of a list (an admin action) says which permission takes it,
so that staff who may only look change nothing; and every change made in
the admin, the libraries' tables included (periodic tasks, their
schedules, login lockouts), lands in the audit trail."""

from __future__ import annotations

from unittest import mock

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from accounts.admin import AuditedDeletions, AuditedModelAdmin
from accounts.models import AuditEntry
from services.admin import ServiceAdmin
from tests.accounts.factories import AccessAttemptFactory, StaffFactory

pytestmark = pytest.mark.django_db

TASKS = "/admin/django_celery_beat/periodictask/"
# Saves audited by the write function they go through (services.catalog).
SAVES_AUDITED_BELOW = (ServiceAdmin,)


@pytest.fixture
def nightly() -> PeriodicTask:
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    return PeriodicTask.objects.create(
        name="对账", task="payments.reconcile", interval=every, enabled=True
    )


def test_every_action_of_the_site_names_the_permission_it_takes() -> None:
    request = RequestFactory().get("/admin/")
    request.user = StaffFactory(is_superuser=True)
    unguarded = sorted(
        f"{model._meta.label}.{name}"
        for model, model_admin in admin.site._registry.items()
        for name, (func, _name, _label) in model_admin.get_actions(request).items()
        if not getattr(func, "allowed_permissions", None)
    )
    assert unguarded == []


@pytest.mark.parametrize("action", ["disable_tasks", "toggle_tasks", "enable_tasks", "run_tasks"])
def test_staff_who_may_only_look_at_periodic_tasks_cannot_switch_or_run_them(
    client, nightly, action
) -> None:
    clerk = StaffFactory()
    clerk.user_permissions.add(Permission.objects.get(codename="view_periodictask"))
    client.force_login(clerk)
    nightly.enabled = action != "enable_tasks"
    nightly.save()
    with mock.patch("celery.app.task.Task.apply_async") as sent:
        client.post(TASKS, {"action": action, "_selected_action": [nightly.pk]})
    nightly.refresh_from_db()
    assert nightly.enabled is (action != "enable_tasks")
    assert not sent.called
    assert not AuditEntry.objects.filter(target_type="django_celery_beat.periodictask").exists()


@pytest.mark.parametrize(
    ("action", "audited"),
    [
        ("disable_tasks", "admin.periodictask.disabled"),
        ("toggle_tasks", "admin.periodictask.toggled"),
        ("run_tasks", "admin.periodictask.run"),
    ],
)
def test_an_operator_switching_or_running_a_periodic_task_is_audited(
    operator_client, nightly, action, audited
) -> None:
    with mock.patch("celery.app.task.Task.apply_async") as sent:
        operator_client.post(TASKS, {"action": action, "_selected_action": [nightly.pk]})
    assert sent.called is (action == "run_tasks")
    entry = AuditEntry.objects.get(action=audited)
    assert (entry.target_id, entry.actor_label) == (str(nightly.pk), "operator")
    assert entry.data["task"] == "payments.reconcile"


def test_a_schedule_added_and_a_task_deleted_in_the_admin_are_audited(
    operator_client, nightly
) -> None:
    response = operator_client.post(
        "/admin/django_celery_beat/intervalschedule/add/",
        {
            "every": 5,
            "period": "minutes",
            # The tasks using the schedule, listed on its page (none yet).
            "periodictask_set-TOTAL_FORMS": 0,
            "periodictask_set-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302
    added = IntervalSchedule.objects.get(every=5)
    assert AuditEntry.objects.filter(
        action="admin.intervalschedule.added", target_id=str(added.pk)
    ).exists()
    operator_client.post(f"{TASKS}{nightly.pk}/delete/", {"post": "yes"})
    assert not PeriodicTask.objects.filter(pk=nightly.pk).exists()
    assert AuditEntry.objects.filter(
        action="admin.periodictask.deleted", target_id=str(nightly.pk)
    ).exists()


def test_every_page_that_changes_records_puts_the_change_in_the_audit_trail() -> None:
    request = RequestFactory().get("/admin/")
    request.user = StaffFactory(is_superuser=True)
    unaudited = []
    for model, model_admin in admin.site._registry.items():
        saves = model_admin.has_add_permission(request) or model_admin.has_change_permission(
            request
        )
        if saves and not isinstance(model_admin, (AuditedModelAdmin, *SAVES_AUDITED_BELOW)):
            unaudited.append(f"{model._meta.label} saves")
        if model_admin.has_delete_permission(request) and not isinstance(
            model_admin, AuditedDeletions
        ):
            unaudited.append(f"{model._meta.label} deletes")
    assert sorted(unaudited) == []


def test_the_lockout_list_offers_no_clean_up_button(operator_client) -> None:
    """The library's clean-up answered with a server error, and to staff who
    may only look it was offered too; expired attempts go at each failed login."""
    attempt = AccessAttemptFactory(
        user_agent="", http_accept="", post_data="", failures_since_start=1
    )
    offered = operator_client.get("/admin/axes/accessattempt/").context["action_form"]
    assert "cleanup_expired_attempts" not in dict(offered.fields["action"].choices)
    response = operator_client.post(
        "/admin/axes/accessattempt/",
        {"action": "cleanup_expired_attempts", "_selected_action": [attempt.pk]},
    )
    assert response.status_code in (200, 302)


@pytest.mark.parametrize("selected", ["abc", "1%00", "99999999999999999999999", "-1.5"])
def test_a_selection_no_record_can_have_is_a_bad_request_on_every_list(
    operator_client, selected
) -> None:
    """A hand-made post naming a row by an id of the wrong shape is refused
    (400), not a server error, whatever the list and its button."""
    request = RequestFactory().get("/admin/")
    request.user = StaffFactory(is_superuser=True)
    failed = []
    for model, model_admin in admin.site._registry.items():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for name in model_admin.get_actions(request):
            response = operator_client.post(
                url, {"action": name, "_selected_action": [selected], "apply": "1", "note": "x"}
            )
            if response.status_code not in (200, 302, 400):
                failed.append(f"{url} {name}: {response.status_code}")
    assert failed == []

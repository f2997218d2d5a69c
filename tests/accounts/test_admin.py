"""Operators in the admin: masked lists, audited look-ups, keys shown once."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts import inbox
from accounts.models import ApiKey, AuditEntry, User
from tests.accounts.factories import AccessAttemptFactory, StaffFactory

pytestmark = pytest.mark.django_db


def test_user_list_shows_masked_phone_and_name(operator_client, citizen) -> None:
    response = operator_client.get("/admin/accounts/user/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "138****8000" in html and "张**" in html
    assert "13800138000" not in html and "张三丰" not in html


def test_user_form_shows_masked_values_only(operator_client, citizen) -> None:
    html = operator_client.get(f"/admin/accounts/user/{citizen.pk}/change/").content.decode()
    assert "138****8000" in html
    assert citizen.id_number not in html and "13800138000" not in html and "张三丰" not in html


def test_operator_finds_a_citizen_by_full_id_number(
    operator_client, citizen, other_citizen
) -> None:
    html = operator_client.get(
        "/admin/accounts/user/", {"q": citizen.id_number.lower()}
    ).content.decode()
    assert "138****8000" in html
    assert "139****9000" not in html


def test_operator_finds_a_citizen_by_full_phone(operator_client, citizen, other_citizen) -> None:
    html = operator_client.get("/admin/accounts/user/", {"q": "13900139000"}).content.decode()
    assert "139****9000" in html and "138****8000" not in html


def test_full_personal_data_needs_the_permission(client, citizen) -> None:
    clerk = StaffFactory(username="clerk")
    clerk.user_permissions.add(Permission.objects.get(codename="view_user"))
    client.force_login(clerk)
    assert client.get(f"/admin/accounts/user/{citizen.pk}/pii/").status_code == 403
    assert client.post(f"/admin/accounts/user/{citizen.pk}/pii/").status_code == 403
    assert not AuditEntry.objects.filter(action="user.pii_viewed").exists()


def test_the_permission_to_reveal_is_not_enough_without_the_one_to_read_accounts(
    client, citizen
) -> None:
    """``accounts.view_pii`` shows more of an account one may read; staff who
    may not read accounts (an account id is in the audit trail) see nothing."""
    auditor = StaffFactory(username="auditor")
    auditor.user_permissions.add(
        Permission.objects.get(codename="view_auditentry"),
        Permission.objects.get(codename="view_pii"),
    )
    client.force_login(auditor)
    assert client.get(f"/admin/accounts/user/{citizen.pk}/pii/").status_code == 403
    response = client.post(f"/admin/accounts/user/{citizen.pk}/pii/")
    assert response.status_code == 403
    assert citizen.id_number not in response.content.decode()
    assert not AuditEntry.objects.filter(action="user.pii_viewed").exists()


def test_viewing_full_personal_data_is_audited(client, citizen) -> None:
    officer = StaffFactory(username="officer")
    officer.user_permissions.add(
        Permission.objects.get(codename="view_user"), Permission.objects.get(codename="view_pii")
    )
    client.force_login(officer)
    response = client.post(f"/admin/accounts/user/{citizen.pk}/pii/")
    assert response.status_code == 200
    html = response.content.decode()
    assert citizen.id_number in html and "13800138000" in html
    entry = AuditEntry.objects.get(action="user.pii_viewed")
    assert entry.actor_id == str(officer.pk) and entry.target_id == str(citizen.pk)
    assert entry.actor_kind == "operator"


def test_a_link_from_elsewhere_reveals_nothing_and_puts_nothing_on_record(citizen) -> None:
    """Revealing is a POST of the page's own form: a link or a redirect from
    another site (a GET, or a POST without the CSRF token) neither shows the
    values nor writes a look the operator never asked for to the audit trail."""
    officer = StaffFactory(username="officer")
    officer.user_permissions.add(
        Permission.objects.get(codename="view_user"), Permission.objects.get(codename="view_pii")
    )
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(officer)
    url = f"/admin/accounts/user/{citizen.pk}/pii/"
    offered = browser.get(url)
    assert offered.status_code == 200
    assert citizen.id_number not in offered.content.decode()
    assert "13800138000" not in offered.content.decode()
    assert browser.post(url).status_code == 403
    assert not AuditEntry.objects.filter(action="user.pii_viewed").exists()
    token = offered.context["csrf_token"]
    shown = browser.post(url, {"csrfmiddlewaretoken": str(token)})
    assert citizen.id_number in shown.content.decode()
    assert AuditEntry.objects.filter(action="user.pii_viewed").count() == 1


def test_operator_creates_a_key_and_sees_it_once(operator_client, department) -> None:
    response = operator_client.post(
        "/admin/accounts/apikey/add/",
        {"department": department.pk, "scope": "scanner", "name": "地铁闸机"},
        follow=True,
    )
    assert response.status_code == 200
    html = response.content.decode()
    raw = re.search(r"mcs_[0-9a-f]{8}_[A-Za-z0-9_\-]{43}", html).group(0)
    key = ApiKey.objects.get()
    assert key.scope == "scanner" and key.name == "地铁闸机"
    assert raw.split("_")[1] == key.prefix
    # The list and the detail page never show it again.
    assert raw not in operator_client.get("/admin/accounts/apikey/").content.decode()
    assert (
        raw not in operator_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    )
    assert AuditEntry.objects.filter(action="api_key.created", actor_kind="operator").exists()


def test_operator_revokes_keys_from_the_list(operator_client, integrator_key) -> None:
    operator_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke", "_selected_action": [integrator_key.pk]},
    )
    integrator_key.refresh_from_db()
    assert integrator_key.revoked_at is not None


def test_operator_suspends_a_citizen(operator_client, citizen) -> None:
    operator_client.post(
        "/admin/accounts/user/", {"action": "suspend", "_selected_action": [citizen.pk]}
    )
    citizen.refresh_from_db()
    assert not citizen.is_active
    assert AuditEntry.objects.filter(action="account.suspended", target_id=str(citizen.pk)).exists()


def test_admin_changes_land_in_the_audit_trail(operator_client, department) -> None:
    response = operator_client.post(
        f"/admin/accounts/department/{department.pk}/change/",
        {
            "code": department.code,
            "name": "新名称",
            "name_en": "",
            "description": "",
            "contact_phone": "12345",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="admin.department.changed")
    assert entry.target_id == str(department.pk)


def test_audit_trail_cannot_be_edited(operator_client, citizen) -> None:
    from accounts.audit import audit_record

    entry = audit_record(actor=None, action="test", target=citizen)
    assert operator_client.get("/admin/accounts/auditentry/").status_code == 200
    assert (
        operator_client.post(
            f"/admin/accounts/auditentry/{entry.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert operator_client.get("/admin/accounts/auditentry/add/").status_code == 403


def test_operator_creates_a_staff_account_for_a_department(operator_client, department) -> None:
    response = operator_client.post(
        "/admin/accounts/user/add/",
        {
            "username": "li.clerk",
            "usable_password": "true",
            "password1": "a-long-Passw0rd!",
            "password2": "a-long-Passw0rd!",
            "is_staff": "on",
            "department": department.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    staff = User.objects.get(username="li.clerk")
    assert staff.department == department and staff.is_staff and staff.phone is None


@pytest.mark.parametrize(
    "page",
    [
        "/admin/accounts/message/",
        "/admin/accounts/otpchallenge/",
        "/admin/accounts/department/",
        "/admin/accounts/apikey/",
        "/admin/accounts/apikey/add/",
        "/admin/accounts/user/add/",
    ],
)
def test_admin_pages_render(operator_client, citizen, integrator_key, page) -> None:
    assert operator_client.get(page).status_code == 200


def test_sms_code_log_masks_the_phone(operator_client, api) -> None:
    api.post("/api/v1/auth/otp/", {"phone": "13800138000"}, format="json")
    html = operator_client.get("/admin/accounts/otpchallenge/").content.decode()
    assert "138****8000" in html and "13800138000" not in html


def test_login_lockouts_are_records_to_read_and_lift(operator_client) -> None:
    from axes.models import AccessAttempt

    attempt = AccessAttemptFactory()
    page = operator_client.get(f"/admin/axes/accessattempt/{attempt.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="_save"' not in html
    assert f"/admin/axes/accessattempt/{attempt.pk}/delete/" in html  # lifting the lockout

    lifted = operator_client.post(
        f"/admin/axes/accessattempt/{attempt.pk}/delete/",
        {"post": "yes"},
        REMOTE_ADDR="10.9.8.7",
    )
    assert lifted.status_code == 302
    assert not AccessAttempt.objects.exists()
    entry = AuditEntry.objects.get(action="admin.accessattempt.deleted")
    assert (entry.actor_label, entry.target_id, entry.ip) == (
        "operator",
        str(attempt.pk),
        "10.9.8.7",
    )


def test_login_logs_are_evidence_and_cannot_be_deleted(operator_client) -> None:
    from axes.models import AccessFailureLog, AccessLog

    log = AccessLog.objects.create(
        username="clerk", ip_address="10.1.2.3", user_agent="Mozilla/5.0", path_info="/admin/"
    )
    failure = AccessFailureLog.objects.create(
        username="clerk", ip_address="10.1.2.3", user_agent="Mozilla/5.0", path_info="/admin/"
    )
    for path in (f"accesslog/{log.pk}", f"accessfailurelog/{failure.pk}"):
        assert operator_client.get(f"/admin/axes/{path}/change/").status_code == 200
        assert (
            operator_client.post(f"/admin/axes/{path}/delete/", {"post": "yes"}).status_code == 403
        )
    assert AccessLog.objects.filter(pk=log.pk).exists()
    assert AccessFailureLog.objects.filter(pk=failure.pk).exists()


def test_a_closed_account_is_shown_but_never_written_to(operator_client, citizen) -> None:
    """Not even by a superuser (the operator): its data was erased."""
    from accounts.citizens import account_close

    account_close(user=citizen)
    page = operator_client.get(f"/admin/accounts/user/{citizen.pk}/change/")
    assert page.status_code == 200
    assert 'name="nickname"' not in page.content.decode()
    sent = operator_client.post(
        f"/admin/accounts/user/{citizen.pk}/change/",
        {"nickname": "回来了", "email": "back@example.com"},
    )
    assert sent.status_code == 403
    citizen.refresh_from_db()
    assert citizen.nickname != "回来了" and citizen.email != "back@example.com"
    stamped = citizen.deactivated_at
    operator_client.post(
        "/admin/accounts/user/", {"action": "suspend", "_selected_action": [citizen.pk]}
    )
    citizen.refresh_from_db()
    assert citizen.deactivated_at == stamped
    assert not AuditEntry.objects.filter(action="account.suspended").exists()


@pytest.mark.parametrize("action", ["suspend", "reinstate"])
def test_an_action_on_an_account_closed_meanwhile_leaves_it_closed_and_says_so(
    operator_client, citizen, operator, monkeypatch, action
) -> None:
    """The citizen's close commits after the action has read the selected
    accounts (here: as it starts on the first one): the account is skipped
    and the operator told, not reopened nor stamped again."""
    from accounts import admin as accounts_admin
    from accounts import citizens

    if action == "reinstate":
        citizens.user_set_active(user=citizen, active=False, actor=operator)
    real = citizens.user_set_active

    def close_first(*, user, active, actor, ip=None):
        citizens.account_close(user=User.objects.get(pk=user.pk))
        return real(user=user, active=active, actor=actor, ip=ip)

    monkeypatch.setattr(accounts_admin.citizens, "user_set_active", close_first)
    page = operator_client.post(
        "/admin/accounts/user/",
        {"action": action, "_selected_action": [str(citizen.pk)]},
        follow=True,
    )
    after = User.objects.get(pk=citizen.pk)
    assert after.closed_at is not None
    assert after.is_active is False, "a closed account was made active again"
    assert after.deactivated_at == after.closed_at
    shown = [str(m) for m in page.context["messages"]]
    assert "1 个账户已注销，未改动" in shown
    assert ("已恢复 0 个账户" if action == "reinstate" else "已停用 0 个账户") in shown
    audited = "account.reinstated" if action == "reinstate" else "account.suspended"
    assert AuditEntry.objects.filter(action=audited).count() == 0


def test_an_inbox_message_is_shown_with_personal_values_masked(operator_client, citizen) -> None:
    """A message carries a department's note as written (an ID number, a
    phone): its page in the admin masks them, as the application's does."""
    message = inbox.message_post(
        user=citizen,
        kind="application.status",
        title="办件进度：%(status)s",
        body="状态已更新。%(note)s",
        params={"status": "需补正", "note": "请补交 430102199003070018 的材料，电话 13800138000"},
    )
    html = operator_client.get(f"/admin/accounts/message/{message.pk}/change/").content.decode()
    assert "430102199003070018" not in html and "13800138000" not in html
    assert "430102********0018" in html and "138****8000" in html


def test_a_departments_and_a_categorys_code_stay_once_made(
    operator_client, department, category
) -> None:
    """Codes are what integrations hold: API keys' commands, events, the
    catalog's filters, receipts signed with the department's code. The
    admin edits the rest, never the code (as a service's)."""
    response = operator_client.post(
        f"/admin/accounts/department/{department.pk}/change/",
        {
            "code": "renamed",
            "name": "新名称",
            "name_en": "",
            "contact_phone": "",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    department.refresh_from_db()
    assert department.name == "新名称" and department.code != "renamed"
    response = operator_client.post(
        f"/admin/services/category/{category.pk}/change/",
        {"code": "renamed", "name": "新的分类", "name_en": "", "sort_order": 0, "is_active": "on"},
    )
    assert response.status_code == 302
    category.refresh_from_db()
    assert category.name == "新的分类" and category.code != "renamed"
    # Made new, a code is given as before.
    assert 'name="code"' in operator_client.get("/admin/accounts/department/add/").content.decode()
    assert 'name="code"' in operator_client.get("/admin/services/category/add/").content.decode()

"""A clerk with some admin rights cannot grow them, nor read a token."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from accounts.models import AuditEntry, User
from tests.accounts.factories import StaffFactory
from tests.accounts.helpers import log_in

pytestmark = pytest.mark.django_db


def _clerk(*codenames: str) -> User:
    clerk = StaffFactory(username="clerk")
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return clerk


def _change_form(user: User, **changes: object) -> dict:
    """What the change form posts for ``user``, with ``changes`` applied."""
    data = {
        "username": user.username or "",
        "nickname": user.nickname,
        "email": user.email,
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


# --- Refresh tokens ------------------------------------------------------------------------


@pytest.fixture
def logged_in_citizen(api, citizen) -> dict:
    return log_in(api, citizen.phone)


def test_the_database_keeps_no_usable_refresh_token(logged_in_citizen) -> None:
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    refresh = logged_in_citizen["refresh"]
    stored = OutstandingToken.objects.get()
    assert stored.token.startswith("sha256:")
    assert refresh not in stored.token and refresh.split(".")[2] not in stored.token


@pytest.mark.parametrize("perm", ["view_outstandingtoken", "view_blacklistedtoken"])
def test_no_admin_page_shows_a_refresh_token(client, api, logged_in_citizen, perm) -> None:
    refresh = logged_in_citizen["refresh"]
    # One token revoked (logout), so both lists have a row.
    second = log_in(api, "13900139000")
    assert api.post("/api/v1/auth/logout/", {"refresh": second["refresh"]}).status_code == 204
    client.force_login(StaffFactory(username="root", is_superuser=True))
    model = perm.removeprefix("view_")
    listing = client.get(f"/admin/token_blacklist/{model}/")
    assert listing.status_code == 200
    pages = [listing.content.decode()]
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    rows = OutstandingToken if model == "outstandingtoken" else BlacklistedToken
    for row in rows.objects.all():
        page = client.get(f"/admin/token_blacklist/{model}/{row.pk}/change/")
        assert page.status_code == 200
        pages.append(page.content.decode())
    for html in pages:
        for token in (refresh, second["refresh"]):
            assert token not in html
            assert token.split(".")[2] not in html  # not even the signature


def test_a_citizen_still_refreshes_and_logs_out(api, logged_in_citizen) -> None:
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    pair = api.post("/api/v1/auth/token/refresh/", {"refresh": logged_in_citizen["refresh"]})
    assert pair.status_code == 200
    # The rotated token is listed by fingerprint too.
    assert all(
        t.startswith("sha256:") for t in OutstandingToken.objects.values_list("token", flat=True)
    )
    assert OutstandingToken.objects.count() == 2
    assert api.post("/api/v1/auth/logout/", {"refresh": pair.json()["refresh"]}).status_code == 204
    again = api.post("/api/v1/auth/token/refresh/", {"refresh": pair.json()["refresh"]})
    assert again.status_code == 401


# --- Privileges ------------------------------------------------------------------------


def test_a_clerk_cannot_make_themselves_superuser(client) -> None:
    clerk = _clerk("view_user", "change_user")
    client.force_login(clerk)
    view_pii = Permission.objects.get(codename="view_pii")
    response = client.post(
        f"/admin/accounts/user/{clerk.pk}/change/",
        _change_form(
            clerk,
            is_superuser="on",
            is_staff="on",
            user_permissions=[str(view_pii.pk)],
        ),
    )
    # Their own staff account is read-only to them.
    assert response.status_code == 403
    clerk.refresh_from_db()
    assert not clerk.is_superuser
    assert not clerk.has_perm("accounts.view_pii")


def test_a_clerk_cannot_grant_powers_to_a_citizen_account(client, citizen) -> None:
    client.force_login(_clerk("view_user", "change_user"))
    view_pii = Permission.objects.get(codename="view_pii")
    group = Group.objects.create(name="全部权限")
    group.permissions.set(Permission.objects.all())
    response = client.post(
        f"/admin/accounts/user/{citizen.pk}/change/",
        _change_form(
            citizen,
            nickname="小张",
            is_superuser="on",
            is_staff="on",
            groups=[str(group.pk)],
            user_permissions=[str(view_pii.pk)],
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    citizen = User.objects.get(pk=citizen.pk)
    assert citizen.nickname == "小张"  # what a clerk may change, changed
    assert not citizen.is_superuser and not citizen.is_staff
    assert not citizen.groups.exists() and not citizen.user_permissions.exists()


def test_a_clerk_sees_privileges_read_only(client, citizen) -> None:
    client.force_login(_clerk("view_user", "change_user"))
    html = client.get(f"/admin/accounts/user/{citizen.pk}/change/").content.decode()
    assert 'name="nickname"' in html
    for field in ("is_superuser", "is_staff", "groups", "user_permissions", "department"):
        assert f'name="{field}"' not in html


@pytest.mark.parametrize(
    "superuser",
    [{"username": "root"}, {"username": "hidden", "is_staff": False}],
    ids=["staff", "not_staff"],
)
def test_a_clerk_cannot_set_a_superusers_password(client, superuser) -> None:
    root = StaffFactory(is_superuser=True, **superuser)
    client.force_login(_clerk("view_user", "change_user"))
    response = client.post(
        f"/admin/accounts/user/{root.pk}/password/",
        {"password1": "Taken-0ver-now!", "password2": "Taken-0ver-now!", "usable_password": "true"},
    )
    assert response.status_code == 403
    root.refresh_from_db()
    assert not root.check_password("Taken-0ver-now!")


def test_a_clerk_cannot_widen_a_group(client) -> None:
    clerk = _clerk("view_group", "change_group", "add_group")
    group = Group.objects.create(name="窗口")
    clerk.groups.add(group)
    client.force_login(clerk)
    every = [str(p.pk) for p in Permission.objects.all()]
    response = client.post(
        f"/admin/auth/group/{group.pk}/change/", {"name": "窗口", "permissions": every}
    )
    assert response.status_code == 403
    assert not group.permissions.exists()
    assert client.post("/admin/auth/group/add/", {"name": "x"}).status_code == 403


def test_a_superuser_grants_powers_and_the_audit_trail_says_which(client, citizen) -> None:
    root = StaffFactory(username="root", is_superuser=True)
    client.force_login(root)
    group = Group.objects.create(name="审核")
    view_pii = Permission.objects.get(codename="view_pii")
    response = client.post(
        f"/admin/accounts/user/{citizen.pk}/change/",
        _change_form(
            citizen, is_staff="on", groups=[str(group.pk)], user_permissions=[str(view_pii.pk)]
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditEntry.objects.get(action="admin.user.privileges_changed")
    assert entry.actor_id == str(root.pk) and entry.target_id == str(citizen.pk)
    assert entry.data["is_staff"] == {"before": False, "after": True}
    assert entry.data["groups"] == {"before": [], "after": ["审核"]}
    assert entry.data["permissions"]["after"] == ["accounts.view_pii"]

    response = client.post(
        f"/admin/auth/group/{group.pk}/change/", {"name": "审核", "permissions": [str(view_pii.pk)]}
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="admin.group.privileges_changed")
    assert entry.data == {"permissions": {"before": [], "after": ["accounts.view_pii"]}}
    assert AuditEntry.objects.filter(action="admin.group.changed").exists()


# --- Admin login ------------------------------------------------------------------------


def _admin_login(client, password: str, ip: str = "203.0.113.5"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "root", "password": password},
        REMOTE_ADDR=ip,
    )


def test_admin_logins_are_throttled_per_username_and_address(client, settings) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    root = StaffFactory(username="root", is_superuser=True)
    root.set_password("Right-pass-2026")
    root.save()
    assert [_admin_login(client, "wrong").status_code for _ in range(3)] == [200, 200, 429]
    locked = _admin_login(client, "Right-pass-2026")
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # The same operator from elsewhere still gets in; a forged header does not help.
    assert _admin_login(client, "Right-pass-2026", ip="198.51.100.9").status_code == 302
    client.logout()
    forged = client.post(
        "/admin/login/?next=/admin/",
        {"username": "root", "password": "Right-pass-2026"},
        REMOTE_ADDR="203.0.113.5",
        HTTP_X_FORWARDED_FOR="198.51.100.77",
    )
    assert forged.status_code == 429


def test_a_failed_admin_login_records_no_password_or_token(client) -> None:
    root = StaffFactory(username="root", is_superuser=True)
    client.post(
        "/admin/login/?next=/admin/",
        {"username": "root", "password": "Guess-Me-1", "csrfmiddlewaretoken": "tok" * 10},
        REMOTE_ADDR="203.0.113.5",
    )
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.get()
    client.force_login(root)
    pages = [
        client.get("/admin/axes/accessattempt/").content.decode(),
        client.get(f"/admin/axes/accessattempt/{attempt.pk}/change/").content.decode(),
    ]
    for html in pages:
        assert "Guess-Me-1" not in html and "tok" * 10 not in html


# --- Acting on stronger accounts ---------------------------------------------------------------


def test_a_clerk_cannot_suspend_or_reinstate_a_privileged_account(
    client, operator, citizen
) -> None:
    client.force_login(_clerk("view_user", "change_user"))
    response = client.post(
        "/admin/accounts/user/",
        {"action": "suspend", "_selected_action": [str(operator.pk), str(citizen.pk)]},
    )
    assert response.status_code == 302
    operator.refresh_from_db()
    citizen.refresh_from_db()
    assert operator.is_active and not citizen.is_active  # the citizen, yes; the superuser, no

    from accounts import citizens

    other = StaffFactory(username="other-clerk")
    citizens.user_set_active(user=other, active=False, actor=operator)
    client.post(
        "/admin/accounts/user/", {"action": "reinstate", "_selected_action": [str(other.pk)]}
    )
    other.refresh_from_db()
    assert not other.is_active


def test_a_clerk_cannot_delete_a_privileged_account(client, operator) -> None:
    client.force_login(_clerk("view_user", "change_user", "delete_user"))
    assert (
        client.post(f"/admin/accounts/user/{operator.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    response = client.post(
        "/admin/accounts/user/",
        {"action": "delete_selected", "_selected_action": [str(operator.pk)], "post": "yes"},
    )
    assert response.status_code in (200, 302)
    assert User.objects.filter(pk=operator.pk).exists()


def test_an_account_with_permissions_is_privileged_too(client) -> None:
    holder = _citizen_with_permission()
    client.force_login(_clerk("view_user", "change_user"))
    response = client.post(
        "/admin/accounts/user/", {"action": "suspend", "_selected_action": [str(holder.pk)]}
    )
    assert response.status_code == 302
    holder.refresh_from_db()
    assert holder.is_active


def test_the_rule_holds_below_the_admin(operator) -> None:
    from django.core.exceptions import PermissionDenied

    from accounts import citizens

    clerk = _clerk("change_user")
    with pytest.raises(PermissionDenied):
        citizens.user_set_active(user=operator, active=False, actor=clerk)
    operator.refresh_from_db()
    assert operator.is_active


def _citizen_with_permission() -> User:
    from tests.accounts.factories import CitizenFactory

    user = CitizenFactory()
    user.user_permissions.add(Permission.objects.get(codename="view_pii"))
    return user


def test_an_operators_session_lasts_a_working_day_not_two_weeks(client, settings) -> None:
    """A console that reveals citizens' data: a session left open (or its
    cookie taken) ends after ADMIN_SESSION_HOURS, and when the browser
    closes."""
    root = StaffFactory(username="root", is_superuser=True)
    root.set_password("Right-pass-2026")
    root.save()
    assert _admin_login(client, "Right-pass-2026").status_code == 302
    assert client.session.get_expiry_age() == 8 * 3600
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["max-age"] in ("", None) and cookie["expires"] in ("", None)
    assert cookie["httponly"]

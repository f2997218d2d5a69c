"""An account is privileged when it can do more than a citizen: staff,
superuser, or holding groups or permissions (accounts.privileges). One
that is privileged without being staff is not closed by its holder
(``DELETE /api/v1/me/`` is ``account_privileged``: the admin manages it),
so a superuser deletes it in the admin, and its e-mail is an operator's,
not a citizen's, and is not masked there."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from accounts.models import User
from tests.accounts.factories import CitizenFactory, StaffFactory
from tests.accounts.helpers import bearer, log_in

pytestmark = pytest.mark.django_db

EMAIL = "desk.officer@example.com"


def _in_a_group(user: User) -> None:
    user.groups.add(Group.objects.create(name="窗口"))


def _with_a_permission(user: User) -> None:
    user.user_permissions.add(Permission.objects.get(codename="view_user"))


def _superuser_not_staff(user: User) -> None:
    User.objects.filter(pk=user.pk).update(is_superuser=True)


POWERS = [_in_a_group, _with_a_permission, _superuser_not_staff]
IDS = ["holding_a_group", "holding_a_permission", "superuser_without_staff"]


@pytest.fixture(params=POWERS, ids=IDS)
def privileged(request) -> User:
    user = CitizenFactory(phone="13700137000", email=EMAIL)
    request.param(user)
    user.refresh_from_db()
    assert not user.is_staff
    return user


def test_the_holder_cannot_close_it_and_a_superuser_deletes_it_in_the_admin(
    privileged, operator_client
) -> None:
    api = APIClient()
    closing = bearer(api, log_in(api, privileged.phone)["access"]).delete("/api/v1/me/")
    assert closing.status_code == 403
    assert closing.json()["code"] == "account_privileged"

    url = f"/admin/accounts/user/{privileged.pk}/delete/"
    assert (
        url in operator_client.get(f"/admin/accounts/user/{privileged.pk}/change/").content.decode()
    )
    assert operator_client.get(url).status_code == 200
    response = operator_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not User.objects.filter(pk=privileged.pk).exists()


def test_a_clerk_who_may_delete_accounts_still_cannot_delete_it(privileged, client) -> None:
    clerk = StaffFactory(username="clerk")
    clerk.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_user", "change_user", "delete_user"])
    )
    client.force_login(clerk)
    response = client.post(f"/admin/accounts/user/{privileged.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert User.objects.filter(pk=privileged.pk).exists()


def test_its_email_is_not_masked_as_a_citizens(privileged, operator_client) -> None:
    page = operator_client.get(f"/admin/accounts/user/{privileged.pk}/change/")
    assert page.status_code == 200
    assert "email" in page.context["adminform"].form.fields
    assert EMAIL in page.content.decode()

"""A citizen's account is closed by the citizen (accounts.citizens.account_close:
tokens and star-codes revoked, the revocation feed told, personal data
erased), never deleted from the admin, which would skip all of that."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from accounts.models import User
from tests.accounts.factories import StaffFactory

pytestmark = pytest.mark.django_db


def test_an_operator_cannot_delete_a_citizen(operator_client, citizen) -> None:
    page = operator_client.get(f"/admin/accounts/user/{citizen.pk}/change/")
    assert page.status_code == 200
    assert f"/admin/accounts/user/{citizen.pk}/delete/" not in page.content.decode()
    assert operator_client.get(f"/admin/accounts/user/{citizen.pk}/delete/").status_code == 403
    response = operator_client.post(f"/admin/accounts/user/{citizen.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert User.objects.filter(pk=citizen.pk).exists()


def test_a_clerk_who_may_delete_accounts_cannot_delete_a_citizen(client, citizen) -> None:
    clerk = StaffFactory(username="clerk")
    clerk.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_user", "change_user", "delete_user"])
    )
    client.force_login(clerk)
    response = client.post(f"/admin/accounts/user/{citizen.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    listing = client.get("/admin/accounts/user/")
    assert "delete_selected" not in dict(listing.context["action_form"].fields["action"].choices)
    assert User.objects.filter(pk=citizen.pk).exists()


def test_a_staff_account_may_still_be_deleted_by_a_superuser(operator_client) -> None:
    clerk = StaffFactory(username="leaver")
    response = operator_client.post(f"/admin/accounts/user/{clerk.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not User.objects.filter(pk=clerk.pk).exists()

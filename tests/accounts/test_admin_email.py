"""A citizen's e-mail is personal data like the phone: masked on the
account's page, in full only on the audited reveal page, and changed by
the citizen (accounts.citizens.profile_update), not typed over by a clerk."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from accounts.models import AuditEntry, User
from tests.accounts.factories import StaffFactory

pytestmark = pytest.mark.django_db

EMAIL = "zhangsan.private@example.com"


def _clerk(*codenames: str) -> User:
    clerk = StaffFactory(username="clerk")
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return clerk


@pytest.fixture
def with_email(citizen) -> User:
    User.objects.filter(pk=citizen.pk).update(email=EMAIL)
    citizen.refresh_from_db()
    return citizen


def test_a_clerk_sees_a_citizens_email_masked(client, with_email) -> None:
    client.force_login(_clerk("view_user"))
    page = client.get(f"/admin/accounts/user/{with_email.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert EMAIL not in html
    assert "z***@example.com" in html


def test_a_clerk_who_may_change_accounts_cannot_change_a_citizens_email(client, with_email) -> None:
    client.force_login(_clerk("view_user", "change_user"))
    url = f"/admin/accounts/user/{with_email.pk}/change/"
    page = client.get(url)
    assert EMAIL not in page.content.decode()
    assert "email" not in page.context["adminform"].form.fields
    response = client.post(
        url,
        {
            "username": "",
            "nickname": "新昵称",
            "email": "someone.else@example.com",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302
    with_email.refresh_from_db()
    assert with_email.email == EMAIL
    assert with_email.nickname == "新昵称"


def test_the_reveal_page_shows_the_email_in_full_and_records_the_look(client, with_email) -> None:
    client.force_login(_clerk("view_user", "view_pii"))
    url = f"/admin/accounts/user/{with_email.pk}/pii/"
    assert url in client.get(f"/admin/accounts/user/{with_email.pk}/change/").content.decode()
    assert EMAIL not in client.get(url).content.decode()
    shown = client.post(url)
    assert EMAIL in shown.content.decode()
    assert AuditEntry.objects.filter(action="user.pii_viewed").count() == 1


def test_a_staff_accounts_email_stays_editable(operator_client) -> None:
    clerk = StaffFactory(username="desk", email="desk@example.com")
    page = operator_client.get(f"/admin/accounts/user/{clerk.pk}/change/")
    assert "email" in page.context["adminform"].form.fields

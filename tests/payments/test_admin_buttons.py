"""The daily settlement's link is shown to those who may read the ledger;
anyone else who follows the address gets the site's 403 page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from accounts.models import User
from tests.accounts.factories import StaffFactory

pytestmark = pytest.mark.django_db

ORDERS = "/admin/payments/paymentorder/"
SETTLEMENT = "/admin/payments/paymentorder/settlement/"


def staff_with(*perms: str) -> User:
    staff = StaffFactory(username="clerk")
    for perm in perms:
        app_label, codename = perm.split(".")
        staff.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return staff


def _refused_on_the_sites_page(response) -> None:
    assert response.status_code == 403
    # Django's page for PermissionDenied (the site has no 403.html), not an empty answer.
    assert response["Content-Type"].startswith("text/html")
    assert "403 Forbidden" in response.content.decode()


def test_the_settlement_link_needs_the_ledger(client) -> None:
    client.force_login(staff_with("payments.view_paymentorder"))
    page = client.get(ORDERS)
    assert page.status_code == 200
    assert SETTLEMENT not in page.content.decode()
    _refused_on_the_sites_page(client.get(SETTLEMENT))


def test_the_settlement_link_is_shown_with_the_ledger(client) -> None:
    client.force_login(staff_with("payments.view_paymentorder", "payments.view_ledgerentry"))
    assert SETTLEMENT in client.get(ORDERS).content.decode()
    assert client.get(SETTLEMENT).status_code == 200

"""The catalog import's button is shown to those who may add and change
services; anyone else who follows the address gets the site's 403 page,
not a blank one."""

from __future__ import annotations

import pytest

from tests.payments.test_admin_buttons import _refused_on_the_sites_page, staff_with

pytestmark = pytest.mark.django_db

SERVICES = "/admin/services/service/"
IMPORT = "/admin/services/service/import/"


def test_the_import_button_needs_adding_and_changing_services(client) -> None:
    client.force_login(staff_with("services.view_service"))
    page = client.get(SERVICES)
    assert page.status_code == 200
    assert IMPORT not in page.content.decode()
    _refused_on_the_sites_page(client.get(IMPORT))
    _refused_on_the_sites_page(client.post(IMPORT))


def test_the_import_button_is_shown_to_who_may_import(client) -> None:
    client.force_login(
        staff_with("services.view_service", "services.add_service", "services.change_service")
    )
    assert IMPORT in client.get(SERVICES).content.decode()
    assert client.get(IMPORT).status_code == 200

"""The sandbox bureau says yes to every valid ID number, whatever the name:
a production deployment uses it only when told to by name, never by
default (anyone could then reach identity level 2 as anyone)."""

from __future__ import annotations

import pytest

from accounts.models import User
from tests.accounts.factories import make_id_number
from tests.conftest import client_for
from tests.production import PRODUCTION, start_django


def production_provider(**env: str) -> str:
    result = start_django(
        {**PRODUCTION, **env},
        "from django.conf import settings; print(repr(settings.IDENTITY_PROVIDER))",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_production_does_not_default_to_the_sandbox_bureau() -> None:
    assert production_provider() == "''"
    sandbox = "accounts.identity.SandboxIdentityProvider"
    assert production_provider(IDENTITY_PROVIDER=sandbox) == repr(sandbox)


@pytest.mark.django_db
def test_without_a_bureau_real_name_checks_are_unavailable(new_citizen, settings) -> None:
    settings.IDENTITY_PROVIDER = ""
    response = client_for(new_citizen).post(
        "/api/v1/me/real-name/", {"name": "王小明", "id_number": make_id_number(5)}, format="json"
    )
    assert response.status_code == 503
    assert response.json()["code"] == "identity_provider_unavailable"
    assert User.objects.get(pk=new_citizen.pk).identity_level == 1

"""The sandbox bureau says yes to every valid ID number, whatever the name:
a production deployment uses it only when told to by name, never by
default (anyone could then reach identity level 2 as anyone)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.models import User
from tests.accounts.factories import make_id_number
from tests.conftest import client_for

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "kq3VJ0bX-2mZ8cR4tY7uW1eA9sD6fG5hJ3kL0pO8iU2yT4rE6wQ1zX9cV7bN5mM3",
    "FIELD_ENCRYPTION_KEY": "3q2-7wQvV0gkEzvvZHvmtg2k8i9wT9Wm4Qd8Hq6JHcM=",
    "BLIND_INDEX_KEY": "Yb7Qp2Lm9Xc4Vn8Rt1Ks6Wd3Hf0Gj5Za",
    "ALLOWED_HOSTS": "api.example.org",
    "SMS_BACKEND": "file",
}


def production_provider(**env: str) -> str:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "IDENTITY_PROVIDER")
    }
    environ.update({"DJANGO_SETTINGS_MODULE": "config.settings.base", **PRODUCTION, **env})
    script = "import django; django.setup(); from django.conf import settings; print(repr(settings.IDENTITY_PROVIDER))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
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

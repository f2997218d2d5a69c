"""The demo operator the quick start names (``admin`` / ``changsha-demo``,
or ``DEMO_ADMIN_PASSWORD``), and the scanner key docs/scanners.md makes."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db


def _admin_login(password: str) -> Client:
    client = Client()
    client.post("/admin/login/?next=/admin/", {"username": "admin", "password": password})
    return client


def test_the_quick_starts_operator_logs_in_to_the_admin(settings, monkeypatch) -> None:
    settings.DEBUG = True
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    call_command("seed_demo", stdout=StringIO())
    index = _admin_login("changsha-demo").get("/admin/")
    assert index.status_code == 200
    assert index.wsgi_request.user.username == "admin"
    refused = _admin_login("wrong-password").get("/admin/")
    assert refused.status_code == 302
    assert refused["Location"].startswith("/admin/login/")


def test_demo_admin_password_names_the_password(settings, monkeypatch) -> None:
    settings.DEBUG = True
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "another-Demo-pass-42")
    call_command("seed_demo", stdout=StringIO())
    operator = User.objects.get(username="admin")
    assert operator.check_password("another-Demo-pass-42")
    assert not operator.check_password("changsha-demo")


def test_without_debug_there_is_no_well_known_operator(settings, monkeypatch) -> None:
    settings.DEBUG = False
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert not User.objects.filter(username="admin").exists()
    assert "no demo operator (set DEMO_ADMIN_PASSWORD)" in out.getvalue()


def test_the_scanner_key_command_of_the_scanners_guide_works_on_the_demo_data() -> None:
    call_command("seed_demo", stdout=StringIO())
    out = StringIO()
    call_command(
        "create_api_key", "transport", "--scope", "scanner", "--name", "1号线闸机", stdout=out
    )
    assert out.getvalue().strip().splitlines()[-1]

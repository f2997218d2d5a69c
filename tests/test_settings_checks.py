"""A backend or provider that cannot be imported, or a rate the throttles
cannot read, stops start-up naming the variable (it made every request that
needed it a 500)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks

from tests.production import PRODUCTION

ROOT = Path(__file__).resolve().parent.parent


def problems() -> list[str]:
    return [m.msg for m in checks.run_checks(tags=["settings"]) if m.is_serious()]


def test_the_settings_as_they_are_pass() -> None:
    assert problems() == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SMS_BACKEND", "accounts.sms.NoSuchBackend"),
        ("SMS_BACKEND", "aliyun"),
        ("IDENTITY_PROVIDER", "accounts.identity.SandboxIdentityProvder"),
        ("QR_SCAN_RECORDER", "qr.recorders.RedisRecorder"),
        ("QR_SCAN_RECORDER", "qr.recorders.settings"),  # a module attribute, not a class
    ],
)
def test_code_that_cannot_be_imported_is_named(settings, setting: str, value: str) -> None:
    setattr(settings, setting, value)
    found = problems()
    assert len(found) == 1 and found[0].startswith(f"{setting}=")


def test_no_identity_provider_is_allowed(settings) -> None:
    settings.IDENTITY_PROVIDER = ""  # real-name checks answer 503
    assert problems() == []


@pytest.mark.parametrize("rate", ["60 per minute", "60/", "60", "sixty/min", "0/min", "60/week"])
@pytest.mark.parametrize("setting", ["QR_VERIFY_RATE", "PAYMENTS_NOTIFY_RATE"])
def test_a_rate_the_throttles_cannot_read_is_named(settings, setting: str, rate: str) -> None:
    setattr(settings, setting, rate)
    found = problems()
    assert len(found) == 1 and found[0].startswith(f"{setting}={rate!r} is not a rate")


def test_a_throttle_rate_is_named_by_its_variable(settings) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "real_name": "10 a day",
        },
    }
    assert problems() == [
        "THROTTLE_REAL_NAME='10 a day' is not a rate: write it as a count per "
        "s, min, hour or day, e.g. 60/min"
    ]


def _production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.base", **PRODUCTION, **overrides})
    return env


def test_manage_py_check_fails_on_them() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_production_env(SMS_BACKEND="accounts.sms.Nope", THROTTLE_LOGIN="30 per minute"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SMS_BACKEND='accounts.sms.Nope' cannot be imported" in result.stderr
    assert "THROTTLE_LOGIN='30 per minute' is not a rate" in result.stderr


def _refused_start(*args: str, **env: str) -> str:
    """Start ``python -m <args>`` with the production settings and ``env``;
    it must stop by itself (a non-zero exit): its output."""
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=_production_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_gunicorn_does_not_start_on_them() -> None:
    output = _refused_start(
        "gunicorn",
        "-c",
        "config/gunicorn.py",
        "-b",
        "127.0.0.1:0",
        "config.wsgi",
        IDENTITY_PROVIDER="accounts.identity.Nope",
    )
    assert "IDENTITY_PROVIDER='accounts.identity.Nope' cannot be imported" in output


@pytest.mark.parametrize(
    "command",
    [["worker", "--pool", "solo", "-Q", "default"], ["beat", "--schedule", "/dev/null"]],
    ids=["worker", "beat"],
)
def test_celery_does_not_start_on_them(command: list[str]) -> None:
    """A worker would take tasks and fail each that needs the setting;
    beat would send them on time, to fail there."""
    output = _refused_start(
        "celery",
        "-A",
        "config",
        *command,
        SMS_BACKEND="accounts.sms.Nope",
        # A broker nobody answers: one that started anyway would take no
        # other test's tasks (and fail without naming the setting).
        REDIS_URL="redis://127.0.0.1:9/0",
    )
    assert "SMS_BACKEND='accounts.sms.Nope' cannot be imported" in output

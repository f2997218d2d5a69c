"""Settings read from the environment as a server starts: the ``NAME_FILE``
variants of the URLs that carry passwords, and list variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.production import PRODUCTION

ROOT = Path(__file__).resolve().parent.parent

# What each run prints of the settings it got.
SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'db': s.DATABASES['default'], 'redis': s.REDIS_URL, "
    "'cache': s.CACHES['default'], 'broker': s.CELERY_BROKER_URL, "
    "'hosts': s.ALLOWED_HOSTS, 'origins': s.CSRF_TRUSTED_ORIGINS, "
    "'retries': s.ROUTING_RETRY_SCHEDULE}, default=str))"
)


def start(env_overrides: dict[str, str], script: str = SHOW) -> subprocess.CompletedProcess:
    """The production settings in a fresh interpreter, with none of this
    process's database, Redis, broker or secret variables."""
    dropped = ("SECRET_KEY", "DEBUG", "IDENTITY_PROVIDER", "DATABASE_URL", "REDIS_URL")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not k.endswith("_FILE") and not k.startswith("CELERY_")
    }
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.base", **PRODUCTION, **env_overrides})
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_of(env_overrides: dict[str, str]) -> dict:
    result = start(env_overrides)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- DATABASE_URL_FILE, REDIS_URL_FILE ----------------------------------------------------


def test_database_and_redis_urls_are_read_from_files(tmp_path: Path) -> None:
    database = tmp_path / "database-url"
    database.write_text("postgres://mcs:s3cret-pw@db.internal:5432/mcs\n")
    redis = tmp_path / "redis-url"
    redis.write_text("redis://:r3dis-pw@cache.internal:6379/3\n")
    got = settings_of({"DATABASE_URL_FILE": str(database), "REDIS_URL_FILE": str(redis)})
    assert got["db"]["ENGINE"] == "config.postgresql"  # Django's, bulk statements bounded
    assert (got["db"]["HOST"], got["db"]["NAME"], got["db"]["PASSWORD"]) == (
        "db.internal",
        "mcs",
        "s3cret-pw",
    )
    assert got["redis"] == "redis://:r3dis-pw@cache.internal:6379/3"
    assert got["cache"]["LOCATION"] == got["redis"]
    assert got["broker"] == got["redis"]


def test_without_either_it_is_sqlite_and_no_redis() -> None:
    got = settings_of({})
    assert got["db"]["ENGINE"] == "django.db.backends.sqlite3"
    assert got["redis"] == ""
    assert got["cache"]["BACKEND"].endswith("LocMemCache")
    assert got["broker"].startswith("filesystem://")


@pytest.mark.parametrize("variable", ["DATABASE_URL_FILE", "REDIS_URL_FILE"])
def test_an_unreadable_url_file_is_named(tmp_path: Path, variable: str) -> None:
    missing = tmp_path / "nowhere"
    result = start({variable: str(missing)})
    assert result.returncode != 0
    assert f"{variable}={missing} cannot be read" in result.stderr


# --- Lists ------------------------------------------------------------------------------


def test_list_variables_are_trimmed_and_skip_empty_items() -> None:
    got = settings_of(
        {
            "ALLOWED_HOSTS": " api.example.org, www.example.org ,,",
            "CSRF_TRUSTED_ORIGINS": "https://a.example.org , https://b.example.org,",
            "ROUTING_RETRY_SCHEDULE": "5, 30,, 120 ,",
        }
    )
    assert got["hosts"] == ["api.example.org", "www.example.org"]
    assert got["origins"] == ["https://a.example.org", "https://b.example.org"]
    assert got["retries"] == [5, 30, 120]


def test_every_host_of_a_spaced_list_is_served() -> None:
    script = (
        "import django; django.setup(); from django.test import Client; "
        "print([Client().get('/healthz', HTTP_HOST=h).status_code "
        "for h in ('api.example.org', 'www.example.org', 'other.example.org')])"
    )
    result = start({"ALLOWED_HOSTS": "api.example.org, www.example.org"}, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[200, 200, 400]"


# --- NUM_PROXIES --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "1.5", "two", " -0x1"])
def test_a_number_of_proxies_that_is_not_a_whole_number_of_0_or_more_is_refused(
    value: str,
) -> None:
    """NUM_PROXIES=-1 left X-Forwarded-For ignored (as for 0) while Django
    believed the client's own X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER is
    set whenever NUM_PROXIES is not 0): refused at start-up instead."""
    result = start({"NUM_PROXIES": value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"NUM_PROXIES={value.strip()!r} is not a whole number of 0 or more" in result.stderr


@pytest.mark.parametrize(("value", "proxies", "believed"), [("", 0, None), (" 2 ", 2, "https")])
def test_a_number_of_proxies_is_read_as_a_whole_number(
    value: str, proxies: int, believed: str | None
) -> None:
    script = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.NUM_PROXIES, s.REST_FRAMEWORK['NUM_PROXIES'], "
        "(s.SECURE_PROXY_SSL_HEADER or [None, None])[1])"
    )
    result = start({"NUM_PROXIES": value}, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{proxies} {proxies} {believed}"

"""gunicorn's own loggers follow LOG_LEVEL, as every other logger does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.production import PRODUCTION, start_django

ROOT = Path(__file__).resolve().parent.parent

SHOW_LEVELS = (
    "import json, runpy; cfg = runpy.run_path('config/gunicorn.py'); "
    "print(json.dumps({name: logger['level'] for name, logger in "
    "cfg['logconfig_dict']['loggers'].items()}))"
)


def gunicorn_config(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", SHOW_LEVELS],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def levels(**env: str) -> dict[str, str]:
    result = gunicorn_config(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("given", "level"), [("WARNING", "WARNING"), ("debug", "DEBUG")])
def test_gunicorn_logs_at_log_level(given: str, level: str) -> None:
    assert levels(LOG_LEVEL=given) == {"gunicorn.error": level, "gunicorn.access": level}


def test_gunicorn_logs_at_info_by_default() -> None:
    assert levels() == {"gunicorn.error": "INFO", "gunicorn.access": "INFO"}


def test_an_unknown_log_level_is_named() -> None:
    result = gunicorn_config(LOG_LEVEL="verbose")
    assert result.returncode != 0
    assert "LOG_LEVEL" in result.stderr and "verbose" in result.stderr
    result = start_django({**PRODUCTION, "LOG_LEVEL": "verbose"})
    assert result.returncode != 0
    assert "LOG_LEVEL" in result.stderr and "verbose" in result.stderr


def test_django_takes_a_lower_case_log_level() -> None:
    result = start_django(
        {**PRODUCTION, "LOG_LEVEL": "warning"},
        "import logging; print(logging.getLevelName(logging.getLogger().level))",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "WARNING"

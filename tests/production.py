"""The production settings, started in a fresh interpreter as a server would
start them: what the environment makes of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A production environment: what DEBUG=0 requires, and nothing more.
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "kq3VJ0bX-2mZ8cR4tY7uW1eA9sD6fG5hJ3kL0pO8iU2yT4rE6wQ1zX9cV7bN5mM3",
    "FIELD_ENCRYPTION_KEY": "3q2-7wQvV0gkEzvvZHvmtg2k8i9wT9Wm4Qd8Hq6JHcM=",
    "BLIND_INDEX_KEY": "Yb7Qp2Lm9Xc4Vn8Rt1Ks6Wd3Hf0Gj5Za",
    "ALLOWED_HOSTS": "api.example.org",
    "SMS_BACKEND": "tests.accounts.test_login_api.BrokenGateway",
}


def start_django(
    env_overrides: dict[str, str], script: str = "print('started')"
) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter, as a server would, with
    this process's environment but its SECRET_KEY, DEBUG and
    IDENTITY_PROVIDER, then run ``script``."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "IDENTITY_PROVIDER")
    }
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.base", **env_overrides})
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {script}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

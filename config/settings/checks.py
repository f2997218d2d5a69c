"""Start-up checks of the settings that name code or rates: a backend or
provider that cannot be imported, or a rate the throttles cannot read, would
otherwise start cleanly and make every request that needs it a 500.

Registered (tag ``settings``) when the settings are imported: ``manage.py
check`` and every command that runs the checks (migrate, runserver) fail
on them, and gunicorn's workers run them before serving
(``post_worker_init`` in config/gunicorn.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

TAG = "settings"

# Settings (environment variables of the same name) naming code to import.
# An empty IDENTITY_PROVIDER is allowed: real-name checks answer 503.
CODE_SETTINGS = ("SMS_BACKEND", "IDENTITY_PROVIDER", "QR_SCAN_RECORDER")

# Rates in DRF's notation (``60/min``), by environment variable.
RATE_SETTINGS = (
    "ROUTING_SEND_RATE",
    "ROUTING_ENDPOINT_WRITE_RATE",
    "DEPT_SERVICE_WRITE_RATE",
    "PAYMENTS_NOTIFY_RATE",
    "QR_VERIFY_RATE",
    "QR_RESOLVE_RATE",
    "QR_SCAN_UPLOAD_RATE",
    "QR_STAR_CODE_RATE",
)


def _code_paths() -> dict[str, str]:
    paths = {name: getattr(settings, name, "") for name in CODE_SETTINGS}
    paths["SMS_BACKEND"] = settings.SMS_BACKENDS.get(paths["SMS_BACKEND"], paths["SMS_BACKEND"])
    return paths


def _rates() -> dict[str, Any]:
    rates = {name: getattr(settings, name, None) for name in RATE_SETTINGS}
    for scope, rate in settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}).items():
        rates[f"THROTTLE_{scope.upper()}"] = rate
    return rates


def rate_problem(rate: Any) -> str | None:
    """Why the throttles cannot use ``rate`` (None: they can). Read by DRF's
    parser, which the throttles use (QR_VERIFY_RATE's reads a superset)."""
    from rest_framework.throttling import SimpleRateThrottle

    if not isinstance(rate, str):
        return "it is not text"
    try:
        count, _period = SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]  # reads nothing of self
    except (ValueError, KeyError, IndexError):
        return "write it as a count per s, min, hour or day, e.g. 60/min"
    if count is None or count < 1:
        return "the count must be at least 1"
    return None


@checks.register(TAG)
def check_code_and_rates(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name, path in _code_paths().items():
        if not path and name == "IDENTITY_PROVIDER":
            continue
        try:
            target = import_string(path)
        except ImportError as exc:
            errors.append(
                checks.Error(
                    f"{name}={path!r} cannot be imported: {exc}",
                    hint=f"Set {name} to the dotted path of a class.",
                    id="settings.E001",
                )
            )
            continue
        if not callable(target):
            errors.append(
                checks.Error(
                    f"{name}={path!r} is not a class",
                    hint=f"Set {name} to the dotted path of a class.",
                    id="settings.E001",
                )
            )
    for name, rate in _rates().items():
        problem = rate_problem(rate)
        if problem:
            errors.append(
                checks.Error(f"{name}={rate!r} is not a rate: {problem}", id="settings.E002")
            )
    return errors


def run_or_refuse() -> None:
    """Run these checks; raise ``ImproperlyConfigured`` naming every problem."""
    from django.core.exceptions import ImproperlyConfigured

    problems = [
        message
        for message in checks.run_checks(tags=[TAG])
        if message.is_serious() and not message.is_silenced()
    ]
    if problems:
        raise ImproperlyConfigured("; ".join(message.msg for message in problems))

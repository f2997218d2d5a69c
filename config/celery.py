"""The project's one Celery application."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from celery.signals import import_modules, setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _django_logging(**kwargs: object) -> None:
    """Workers and beat log through the project's LOGGING (with its PII
    mask), not through handlers of Celery's own."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@import_modules.connect
def _refuse_unusable_settings(**kwargs: object) -> None:
    """A worker or beat starts only on settings whose backends, providers
    and rates work (config/settings/checks.py), as gunicorn's workers do:
    otherwise it stops, naming them. Both load the task modules first thing
    (beat's later signal comes after its database scheduler has started).
    Celery logs and swallows what a signal's receiver raises; ``SystemExit``
    it lets through."""
    from django.core.exceptions import ImproperlyConfigured

    from config.settings.checks import run_or_refuse

    try:
        run_or_refuse()
    except ImproperlyConfigured as exc:
        raise SystemExit(f"unusable settings: {exc}") from exc


@app.on_after_configure.connect
def _prepare_embedded_broker(sender: Celery, **kwargs: object) -> None:
    """The server-less broker keeps messages in folders that must exist."""
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


@app.task(name="platform.noop", ignore_result=True)
def noop() -> None:
    """Does nothing: the floor of the delivery benchmark (broker + worker cost)."""

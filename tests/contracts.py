"""What contract tests run over: every implementation of a pluggable edge."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "services", "payments", "qr")


def _import_app_modules() -> None:
    """Import every module of the apps, so every subclass is defined."""
    for app in APPS:
        package = importlib.import_module(app)
        for info in pkgutil.walk_packages(package.__path__, f"{app}."):
            if ".migrations" in info.name or info.name.endswith(".tests"):
                continue
            importlib.import_module(info.name)


def implementations(base: type) -> list[type]:
    """The concrete subclasses of ``base`` the project ships (test doubles,
    defined under ``tests``, excluded), in a stable order."""
    _import_app_modules()
    found: list[type] = []
    pending = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in APPS and not cls.__name__.startswith("_"):
            found.append(cls)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")

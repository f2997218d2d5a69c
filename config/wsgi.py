from __future__ import annotations

import os
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.wsgi import get_wsgi_application

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

application: WSGIApplication = get_wsgi_application()

if settings.PAYMENTS_NOTIFY_FAST_PATH:
    from payments.fastpath import NotifyFastPath

    application = NotifyFastPath(application)

if settings.QR_VERIFY_FAST_PATH:
    # Imported once the apps are loaded.
    from qr.fastpath import VerifyFastPath

    application = VerifyFastPath(application)

if settings.PUBLIC_PAGES_FAST_PATH:
    from config.pages import PagesFastPath, catalog_pages

    application = PagesFastPath(
        application,
        catalog_pages,
        prefixes=("/api/v1/services/", "/api/v1/categories/", "/api/v1/departments/"),
    )

if settings.QR_STAR_CODE_FAST_PATH:
    from qr.fastpath import StarCodeFastPath

    application = StarCodeFastPath(application)

# Outermost: the probes answer before Django's host check (config.health).
from config.health import ProbesInFront  # noqa: E402

application = ProbesInFront(application)

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

application = get_wsgi_application()

if settings.QR_VERIFY_FAST_PATH:
    # Imported once the apps are loaded.
    from qr.fastpath import VerifyFastPath

    application = VerifyFastPath(application)

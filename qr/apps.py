from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class QrConfig(AppConfig):
    name = "qr"
    verbose_name = _("星码")

    def ready(self) -> None:
        from accounts.selectors import register_export_section
        from qr import errors  # noqa: F401  (registers the error codes)
        from qr.selectors import scans_export

        register_export_section("star_code_scans", scans_export)

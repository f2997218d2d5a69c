from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class QrConfig(AppConfig):
    name = "qr"
    verbose_name = _("星码")

    def ready(self) -> None:
        from accounts import citizen_data
        from config import signing
        from qr import (
            documents,
            errors,  # noqa: F401  (registers the error codes)
            scans,
            selectors,
        )
        from qr.models import ScanEvent

        citizen_data.register(
            "star_code_scans",
            export=selectors.scans_export,
            erase=scans.scan_events_unlink,
            models=[ScanEvent],
        )
        # Payments' receipts are signed with the star-code keys (DESIGN §5).
        signing.signer_register(documents.document_sign)

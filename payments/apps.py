from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = _("统一支付")

    def ready(self) -> None:
        from accounts import citizen_data
        from payments import (
            errors,  # noqa: F401  (registers the error codes)
            refunds,
            selectors,
            tasks,  # noqa: F401  (registers the tasks woken by name)
        )
        from payments.models import LedgerEntry, PaymentOrder, Refund
        from services.routing import events

        citizen_data.register(
            "payments",
            export=selectors.payments_export,
            # Orders, refunds and the ledger are the city's financial record
            # and hold nothing personal beyond the pseudonymous account they
            # point at: they stay as they are when the account closes.
            erase=None,
            models=[PaymentOrder, Refund, LedgerEntry],
        )
        # A cancelled paid application is refunded in full.
        events.subscribe(events.APPLICATION_CANCELLED, refunds.application_cancelled)

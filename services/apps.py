from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ServicesConfig(AppConfig):
    name = "services"
    verbose_name = _("服务事项与办件")

    def ready(self) -> None:
        from accounts import citizen_data
        from services import (
            applications,
            errors,  # noqa: F401  (registers the error codes)
            selectors,
        )
        from services.models import Application, Delivery, OutboxEvent, TimelineEntry

        citizen_data.register(
            "applications",
            export=selectors.applications_export,
            erase=applications.applications_pseudonymise,
            models=[Application, TimelineEntry, OutboxEvent, Delivery],
        )

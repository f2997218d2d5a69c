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
            tasks,  # noqa: F401  (registers the tasks the routing engine wakes by name)
        )
        from services.models import Application, Delivery, OutboxEvent, TimelineEntry
        from services.routing import deliveries, events

        citizen_data.register(
            "applications",
            export=selectors.applications_export,
            erase=applications.applications_pseudonymise,
            models=[Application, TimelineEntry, OutboxEvent, Delivery],
        )
        # The department's system took the application: it is now "routed".
        deliveries.on_delivered(events.APPLICATION_SUBMITTED, applications.applications_delivered)

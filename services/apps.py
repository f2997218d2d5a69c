from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ServicesConfig(AppConfig):
    name = "services"
    verbose_name = _("服务事项与办件")

    def ready(self) -> None:
        from services import errors  # noqa: F401  (registers the error codes)

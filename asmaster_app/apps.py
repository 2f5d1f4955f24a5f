from django.apps import AppConfig


class AsmasterAppConfig(AppConfig):
    name = "asmaster_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The `message` handler joins the worker's registry; a worker runs the subscription loop.
        from . import handlers, loop  # noqa: F401

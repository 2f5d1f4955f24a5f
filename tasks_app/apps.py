from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    """The domain: every model, state machine and write of the v3 resource API."""

    name = "tasks_app"

    def ready(self):
        from django.conf import settings

        from .authcache import connect_signals

        connect_signals()
        if settings.RICLOUD_DETERMINISTIC:
            from .determinism import configure

            configure(True)

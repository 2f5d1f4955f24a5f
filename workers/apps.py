from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """Celery tasks, the runner, service handlers and publishers."""

    name = "workers"

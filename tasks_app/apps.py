from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    """The domain: every model, state machine and write of the v3 resource API."""

    name = "tasks_app"

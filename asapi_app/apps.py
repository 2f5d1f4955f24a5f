from django.apps import AppConfig


class AsapiAppConfig(AppConfig):
    """The v2 asapi adapter over the task engine (served in a later milestone)."""

    name = "asapi_app"

from django.conf import settings
from django.urls import include, path, re_path

from tasks_app.api.errors import not_found_view
from tasks_app.api.testbackend import ResetView

from . import openapi


def admin_urls() -> list:
    """The Django admin at /admin/ when RICLOUD_ADMIN_ENABLED (ricloud_server/adminsite.py)."""
    if not settings.RICLOUD_ADMIN_ENABLED:
        return []
    from django.contrib import admin

    return [path("admin/", admin.site.urls)]


urlpatterns = [
    # The OpenAPI contract and its Swagger UI: public, whatever DEBUG says.
    re_path(r"^schema/?$", openapi.schema_view, name="schema"),
    re_path(r"^docs/?$", openapi.docs_view, name="docs"),
    re_path(r"^docs/assets/(?P<name>[^/]+)$", openapi.docs_asset_view, name="docs-asset"),
    # The test-backend reset (RICLOUD_RESET_ENABLED; an operating endpoint, not in /schema).
    re_path(r"^_ricloud/reset/?$", ResetView.as_view(), name="reset"),
    *admin_urls(),
    # v2 first: its nine fixed paths fail fast for a v3 path, where the v3 router's ~50 patterns
    # were walked before every v2 submit (no v2 path is a v3 path).
    re_path(r"", include("asapi_app.urls")),
    re_path(r"", include("tasks_app.api.urls")),
    re_path(r"", include("asmaster_app.urls")),
    # Anything else is a JSON 404, whatever DEBUG says.
    re_path(r"^.*$", not_found_view),
]

handler400 = "tasks_app.api.errors.bad_request_view"
handler404 = "tasks_app.api.errors.not_found_view"
handler500 = "tasks_app.api.errors.server_error_view"

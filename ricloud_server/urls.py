from django.urls import include, re_path

from tasks_app.api.errors import not_found_view

urlpatterns = [
    re_path(r"", include("tasks_app.api.urls")),
    re_path(r"", include("asapi_app.urls")),
    # Anything else is a JSON 404, whatever DEBUG says.
    re_path(r"^.*$", not_found_view),
]

handler400 = "tasks_app.api.errors.bad_request_view"
handler404 = "tasks_app.api.errors.not_found_view"
handler500 = "tasks_app.api.errors.server_error_view"

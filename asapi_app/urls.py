"""v2 routes keep their trailing slash (and answer without it too)."""
from django.urls import re_path

from . import views

urlpatterns = [
    re_path(r"^account/?$", views.account, name="v2-account"),
    re_path(r"^register-account/?$", views.register_account, name="v2-register-account"),
    re_path(r"^deregister-account/?$", views.deregister_account, name="v2-deregister-account"),
    re_path(r"^submit-task/?$", views.submit_task, name="v2-submit-task"),
    re_path(r"^task-status/?$", views.task_status, name="v2-task-status"),
    re_path(r"^results-consumed/?$", views.results_consumed, name="v2-results-consumed"),
    re_path(r"^drop-deliveries/?$", views.drop_deliveries, name="v2-drop-deliveries"),
    re_path(r"^stream/?$", views.stream, name="v2-stream"),
    re_path(r"^fetch/(?:asstore/)?(?P<task_id>[^/]+)/?$", views.fetch, name="v2-fetch"),
]

"""v3 routes: no trailing slash expected, both forms served, updates are POST to the instance."""
from django.urls import re_path
from rest_framework.routers import SimpleRouter

from . import views
from .downloads import ResultDownloadView

__all__ = ["urlpatterns"]


class RicloudRouter(SimpleRouter):
    routes = [
        # Updates are POST to the instance (API.md §1): PUT and PATCH are not routed (they are 405s).
        route._replace(mapping={"get": "retrieve", "post": "update", "delete": "destroy"})
        if route.name == "{basename}-detail" else route
        for route in SimpleRouter.routes
    ]

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"



router = RicloudRouter()
router.register("keys", views.KeyViewSet, basename="key")
router.register("users", views.UserViewSet, basename="user")
router.register("sources", views.SourceViewSet, basename="source")
router.register("sessions", views.SessionViewSet, basename="session")
router.register("polls", views.PollViewSet, basename="poll")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("results", views.ResultViewSet, basename="result")
router.register("events", views.EventViewSet, basename="event")
router.register("subscriptions", views.SubscriptionViewSet, basename="subscription")
router.register("permissions", views.PermissionsViewSet, basename="permissions")
router.register("configs/webhook", views.WebhookConfigViewSet, basename="webhook-config")
router.register("configs/storage", views.StorageConfigViewSet, basename="storage-config")

urlpatterns = [
    re_path(r"^organisation/?$", views.OrganisationView.as_view(), name="organisation"),
    re_path(r"^key/?$", views.CurrentKeyView.as_view(), name="current-key"),
    re_path(r"^results/(?P<pk>[^/]+)/download/?$", ResultDownloadView.as_view(), name="result-download"),
    *router.urls,
]

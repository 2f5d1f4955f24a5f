"""asmaster routes: trailing slash, like the v2 asapi (and answered without it too)."""
from django.urls import re_path

from . import views

urlpatterns = [
    re_path(rf"^{path}/?$", getattr(views, path.replace("-", "_")), name=f"asmaster-{path}")
    for path in ("list-services", "list-subscriptions", "subscribe-account", "perform-2fa-challenge",
                 "submit-2fa-challenge", "list-devices", "subscribe-device", "unsubscribe-device",
                 "resubscribe-account", "unsubscribe-account", "reset-subscription-since")
]

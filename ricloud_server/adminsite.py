"""The Django admin at /admin/ (RICLOUD_ADMIN_ENABLED, docs/DECISIONS.md 137-139).

The admin needs sessions, an authenticated `request.user` and messages; the API needs none of
them. `AdminMiddleware` runs those middlewares, and WhiteNoise for the admin's static files, only
for requests under /admin/ and STATIC_URL: every other request costs one `str.startswith`, no
session lookup, no cookie parsing. The admin's views protect themselves against CSRF
(`AdminSite.admin_view` and the login view are `csrf_protect`ed), so CsrfViewMiddleware, whose
check runs in `process_view` (not called for a nested chain), is not needed.
"""
from django.conf import settings
from django.utils.module_loading import import_string

__all__ = ["AdminMiddleware", "ADMIN_PREFIX", "ADMIN_MIDDLEWARE"]

ADMIN_PREFIX = "/admin/"
ADMIN_MIDDLEWARE = [
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]


class AdminMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.prefixes = (ADMIN_PREFIX, settings.STATIC_URL)
        chain = get_response
        for path in reversed(ADMIN_MIDDLEWARE):
            chain = import_string(path)(chain)
        self.admin = chain

    def __call__(self, request):
        if request.path_info.startswith(self.prefixes):
            return self.admin(request)
        return self.get_response(request)

"""An outage of Postgres or Redis is a 503 with `Retry-After`, in the path's envelope.

Requests that reach a database or broker that is down answer 503 instead of 500; the connection
is dropped so that the next request reconnects by itself once the service is back.
"""
import logging

import redis
from django import db
from django.http import JsonResponse

__all__ = ["OutageMiddleware", "RETRY_AFTER_SECONDS", "OUTAGES", "drop_broken_connections"]

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
OUTAGES = (db.OperationalError, db.InterfaceError, redis.ConnectionError, redis.TimeoutError)


def drop_broken_connections() -> None:
    """Close this thread's database connections: the next query reconnects."""
    for connection in db.connections.all(initialized_only=True):
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - it is already broken; the next request reconnects
            pass


class OutageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OUTAGES):
            return None
        logger.warning("service unavailable for %s %s: %s", request.method, request.path, exception.__class__.__name__)
        if isinstance(exception, db.Error):
            drop_broken_connections()
        from .api.errors import _is_v2, error_body

        message = "The service is temporarily unavailable; retry shortly."
        if _is_v2(request):
            body = {"success": False, "error": message, "errors": {"__all__": [[message, "service_unavailable"]]}}
        else:
            body = error_body("service-unavailable", message)
        response = JsonResponse(body, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

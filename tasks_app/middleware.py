"""An outage of Postgres or Redis is a 503 with `Retry-After`, in the path's envelope.

Requests that reach a database or broker that is down answer 503 instead of 500; the connection
is dropped so that the next request reconnects by itself once the service is back.

A persistent database connection (CONN_MAX_AGE) that sat idle while Postgres restarted is broken
without anyone knowing; its thread's next request would fail once. So a connection is checked
(Django's health check, one `SELECT 1`) before a request uses it when it sat idle for more than
IDLE_CHECK_SECONDS, or when a request of this process met a database outage since it was last
used: after an outage the first request of every thread succeeds, and under load, when
connections are never idle that long and nothing fails, nothing is checked.
"""
import logging
import time

import redis
from django import db
from django.http import JsonResponse

__all__ = ["OutageMiddleware", "RETRY_AFTER_SECONDS", "OUTAGES", "drop_broken_connections"]

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
IDLE_CHECK_SECONDS = 1.0
_outages = [0]  # database outages met by requests of this process
OUTAGES = (db.OperationalError, db.InterfaceError, redis.ConnectionError, redis.TimeoutError)


def drop_broken_connections() -> None:
    """Close this thread's database connections: the next query reconnects."""
    for connection in db.connections.all(initialized_only=True):
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - it is already broken; the next request reconnects
            pass


def _check_suspect_connections() -> None:
    """Have Django health-check this thread's persistent connections that sat idle or outlived an
    outage (the request's start reset `health_check_done`; a new connection skips the check)."""
    now, outages = time.monotonic(), _outages[0]
    for connection in db.connections.all(initialized_only=True):
        if connection.connection is not None:
            suspect = (now - connection.__dict__.get("ricloud_used", now) > IDLE_CHECK_SECONDS
                       or connection.__dict__.get("ricloud_outages", outages) != outages)
            connection.health_check_enabled = suspect or connection.settings_dict["CONN_HEALTH_CHECKS"]


def _mark_used() -> None:
    now, outages = time.monotonic(), _outages[0]
    for connection in db.connections.all(initialized_only=True):
        connection.ricloud_used, connection.ricloud_outages = now, outages


class OutageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        _check_suspect_connections()
        try:
            return self.get_response(request)
        finally:
            _mark_used()

    def process_exception(self, request, exception):
        if not isinstance(exception, OUTAGES):
            return None
        logger.warning("service unavailable for %s %s: %s: %s", request.method, request.path,
                       exception.__class__.__name__, str(exception).strip().splitlines()[0] if str(exception) else "")
        if isinstance(exception, db.Error):
            _outages[0] += 1
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

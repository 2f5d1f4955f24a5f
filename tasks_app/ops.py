"""Operating endpoints: `GET /health`, `GET /ready`, `GET /version` (docs/DECISIONS.md 90-93) and
`GET /metrics` (ricloud_server/metrics.py, DECISIONS 100-109).

They are answered by `OpsMiddleware`, first in MIDDLEWARE, before anything else sees the request:
no authentication, no rate limit, no host check (a probe from inside a container or a load
balancer says `Host: 127.0.0.1:8000`, whatever ALLOWED_HOSTS holds), no URL resolution.

- `/health`: the process is up and serving. Touches nothing: 200 `{"status": "ok", "version"}`.
- `/ready`: the process can do its work: Postgres answers `SELECT 1`, Redis (the broker, and the
  pub/sub Redis when it is another one) answers PING, and at least one Celery worker answers a
  remote-control ping, each within RICLOUD_READY_TIMEOUT_SECONDS. 200 when all pass, else 503
  with `Retry-After`; the body names every check and its status either way.
- `/version`: `{"version"}` (ricloud_server.__version__).

Both forms of each path are served (with and without a trailing slash), GET and HEAD; other
methods are a 405 in the v3 envelope.
"""
import functools
import json
import logging
import threading
import time

from django.conf import settings
from django.http import HttpResponse

from ricloud_server import __version__

__all__ = ["OpsMiddleware", "checks"]

logger = logging.getLogger(__name__)

_ping_lock = threading.Lock()
_last_ping = {"sent": float("-inf"), "answered": []}


def _json(status: int, body: dict, **headers) -> HttpResponse:
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _timeout() -> float:
    return max(float(getattr(settings, "RICLOUD_READY_TIMEOUT_SECONDS", 1.0)), 0.1)


# --- the checks -----------------------------------------------------------------------------

def check_database() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


@functools.lru_cache(maxsize=None)
def _redis_client(url: str, timeout: float):
    import redis

    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def _redis_urls() -> list[str]:
    urls = []
    for url in (settings.CELERY_BROKER_URL, settings.REDIS_URL):
        normal = "unix://" + url.removeprefix("redis+socket://") if url.startswith("redis+socket://") else url
        if normal.startswith(("redis://", "rediss://", "unix://")) and normal not in urls:
            urls.append(normal)
    return urls


def check_redis() -> dict:
    for url in _redis_urls():
        _redis_client(url, _timeout()).ping()
    return {}


def check_workers() -> dict:
    """At least one Celery worker answers a remote-control ping (the first answer ends the wait)."""
    from ricloud_server.celery import app

    timeout = _timeout()
    arrived = time.monotonic()
    # Concurrent probes of one process share a ping: one sent after this request arrived answers it
    # too. A probe waits at most about two pings for its turn (it holds a request thread meanwhile).
    if not _ping_lock.acquire(timeout=2 * timeout + 1):
        raise RuntimeError("the worker ping of another request is taking too long")
    try:
        if _last_ping["sent"] >= arrived:
            answered = _last_ping["answered"]
        else:
            sent = time.monotonic()
            replies = app.control.ping(timeout=timeout, limit=1)
            answered = sorted(name for reply in replies for name in reply)
            _last_ping.update(sent=sent, answered=answered)
    finally:
        _ping_lock.release()
    if not answered:
        raise RuntimeError(f"no worker answered within {timeout:g} s")
    return {"answered": answered}


def checks() -> tuple[bool, dict]:
    """Run every readiness check; (all passed, {name: {"status": "ok" | "failing", ...}})."""
    results, ok = {}, True
    for name, check in (("database", check_database), ("redis", check_redis), ("workers", check_workers)):
        if name == "workers" and results["redis"]["status"] != "ok":
            # Workers are reached through the broker: with it down, asking would only wait on retries.
            results[name] = {"status": "failing", "error": "not checked: Redis (the broker) is unreachable"}
            ok = False
            continue
        started = time.monotonic()
        try:
            detail = check()
        except Exception as exc:  # noqa: BLE001 - every failure is a failing check, never a 500
            ok = False
            results[name] = {"status": "failing", "error": _describe(exc)}
            if name == "database":
                from .middleware import drop_broken_connections

                drop_broken_connections()
        else:
            results[name] = {"status": "ok", **detail}
        results[name]["seconds"] = round(time.monotonic() - started, 3)
    return ok, results


def _describe(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- the endpoints --------------------------------------------------------------------------

def health(request) -> HttpResponse:
    return _json(200, {"status": "ok", "version": __version__})


def version(request) -> HttpResponse:
    return _json(200, {"version": __version__})


def ready(request) -> HttpResponse:
    ok, results = checks()
    if ok:
        return _json(200, {"status": "ok", "version": __version__, "checks": results})
    failing = ", ".join(name for name, result in results.items() if result["status"] != "ok")
    logger.warning("not ready: %s", json.dumps(results))
    return _json(503, {"status": "unavailable", "error": "service-unavailable",
                       "message": f"Not ready: {failing} failing.", "version": __version__, "checks": results},
                 Retry_After="5")


def metrics(request) -> HttpResponse:
    """Prometheus text format (ricloud_server/metrics.py), for the addresses and bearer token the
    RICLOUD_METRICS_* settings allow; else 401/403 in the v3 envelope."""
    from ricloud_server.metrics import respond, scrape_address

    status, headers, body = respond(scrape_address(request.META), request.META.get("HTTP_AUTHORIZATION"))
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name] = value
    return response


ENDPOINTS = {"/health": health, "/ready": ready, "/version": version, "/metrics": metrics}


class OpsMiddleware:
    """Answers the operating endpoints before any other middleware (see the module docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        view = ENDPOINTS.get(path[:-1] if path.endswith("/") and len(path) > 1 else path)
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"error": "method-not-allowed", "message": f'Method "{request.method}" not allowed.',
                               "params": {}}, Allow="GET, HEAD")
        response = view(request)
        if request.method == "HEAD":
            response.content = b""
        return response

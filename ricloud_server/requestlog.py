"""Request ids and structured logs (docs/DECISIONS.md 100-109).

Every request gets an id: the caller's `X-Request-Id` when it is sane (1-128 characters of
`[A-Za-z0-9._:@/+=-]`), else a new one. It is returned as `X-Request-Id` on every response the
middleware chain answers, held in a context variable while the request runs (so every log line of
the request carries it), and put in the headers of every Celery message the request publishes
(`before_task_publish`); the worker sets it again while it runs that task (`task_prerun`), so the
worker's log lines for the task carry it too.

`RequestLogMiddleware` (first in MIDDLEWARE) writes one log line per request (logger
`ricloud.request`: method, route, status, duration, request id, key and organisation ids; never
a token, a query string or a body) and records the request in the HTTP metrics
(ricloud_server/metrics.py). Requests the web process finishes on its event loop (`Ricloud-Await`
holds, aschannel streams) are logged and counted when they end (`finish_deferred`, called by
ricloud_server/serve.py).

`RICLOUD_LOG_FORMAT=json` renders every log record as one JSON object per line (`JsonFormatter`);
`text` keeps the plain format (docs/DECISIONS.md 104 has the measured cost per request).
"""
import contextvars
import json
import logging
import os
import re
import time
from datetime import UTC, datetime

from django.core.signals import request_finished
from django.dispatch import receiver

from tasks_app.deferred import Deferred

from . import metrics

__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "RequestIdFilter",
    "TextFormatter",
    "RequestLogMiddleware",
    "current_request_id",
    "finish_deferred",
    "new_request_id",
    "request_id_var",
]

REQUEST_ID_HEADER = "X-Request-Id"
CELERY_HEADER = "ricloud_request_id"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("ricloud_request_id", default=None)
access_logger = logging.getLogger("ricloud.request")


def new_request_id() -> str:
    return os.urandom(16).hex()


def current_request_id() -> str | None:
    return request_id_var.get()


def incoming_request_id(value: str | None) -> str:
    """The caller's id when sane, else a new one (a bad header never fails the request)."""
    if value and SANE_REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


# --- log records ------------------------------------------------------------------------------

class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request or task) to every record of the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


# Attributes every LogRecord has; anything else on a record came from `extra=` and is rendered.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}  # color_message: uvicorn's ANSI-coloured copy


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601, ms), level, logger, message, request_id,
    the record's `extra` fields, and the formatted exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain format, with `[request id]` after the logger name when there is one."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


# --- the request line -------------------------------------------------------------------------

def _key(request):
    key = getattr(request, "key", None) or getattr(request, "user", None)
    return key if hasattr(key, "organisation_id") else None


def _log_and_count(request, status: int, started: float, request_id: str) -> None:
    seconds = time.perf_counter() - started
    route = metrics.route_of(request)
    try:
        metrics.observe_request(request.method, route, status, seconds)
    except Exception:  # noqa: BLE001 - a metric never fails a request
        logging.getLogger(__name__).exception("request not counted in the metrics")
    if access_logger.isEnabledFor(logging.INFO):
        key = _key(request)
        access_logger.info(
            "%s %s %s %.1fms", request.method, route, status, seconds * 1000,
            extra={"method": request.method, "route": route, "status": status,
                   "duration_ms": round(seconds * 1000, 2), "request_id": request_id,
                   "key_id": key.id if key else None, "organisation_id": key.organisation_id if key else None},
        )


class RequestLogMiddleware:
    """First in MIDDLEWARE: the request id, the request's log line and its HTTP metrics."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        request_id = incoming_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id
        # Cleared by request_finished, not here: Django logs 4xx/5xx ("Not Found: ...") after the
        # middleware chain returned, and those lines carry the id too.
        request_id_var.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        if isinstance(response, Deferred):
            # Finished on the event loop (serve.py): logged and counted when it ends.
            response.ricloud_observe = (request, started, request_id)
        else:
            _log_and_count(request, response.status_code, started, request_id)
        return response


@receiver(request_finished, dispatch_uid="ricloud-request-id-clear")
def _clear_request_id(**kwargs) -> None:
    request_id_var.set(None)


def finish_deferred(marker, status: int) -> None:
    """A held request or a stream ended with `status`: its log line and metrics (serve.py)."""
    observed = getattr(marker, "ricloud_observe", None)
    if observed is not None:
        marker.ricloud_observe = None
        _log_and_count(observed[0], status, observed[1], observed[2])


# --- Celery: the id travels with the messages a request publishes ----------------------------

def connect_celery_signals() -> None:
    from celery import signals

    signals.before_task_publish.connect(_before_publish, weak=False, dispatch_uid="ricloud-request-id-publish")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid="ricloud-request-id-prerun")


def _before_publish(headers=None, **kwargs) -> None:
    if headers is None:
        return
    request_id = request_id_var.get()
    if request_id is not None:
        headers[CELERY_HEADER] = request_id
    headers[metrics.PUBLISHED_AT_HEADER] = time.time()


def _prerun(task=None, **kwargs) -> None:
    # Set for the whole task, and not reset after it: Celery logs the task's outcome after
    # task_postrun's receivers ran; the next task sets its own (None when it has none).
    request = getattr(task, "request", None)
    request_id = getattr(request, CELERY_HEADER, None) or (getattr(request, "headers", None) or {}).get(CELERY_HEADER)
    request_id_var.set(request_id if isinstance(request_id, str) else None)

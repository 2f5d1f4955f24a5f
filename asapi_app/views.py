"""The v2 asapi, aschannel and asstore endpoints: form-encoded requests, JSON answers.

Plain Django views: v2 has its own envelope (`success`, `error`, `errors`) and trailing slashes.
"""
import re
import uuid
from functools import wraps
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from rest_framework import exceptions

from tasks_app.api.auth import FAILED_AUTH_MESSAGE, authenticate_request
from tasks_app.deferred import Stream, deferrable
from tasks_app.models import Task
from tasks_app.ratelimit import retry_after
from tasks_app.services import accounts, deliveries
from workers.publishers.storage import result_storage

from .catalogue import SERVICES, find_service
from .status import ENDPOINT_MARK, NOT_FOUND_JSON, status_json
from .stream import aschannel

__all__ = ["account", "register_account", "deregister_account", "submit_task", "task_status", "results_consumed",
           "drop_deliveries", "stream", "fetch"]

MAX_TASK_IDS = 10_000

MESSAGES = {
    "invalid_service": "Invalid service name",
    "invalid_action": "Invalid action",
    "no_such_account": "No such account",
    "missing-param": "Parameter is missing",
    "invalid_parameter_value": "Value not allowed for parameter",
    "invalid": "Invalid value",
    "limit_exceeded": "Too many task ids submitted",
    "unique_together": "Account with this Service, Client and Username already exists.",
}


class V2Error(Exception):
    def __init__(self, field: str, code: str, message: str | None = None, status: int = 400):
        self.field, self.code, self.status = field, code, status
        self.message = message or MESSAGES[code]


def v2_error(field: str, code: str, message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"success": False, "error": message, "errors": {field: [[message, code]]}}, status=status)


def v2_view(*methods):
    """The method check, token auth with a JSON 401 and V2Error → the v2 error envelope; form
    values with a NUL byte (which Postgres cannot store) are a 400 like any invalid value."""

    def decorator(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                response = v2_error("__all__", "method_not_allowed", f"Method {request.method} not allowed.", 405)
                response["Allow"] = ", ".join(methods)
                return response
            try:
                request.key = authenticate_request(request.META)
            except exceptions.Throttled as exc:  # this address failed authentication too often
                return _rate_limited(FAILED_AUTH_MESSAGE, exc.wait)
            except exceptions.APIException as exc:
                response = JsonResponse({"success": False, "error": "unauthorized", "message": str(exc.detail)}, status=401)
                response["WWW-Authenticate"] = "Token"
                return response
            wait = retry_after(request.key)
            if wait is not None:
                return _rate_limited("Rate limit exceeded.", wait)
            try:
                _refuse_nul(request)
                return view(request, *args, **kwargs)
            except V2Error as exc:
                return v2_error(exc.field, exc.code, exc.message, exc.status)

        return wrapper

    return decorator


def _rate_limited(reason: str, wait) -> JsonResponse:
    wait = int(wait)
    response = JsonResponse({"success": False, "error": "rate-limited",
                             "message": f"{reason.rstrip('.')}; retry in {wait} seconds."}, status=429)
    response["Retry-After"] = str(wait)
    return response


def _values(request, name: str) -> list[str]:
    """A list parameter: repeated keys and/or comma-joined values."""
    source = request.POST if request.method == "POST" else request.GET
    return [part.strip() for value in source.getlist(name) for part in value.split(",") if part.strip()]


MAX_NAME_LENGTH = 255  # usernames and account names: what the account row holds


def _refuse_nul(request) -> None:
    sources = (request.GET, request.POST) if request.method == "POST" else (request.GET,)
    for source in sources:
        for name, values in source.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                raise V2Error(name.replace("\x00", ""), "invalid", f"Invalid value for parameter '{name}'")


def _required(request, name: str) -> str:
    value = request.POST.get(name, "").strip()
    if not value:
        raise V2Error(name, "missing-param", f"Parameter '{name}' is missing")
    if len(value) > MAX_NAME_LENGTH:
        raise V2Error(name, "invalid", f"Ensure parameter '{name}' has at most {MAX_NAME_LENGTH} characters")
    return value


def _public_base(request) -> tuple[str, str]:
    if settings.RICLOUD_PUBLIC_URL:
        parts = urlsplit(settings.RICLOUD_PUBLIC_URL)
        return parts.scheme or "https", parts.netloc
    return request.scheme, request.get_host()


def _service(request):
    service = find_service(request.POST.get("service"))
    if service is None:
        raise V2Error("service", "invalid_service")
    return service


@v2_view("GET")
def account(request):
    protocol, host = _public_base(request)
    return JsonResponse({
        "services": [service.describe() for service in SERVICES],
        "task_submission_endpoint": {"host": host, "protocol": protocol, "uri": "/submit-task/"},
        "stream_endpoints": [{"host": host, "protocol": protocol, "uri": "/stream/"}],
        "retrieval_protocol": request.key.retrieval_protocol,
        # The key's aschannel stream name (ricloud.ini `stream.stream_endpoint`), before any task.
        "stream": request.key.stream,
    })


@v2_view("POST")
def register_account(request):
    service = _service(request)
    username = _required(request, "username")
    try:
        accounts.register_account(key=request.key, source_type=service.source_type, username=username)
    except accounts.AccountExists:
        raise V2Error("__all__", "unique_together") from None
    return JsonResponse({"success": True})


@v2_view("POST")
def deregister_account(request):
    service = _service(request)
    username = _required(request, "username")
    try:
        accounts.deregister_account(key=request.key, source_type=service.source_type, username=username)
    except accounts.NoSuchAccount:
        raise V2Error("account", "no_such_account") from None
    return JsonResponse({"success": True})


def _action_parameters(request, action) -> tuple[dict, str | None]:
    parameters = {}
    for parameter in action.parameters:
        if parameter.type == "list":
            value = _values(request, parameter.slug)
            if not value and not parameter.optional:
                raise V2Error(parameter.slug, "missing-param", f"Parameter '{parameter.slug}' is missing")
            unknown = [item for item in value if item not in action.data]
            if unknown:
                raise V2Error(parameter.slug, "invalid_parameter_value",
                              f"Value not allowed for parameter '{parameter.slug}': {', '.join(unknown)}")
        else:
            value = request.POST.get(parameter.slug, "").strip()
            if not value:
                if not parameter.optional:
                    raise V2Error(parameter.slug, "missing-param", f"Parameter '{parameter.slug}' is missing")
                continue
            if parameter.type == "date" and not _is_date(value):
                raise V2Error(parameter.slug, "invalid", f"Invalid value for parameter '{parameter.slug}': {value}")
        parameters[parameter.slug] = value
    target = {"fetch-data": ",".join(parameters.get("data", [])), "download-file": parameters.get("file")}.get(action.slug)
    return parameters, target


def _is_date(value: str) -> bool:
    from django.utils.dateparse import parse_date, parse_datetime

    try:
        return bool(parse_datetime(value) or parse_date(value))
    except ValueError:
        return False


@sensitive_post_parameters("password", "code")
@v2_view("POST")
def submit_task(request):
    service = _service(request)
    action = service.action(request.POST.get("action", "").strip())
    if action is None:
        raise V2Error("action", "invalid_action")
    username = _required(request, "account")
    source = accounts.find_account(key=request.key, source_type=service.source_type, username=username)
    if source is None:
        raise V2Error("account", "no_such_account")
    parameters, target = _action_parameters(request, action)
    secrets = {p.slug: parameters.pop(p.slug) for p in action.parameters if p.secret and p.slug in parameters}
    task = accounts.submit_task(key=request.key, account=source, action=action.slug, target=target,
                                parameters=parameters, secrets=secrets)
    return JsonResponse({
        "task_id": str(task.id),
        "retrieval_protocol": request.key.retrieval_protocol,
        "stream": request.key.stream,
        "success": True,
    })


UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def _canonical(value: str) -> str:
    """The 8-4-4-4-12 lowercase form of a UUID string (validated by UUID_RE)."""
    hexdigits = value.replace("-", "").lower()
    return f"{hexdigits[:8]}-{hexdigits[8:12]}-{hexdigits[12:16]}-{hexdigits[16:20]}-{hexdigits[20:]}"


def _task_ids(request) -> list[str]:
    raw = _values(request, "task_ids")
    if not raw:
        raise V2Error("task_ids", "missing-param", "Parameter 'task_ids' is missing")
    if len(raw) > MAX_TASK_IDS:
        raise V2Error("task_ids", "limit_exceeded", f"Too many task ids submitted, limit is {MAX_TASK_IDS}")
    for value in raw:
        if not UUID_RE.match(value):
            raise V2Error("task_ids", "invalid", f"Invalid task_id value: {value}")
    return list(dict.fromkeys(raw))


def task_rows(organisation_id, ids: list[str]):
    """(id, state, has_results, results_consumed, retrieval protocol) of the organisation's tasks
    among `ids`, in ONE query. On Postgres the ids travel as one uuid[] parameter (preparing
    10,000 ORM lookup values costs more than the query itself)."""
    canonical = [_canonical(value) for value in ids]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT t.id::text, t.state, t.has_results, t.results_consumed, k.retrieval_protocol"
                " FROM tasks_app_task t JOIN tasks_app_key k ON k.id = t.key_id"
                " WHERE t.organisation_id = %s AND t.id = ANY(%s::uuid[])",
                [organisation_id, canonical],
            )
            return cursor.fetchall()
    rows = Task.objects.filter(organisation_id=organisation_id, id__in=canonical).values_list(
        "id", "state", "has_results", "results_consumed", "key__retrieval_protocol"
    )
    return [(str(task_id), *rest) for task_id, *rest in rows]


@v2_view("POST")
def task_status(request):
    ids = _task_ids(request)
    endpoint = "{}://{}/fetch/".format(*_public_base(request))
    found = {
        task_id: status_json(state, has_results, consumed, protocol).replace(ENDPOINT_MARK, f"{endpoint}{task_id}/")
        for task_id, state, has_results, consumed, protocol in task_rows(request.key.organisation_id, ids)
    }
    # The body is assembled from per-status JSON fragments: 10,000 entries share a handful of shapes.
    body = ",".join(f'"{task_id}":{found.get(_canonical(task_id), NOT_FOUND_JSON)}' for task_id in ids)
    return HttpResponse("{" + body + (',' if body else '') + '"success":true}', content_type="application/json")


@v2_view("POST")
def results_consumed(request):
    ids = _task_ids(request)
    known = set(map(str, Task.objects.filter(organisation_id=request.key.organisation_id, id__in=ids)
                    .values_list("id", flat=True)))
    unknown = [task_id for task_id in ids if task_id not in known]
    if unknown:
        raise V2Error("task_ids", "invalid", f"No task with this ID was found: {unknown[0]}")
    accounts.consume_results(key=request.key, task_ids=ids)
    return JsonResponse({"success": True})


@v2_view("POST")
def drop_deliveries(request):
    """Drop this key's pending stream deliveries (all, or `older_than` seconds old, or of `task_ids`):
    a reconnecting client is not sent them again (DECISIONS 72)."""
    raw = request.POST.get("older_than", "").strip()
    older_than = None
    if raw:
        try:
            older_than = float(raw)
        except ValueError:
            older_than = -1.0
        if not 0 <= older_than < 1e10:  # also NaN
            raise V2Error("older_than", "invalid", f"Invalid value for parameter 'older_than': {raw}")
    ids = _task_ids(request) if _values(request, "task_ids") else None
    dropped = deliveries.drop_deliveries(older_than=older_than, stream=request.key.stream,
                                         organisation_id=request.key.organisation_id,
                                         task_ids=[_canonical(value) for value in ids] if ids else None)
    return JsonResponse({"dropped": dropped, "success": True})


@v2_view("GET", "POST")
def stream(request):
    requested = (request.GET.get("stream") or request.POST.get("stream") or "").strip()
    if not requested:
        raise V2Error("stream", "missing-param", "Parameter 'stream' is missing")
    if requested != request.key.stream:
        raise V2Error("stream", "invalid", "This stream does not belong to this token.", status=403)
    if deferrable(request):  # served by ricloud_server.serve: the stream waits on its event loop
        response = Stream(request.key)
    else:
        response = StreamingHttpResponse(aschannel(request.key), content_type="application/octet-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


CONTENT_TYPES = {"json": "application/json", "png": "image/png", "jpg": "image/jpeg", "pdf": "application/pdf"}


@v2_view("GET")
def fetch(request, task_id):
    try:
        task_id = uuid.UUID(task_id)
    except ValueError:
        task_id = None
    fetched = task_id and accounts.fetch_result_once(key=request.key, task_id=task_id, read=lambda result: result_storage(result).get(result.url))
    if fetched is None:
        return JsonResponse({"message": "No results were found for this task id.", "success": False,
                             "error": "task-result-not-found"}, status=404)
    result, content = fetched
    return HttpResponse(content, content_type=CONTENT_TYPES.get(result.type, "application/octet-stream"))

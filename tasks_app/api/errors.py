"""The v3 error envelope `{"error", "message", "params"}` for every 4xx and 5xx."""
import logging

from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from ..errors import APIError

__all__ = ["APIError", "exception_handler", "error_body", "not_found_view", "server_error_view", "bad_request_view"]

logger = logging.getLogger(__name__)


_CODES = [
    (exceptions.ParseError, "invalid-body"),
    (exceptions.ValidationError, "invalid-parameter"),
    (exceptions.NotAuthenticated, "unauthorized"),
    (exceptions.AuthenticationFailed, "unauthorized"),
    (exceptions.PermissionDenied, "missing-scope"),
    (exceptions.NotFound, "not-found"),
    (exceptions.MethodNotAllowed, "method-not-allowed"),
    (exceptions.NotAcceptable, "not-acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported-media-type"),
    (exceptions.Throttled, "rate-limited"),
]


def _code(exc) -> str:
    found = next((c for cls, c in _CODES if isinstance(exc, cls)), None)
    return found or (exc.default_code if isinstance(exc.default_code, str) and "-" in exc.default_code else "error")


def error_body(code: str, message: str, params=None) -> dict:
    body = {"error": code, "message": message}
    if params:
        body["params"] = params
    return body


def _params(detail):
    if isinstance(detail, dict):
        return {key: _params(value) if isinstance(value, dict) else [str(v) for v in _as_list(value)]
                for key, value in detail.items()}
    return {"non_field_errors": [str(v) for v in _as_list(detail)]}


def _as_list(value):
    return value if isinstance(value, list) else [value]


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("No such resource.")
    if isinstance(exc, APIError):
        body = error_body(exc.error_code, exc.message, exc.params)
    elif isinstance(exc, exceptions.APIException):
        code = _code(exc)
        if isinstance(exc, exceptions.ValidationError):
            body = error_body(code, "One or more parameters failed validation.", _params(exc.detail))
        else:
            body = error_body(code, str(exc.detail))
    else:
        return None
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    set_rollback()
    return Response(body, status=exc.status_code, headers=headers)


def not_found_view(request, exception=None, *args, **kwargs):
    return JsonResponse(error_body("not-found", "No such endpoint."), status=status.HTTP_404_NOT_FOUND)


def server_error_view(request, *args, **kwargs):
    return JsonResponse(error_body("server-error", "Unexpected server error."), status=500)


def _is_v2(request) -> bool:
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.func.__module__.startswith(("asapi_app", "asmaster_app"))  # the v2 families
    return request.path.endswith("/")  # v2 paths keep their trailing slash; v3 paths have none


def bad_request_view(request, exception=None, *args, **kwargs):
    """Django's own 400s (a form over DATA_UPLOAD_MAX_MEMORY_SIZE or DATA_UPLOAD_MAX_NUMBER_FIELDS,
    a multipart body without a boundary) in the envelope of the path's API generation."""
    message = "The request body could not be read: " + (str(exception) if exception else "bad request") + "."
    if _is_v2(request):
        return JsonResponse({"success": False, "error": message, "errors": {"__all__": [[message, "invalid"]]}},
                            status=400)
    return JsonResponse(error_body("invalid-body", message), status=400)


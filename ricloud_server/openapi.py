"""The OpenAPI 3 contract of both API generations, at /schema, and Swagger UI at /docs.

drf-spectacular reads the v3 viewsets (with tasks_app/api/openapi.py for what it cannot see);
`postprocess` then adds the v3 error responses every operation can give and merges the v2 asapi,
whose plain Django views drf-spectacular does not read, from asapi_app/openapi.yaml. The schema
is built once per process: it depends on the code only, and /schema is public.
"""
import functools
import json
from pathlib import Path

import drf_spectacular_sidecar
import yaml
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.views import SpectacularSwaggerView

from tasks_app.api.errors import error_body

__all__ = ["postprocess", "schema", "schema_view", "docs_view", "docs_asset_view", "V3_ERRORS"]

V2_SCHEMA = Path(__file__).resolve().parent.parent / "asapi_app" / "openapi.yaml"
# Only the files the Swagger UI page loads are served.
SWAGGER_UI_DIR = Path(drf_spectacular_sidecar.__file__).resolve().parent / "static" / "drf_spectacular_sidecar" / "swagger-ui-dist"
SWAGGER_UI_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

ERROR = {
    "type": "object",
    "description": "The v3 error envelope (API.md §1.11).",
    "properties": {
        "error": {"type": "string", "description": "A stable error code, e.g. `invalid-parameter`."},
        "message": {"type": "string"},
        "params": {"type": "object", "description": "Per field (or nested object), the messages of what failed."},
    },
    "required": ["error", "message"],
    "additionalProperties": False,
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}, "required": True,
                                "description": "Seconds to wait before retrying."}}
V3_ERRORS = {
    "400": ("BadRequest", "`invalid-parameter` (params name the fields), `invalid-body` or `session-expired`.", {}),
    "401": ("Unauthorized", "`unauthorized`: no token, an unknown one, or a deactivated key or organisation.",
            {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Token"]}, "required": True}}),
    "403": ("Forbidden", "`missing-scope` or `limit-exceeded`; `invalid-signature` for a download URL.", {}),
    "404": ("NotFound", "`not-found`: no such resource in the caller's organisation.", {}),
    "410": ("Gone", "`url-expired` (a download URL past its expiry) or `result-expired` (deleted from storage).", {}),
    "413": ("RequestTooLarge", "`request-too-large`: a body over RICLOUD_MAX_BODY_BYTES.", {}),
    "429": ("RateLimited", "`rate-limited`.", _RETRY_AFTER),
    "503": ("ServiceUnavailable", "`service-unavailable`: Postgres or Redis is unreachable.", _RETRY_AFTER),
}
# Operations that may also refuse for a permission scope or a count limit, or name unknown ids.
V3_EXTRA_ERRORS = {
    ("post", "/users"): ["403"],
    ("post", "/sources"): ["403"],
    ("post", "/sessions"): ["403"],
    ("post", "/polls"): ["403"],
    ("post", "/tasks"): ["403"],
    ("get", "/results/{id}/download"): ["403", "410"],
    ("post", "/subscriptions"): ["403"],
    ("post", "/results/ack"): ["404"],
}


def _v3_error_responses(path: str, method: str, operation: dict) -> dict:
    codes = ["400", "401", "429", "503"]
    if "{" in path:
        codes.append("404")
    if "requestBody" in operation:
        codes.append("413")
    codes += V3_EXTRA_ERRORS.get((method, path), [])
    return {code: {"$ref": f"#/components/responses/{V3_ERRORS[code][0]}"} for code in sorted(set(codes))}


def postprocess(result, generator, request, public):
    """drf-spectacular postprocessing hook: v3 errors, then the v2 asapi merged in."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR
    responses = components.setdefault("responses", {})
    for _code, (name, description, headers) in V3_ERRORS.items():
        responses[name] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            **({"headers": headers} if headers else {}),
        }
    # v3 paths have no trailing slash (the routes answer both forms).
    result["paths"] = {path.rstrip("/"): item for path, item in result["paths"].items()}
    for path, item in result["paths"].items():
        for method, operation in item.items():
            operation["responses"].update(_v3_error_responses(path, method, operation))
            operation["x-api-generation"] = "v3"
    v2 = yaml.safe_load(V2_SCHEMA.read_text())
    overlap = set(v2["paths"]) & set(result["paths"])
    assert not overlap, f"v2 and v3 paths overlap: {overlap}"
    result["paths"].update(v2["paths"])
    for section, entries in v2["components"].items():
        for name, entry in entries.items():
            assert name not in components.get(section, {}), f"v2 component {section}/{name} overlaps v3"
            components.setdefault(section, {})[name] = entry
    # v3 first in Swagger UI: it lists the tags named here first, in this order.
    v3_tags = dict.fromkeys(tag for item in result["paths"].values() for operation in item.values()
                            for tag in operation.get("tags", []) if operation.get("x-api-generation") == "v3")
    result["tags"] = [*({"name": tag} for tag in v3_tags), *v2.get("tags", [])]
    return _without_enum_ids(result)


def _without_enum_ids(node):
    """drf-spectacular's `x-spec-enum-id` marks are for its enum hook, which is not used here."""
    if isinstance(node, dict):
        return {key: _without_enum_ids(value) for key, value in node.items() if key != "x-spec-enum-id"}
    if isinstance(node, list):
        return [_without_enum_ids(value) for value in node]
    return node


@functools.cache
def schema() -> dict:
    """The whole contract, generated once per process."""
    return SchemaGenerator().get_schema(request=None, public=True)


@functools.cache
def _rendered(fmt: str) -> bytes:
    if fmt == "yaml":
        return yaml.safe_dump(schema(), sort_keys=False, allow_unicode=True).encode("utf-8")
    return json.dumps(schema(), ensure_ascii=False).encode("utf-8")


def _get_only(view):
    """A 405 in the v3 envelope for anything but GET and HEAD (Django's own is an empty body)."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse(error_body("method-not-allowed", f'Method "{request.method}" not allowed.'),
                                    status=405)
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return wrapper


@_get_only
def schema_view(request):
    """The contract as JSON (`?format=yaml` for YAML); public, like any API reference."""
    fmt = "yaml" if request.GET.get("format") == "yaml" else "json"
    content_type = "application/yaml" if fmt == "yaml" else "application/json"
    return HttpResponse(_rendered(fmt), content_type=f"{content_type}; charset=utf-8")


class _DocsView(SpectacularSwaggerView):
    url = "/schema"


docs_view = _get_only(_DocsView.as_view())


@_get_only
def docs_asset_view(request, name: str):
    if name not in SWAGGER_UI_FILES:
        raise Http404
    response = FileResponse((SWAGGER_UI_DIR / name).open("rb"), content_type=SWAGGER_UI_FILES[name])
    response["Cache-Control"] = "public, max-age=86400"
    return response

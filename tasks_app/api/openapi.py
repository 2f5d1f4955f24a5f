"""The v3 half of the OpenAPI contract (served at /schema): what drf-spectacular cannot read off
the viewsets by itself.

The viewsets validate bodies with the `*Input` serializers by hand and render several resources
with hand-written functions (`render_task`, `render_result`, `render_poll`), so the schema of
each operation comes from one table here (OPERATIONS) and the representations that are not plain
model serializers are written out below. Every response object is closed (`additionalProperties:
false`, every property required): the fuzz pass (tests/e2e/test_openapi_fuzz.py) checks each response
against it, so a field added to the wire without the schema fails the suite.
"""
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter

from ..choices import PollState, ResultState, TaskState
from . import client_inputs, inputs, serializers

__all__ = ["RicloudAutoSchema", "OPERATIONS", "list_of", "AWAIT_HEADER"]

AWAIT_HEADER = "Ricloud-Await"


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
UUID, DATETIME = {"type": "string", "format": "uuid"}, {"type": "string", "format": "date-time"}


def closed(properties: dict, **extra) -> dict:
    """An object with exactly these properties, each always present."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False,
            **extra}


def list_of(item: dict) -> dict:
    """The list object of API.md §1.7."""
    return closed({
        "resource": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": item},
        "has_more": BOOLEAN,
        "total_count": {"type": "integer", "minimum": 0},
        "url": STRING,
    })


def _resource(name: str) -> dict:
    return {"type": "string", "enum": [name]}


def _ref(auto_schema, serializer) -> dict:
    return auto_schema.resolve_serializer(serializer, "response").ref


PUBLISH_CONFIG = closed({"publish_source_files": BOOLEAN})

# Hand-rendered representations (serializers.render_result, render_task, render_poll).
RESULT = closed({
    "id": UUID, "resource": _resource("result"), "organisation": INTEGER, "poll": _nullable(UUID), "task": UUID,
    "identifier": STRING, "url": STRING, "type": _nullable(STRING), "checksum": STRING, "size": INTEGER,
    "signed_url": _nullable(closed({"url": STRING, "date_expires": DATETIME})),
    "state": {"type": "string", "enum": ResultState.values},
    "date_created": DATETIME, "date_consumed": _nullable(DATETIME), "date_deleted": _nullable(DATETIME),
})


def _task(auto_schema) -> dict:
    return closed({
        "id": UUID, "resource": _resource("task"), "organisation": INTEGER, "key": INTEGER,
        "user": _nullable(INTEGER), "source": _nullable(INTEGER), "session": _nullable(UUID), "poll": _nullable(UUID),
        "source_type": _nullable(STRING), "type": STRING, "target": _nullable(STRING),
        "state": {"type": "string", "enum": TaskState.values},
        "results": list_of(_ref(auto_schema, serializers.ResultSerializer)), "error": _nullable(STRING),
        "date_created": DATETIME, "date_started": _nullable(DATETIME), "date_completed": _nullable(DATETIME),
    })


def _poll(auto_schema) -> dict:
    task_ids = {"type": "array", "items": UUID}
    return closed({
        "id": UUID, "resource": _resource("poll"), "organisation": INTEGER, "key": INTEGER, "user": INTEGER,
        "source": INTEGER, "session": UUID, "subscription": _nullable(UUID), "requestor": STRING,
        "results": list_of(_ref(auto_schema, serializers.ResultSerializer)),
        "errors": {"type": "array", "items": closed(
            {"task": UUID, "type": STRING, "target": _nullable(STRING), "error": _nullable(STRING)})},
        "state": {"type": "string", "enum": PollState.values},
        "date_created": DATETIME, "date_started": _nullable(DATETIME), "date_completed": _nullable(DATETIME),
        **{f"tasks_{state}": task_ids for state in ("pending", "processing", "suspended", "succeeded", "failed")},
    })


HAND_WRITTEN = {
    serializers.ResultSerializer: lambda auto_schema: RESULT,
    serializers.TaskSerializer: _task,
    serializers.PollSerializer: _poll,
}

# Fields whose type the model cannot tell (method fields and constants), per serializer.
FIELD_SCHEMAS = {
    serializers.OrganisationSerializer: lambda s: {
        "type": {"type": "string", "enum": ["standard"]},
        "config": PUBLISH_CONFIG,
        "permissions": {"allOf": [_ref(s, serializers.PermissionsSerializer)], "nullable": True},
        "storage_configs": list_of(_ref(s, serializers.StorageConfigSerializer)),
        "webhook_configs": list_of(_ref(s, serializers.WebhookConfigSerializer)),
    },
    serializers.KeySerializer: lambda s: {
        "config": PUBLISH_CONFIG,
        "token": {**_nullable(STRING), "description": "Only in the response that creates or rotates the key."},
    },
    serializers.SourceSerializer: lambda s: {"children": list_of(_ref(s, serializers.ChildSourceSerializer))},
    serializers.StorageConfigSerializer: lambda s: {
        "credentials": {"type": "object", "additionalProperties": {"type": "string", "enum": ["********"]},
                        "description": "Write-only: the names of the credentials given, never their values."},
    },
    serializers.WebhookConfigSerializer: lambda s: {
        "secret": {**_nullable(STRING), "description": "The signing secret (null where it is not shown)."},
    },
}


EVENT_DELIVERIES = closed({
    "event": UUID,
    "deliveries": {"type": "array", "items": closed({
        "webhook_config": INTEGER,
        "state": STRING,
        "date_delivered": _nullable(DATETIME),
        "attempts": {"type": "array", "items": closed({
            "number": INTEGER, "url": STRING, "status_code": _nullable(INTEGER), "error": _nullable(STRING),
            "duration_ms": _nullable(INTEGER), "date_created": DATETIME,
        })},
    })},
})
RESULT_LIST = list_of({"$ref": "#/components/schemas/Result"})

# (view class name, action or method) → (request serializer or None, {status: response serializer}).
# A serializer instance with many=True is a list object (`{"resource": "list", "data": [...]}`).
OPERATIONS = {
    ("OrganisationView", "get"): (None, {200: serializers.OrganisationSerializer}),
    ("OrganisationView", "post"): (inputs.OrganisationUpdateInput, {200: serializers.OrganisationSerializer}),
    ("CurrentKeyView", "get"): (None, {200: serializers.KeySerializer}),
    ("KeyViewSet", "create"): (inputs.KeyCreateInput, {201: serializers.KeySerializer}),
    ("KeyViewSet", "update"): (inputs.KeyUpdateInput, {200: serializers.KeySerializer}),
    ("KeyViewSet", "rotate"): (None, {200: serializers.KeySerializer}),
    ("UserViewSet", "create"): (inputs.UserCreateInput, {200: serializers.UserSerializer, 201: serializers.UserSerializer}),
    ("UserViewSet", "update"): (inputs.UserUpdateInput, {200: serializers.UserSerializer}),
    ("SourceViewSet", "create"): (inputs.SourceCreateInput,
                                  {200: serializers.SourceSerializer, 201: serializers.SourceSerializer}),
    ("SourceViewSet", "update"): (client_inputs.SourceUpdateInput, {200: serializers.SourceSerializer}),
    ("SourceViewSet", "children"): (None, {200: serializers.ChildSourceSerializer(many=True)}),
    ("TaskViewSet", "create"): (client_inputs.TaskCreateInput, {201: serializers.TaskSerializer}),
    ("SessionViewSet", "create"): (inputs.SessionCreateInput, {201: serializers.SessionSerializer}),
    ("SessionViewSet", "destroy"): (None, {200: serializers.SessionSerializer}),
    ("PollViewSet", "create"): (inputs.PollCreateInput, {201: serializers.PollSerializer}),
    ("WebhookConfigViewSet", "create"): (inputs.WebhookConfigInput, {201: serializers.WebhookConfigSerializer}),
    ("WebhookConfigViewSet", "update"): (inputs.WebhookConfigInput(partial=True),
                                         {200: serializers.WebhookConfigSerializer}),
    ("WebhookConfigViewSet", "destroy"): (None, {200: serializers.WebhookConfigSerializer}),
    ("WebhookConfigViewSet", "test"): (None, {200: serializers.TaskSerializer}),
    ("StorageConfigViewSet", "create"): (inputs.StorageConfigInput, {201: serializers.StorageConfigSerializer}),
    ("StorageConfigViewSet", "update"): (inputs.StorageConfigUpdateInput, {200: serializers.StorageConfigSerializer}),
    ("StorageConfigViewSet", "destroy"): (None, {200: serializers.StorageConfigSerializer}),
    ("StorageConfigViewSet", "test"): (None, {200: serializers.TaskSerializer}),
    ("SubscriptionViewSet", "create"): (inputs.SubscriptionCreateInput, {201: serializers.SubscriptionSerializer}),
    ("SubscriptionViewSet", "destroy"): (None, {200: serializers.SubscriptionSerializer}),
    ("PermissionsViewSet", "create"): (inputs.PermissionsInput, {201: serializers.PermissionsSerializer}),
    ("PermissionsViewSet", "update"): (inputs.PermissionsUpdateInput, {200: serializers.PermissionsSerializer}),
    ("EventViewSet", "deliveries"): (None, {200: EVENT_DELIVERIES}),
    ("ResultViewSet", "ack"): (None, {200: serializers.ResultSerializer}),
    ("ResultViewSet", "ack_batch"): (inputs.ResultAckInput, {200: RESULT_LIST}),
}

# Operations that wait for their work when asked to (docs/DECISIONS.md 12).
AWAITING = {
    ("SessionViewSet", "create"), ("PollViewSet", "create"), ("SubscriptionViewSet", "create"), ("TaskViewSet", "create"),
    ("WebhookConfigViewSet", "create"), ("WebhookConfigViewSet", "test"),
    ("StorageConfigViewSet", "create"), ("StorageConfigViewSet", "test"),
}



class ResourceSerializerExtension(OpenApiSerializerExtension):
    """Every representation starts with `id` and `resource`, and is closed."""

    target_class = "tasks_app.api.serializers.ResourceSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        cls = self.target if isinstance(self.target, type) else type(self.target)
        if cls in HAND_WRITTEN:
            return HAND_WRITTEN[cls](auto_schema)
        written = {}
        for klass in reversed(cls.__mro__):
            written.update(FIELD_SCHEMAS.get(klass, lambda s: {})(auto_schema))
        model_fields = cls()  # a fresh instance: its field dict is its own
        for name in written:
            model_fields.fields.pop(name, None)
        schema = auto_schema._map_serializer(model_fields, direction, bypass_extensions=True)
        order = cls.Meta.fields
        properties = {**schema["properties"], **written}
        properties = {name: properties[name] for name in sorted(properties, key=order.index)}
        for field in properties.values():
            field.pop("readOnly", None)
        return closed({"id": properties.pop("id"), "resource": _resource(cls.resource_name), **properties})


class TokenAuthenticationExtension(OpenApiAuthenticationExtension):
    target_class = "tasks_app.api.auth.TokenAuthentication"
    name = "token"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <key token>` (`Bearer <key token>` is accepted too)."}


class _SchemaPaginator:
    """What drf-spectacular asks of a paginator (tasks_app.api.pagination.CursorPagination)."""

    def get_paginated_response_schema(self, schema):
        return list_of(schema["items"])

    def get_schema_operation_parameters(self, view):
        model = view.queryset.model
        cursor = {"type": "string", "format": "uuid"} if model._meta.pk.get_internal_type() == "UUIDField" else {
            "type": "integer", "minimum": 1, "maximum": 2**63 - 1}
        return [
            {"name": "limit", "in": "query", "required": False, "description": "Items per page (default 10).",
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "after_id", "in": "query", "required": False, "description": "Continue with older items.",
             "schema": cursor},
            {"name": "before_id", "in": "query", "required": False, "description": "The items just newer.",
             "schema": cursor},
        ]


class RicloudAutoSchema(AutoSchema):
    """Operations from OPERATIONS; bodies are JSON whatever the Content-Type (parsers.py)."""

    def _entry(self):
        action = getattr(self.view, "action", None) or self.method.lower()
        return type(self.view).__name__, action

    def get_request_serializer(self):
        if self._entry() in OPERATIONS:
            return OPERATIONS[self._entry()][0]
        if self.method in ("GET", "DELETE"):
            return None
        return super().get_request_serializer()

    def get_response_serializers(self):
        if self._entry() in OPERATIONS:
            return OPERATIONS[self._entry()][1]
        return super().get_response_serializers()

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if self._entry() in AWAITING:
            parameters.append(OpenApiParameter(
                AWAIT_HEADER, str, OpenApiParameter.HEADER, required=False,
                description="Hold the response until the work settles, up to this many seconds (capped at 10).",
            ))
        return parameters

    def map_parsers(self):
        return ["application/json"]

    def get_operation_id(self):
        """`<path words>_<action>` (`keys_update`, `results_ack_batch`), with the method when one
        action answers several (`results_ack_get`)."""
        action = getattr(self.view, "action", None)
        if action is None:
            return super().get_operation_id()
        words = [part for part in self.path.strip("/").split("/") if part and not part.startswith("{")]
        if action in words:
            words.remove(action)
        methods = [method for method, name in (getattr(self.view, "action_map", None) or {}).items() if name == action]
        suffix = f"_{self.method.lower()}" if len(methods) > 1 else ""
        return "_".join([*(word.replace("-", "_") for word in words), action]) + suffix

    def _get_paginator(self):
        return _SchemaPaginator() if getattr(self.view, "pagination_class", None) else None

    def _get_filter_parameters(self):
        if self._entry() == ("SourceViewSet", "children"):  # a list: filtered and paginated like GET /sources
            return self._get_filter_parameters_of_list()
        return super()._get_filter_parameters()

    def _get_filter_parameters_of_list(self):
        from drf_spectacular.contrib.django_filters import DjangoFilterExtension

        return DjangoFilterExtension(self.view.filter_backends[0]).get_schema_operation_parameters(self)

"""Representations of every v3 resource (read side). Input validation lives in api/inputs.py."""
from datetime import timezone as dt_timezone

from django.db import models
from django.utils import timezone
from rest_framework import serializers

from .. import determinism
from ..choices import TaskState
from ..downloads import download_signed_url
from ..models import (
    Event,
    Key,
    Organisation,
    Permissions,
    Poll,
    Result,
    Session,
    Source,
    StorageConfig,
    Subscription,
    Task,
    User,
    WebhookConfig,
)
from ..sealing import unseal
from .pagination import list_envelope

__all__ = [
    "OrganisationSerializer",
    "KeySerializer",
    "UserSerializer",
    "SourceSerializer",
    "SessionSerializer",
    "PollSerializer",
    "TaskSerializer",
    "ResultSerializer",
    "EventSerializer",
    "render_task",
    "render_result",
    "TASK_COLUMNS",
    "RESULT_COLUMNS",
    "WebhookConfigSerializer",
    "StorageConfigSerializer",
    "SubscriptionSerializer",
    "PermissionsSerializer",
    "render",
]


class StampField(serializers.DateTimeField):
    """A timestamp the server stamped: EPOCH in deterministic mode (tasks_app/determinism.py)."""

    def to_representation(self, value):
        if determinism.ON and value is not None:
            return determinism.EPOCH_TEXT
        return super().to_representation(value)


class ResourceSerializer(serializers.ModelSerializer):
    """Puts `id` and `resource` first, as every ricloud object starts."""

    resource_name = ""
    # date_created, date_expired, ...: stamped by the server (subscriptions' date_start/date_end,
    # given by the client, are declared on their serializer and rendered as given).
    serializer_field_mapping = {**serializers.ModelSerializer.serializer_field_mapping, models.DateTimeField: StampField}

    def to_representation(self, instance):
        data = super().to_representation(instance)
        return {"id": data.pop("id"), "resource": self.resource_name, **data}


class Constant(serializers.Field):
    """A read-only attribute with a fixed value (features this server does not vary yet)."""

    def __init__(self, value, **kwargs):
        self.value = value
        super().__init__(read_only=True, source="*", **kwargs)

    def to_representation(self, instance):
        return self.value() if callable(self.value) else self.value


def _no_publish_config():
    return {"publish_source_files": False}


class UserSerializer(ResourceSerializer):
    resource_name = "user"

    class Meta:
        model = User
        fields = ["id", "organisation", "key", "identifier", "state", "date_created"]


class ChildSourceSerializer(ResourceSerializer):
    resource_name = "source"

    class Meta:
        model = Source
        fields = ["id", "user", "type", "identifier", "info", "parent", "state", "date_created"]


class SourceSerializer(ChildSourceSerializer):
    """A source with its children as a nested list object (one level; children link further)."""

    children = serializers.SerializerMethodField()

    class Meta(ChildSourceSerializer.Meta):
        fields = ChildSourceSerializer.Meta.fields[:6] + ["children", "state", "date_created"]

    def get_children(self, obj):
        children = ChildSourceSerializer(obj.children.all(), many=True).data
        return list_envelope(children, url=f"/sources/{obj.id}/children")


class SessionSerializer(ResourceSerializer):
    resource_name = "session"
    source = SourceSerializer(read_only=True)

    class Meta:
        model = Session
        fields = ["id", "organisation", "key", "user", "source", "state", "error", "date_created", "date_expired"]


def _uuid(value):
    return None if value is None else str(value)


def _datetime(value):
    """DRF's ISO-8601 rendering of an aware UTC datetime (`…Z`); EPOCH in deterministic mode."""
    if value is None:
        return None
    if determinism.ON:
        return determinism.EPOCH_TEXT
    return value.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")


def render_result(obj) -> dict:
    """A result, from a model instance or any object with its column attributes (`values()` rows)."""
    return {
        "id": str(obj.id), "resource": "result", "organisation": obj.organisation_id, "poll": _uuid(obj.poll_id),
        "task": str(obj.task_id), "identifier": obj.identifier, "url": obj.url, "type": obj.type,
        "checksum": obj.checksum, "size": obj.size, "signed_url": _signed_url(obj), "state": obj.state,
        "date_created": _datetime(obj.date_created), "date_consumed": _datetime(obj.date_consumed),
        "date_deleted": _datetime(obj.date_deleted),
    }


def _signed_url(obj):
    if obj.signed_url and obj.signed_url_expires and obj.signed_url_expires > timezone.now():
        return {"url": obj.signed_url, "date_expires": _datetime(obj.signed_url_expires)}
    return download_signed_url(obj)  # the local store's own download URL, else None


def render_task(obj, results) -> dict:
    """A task with its nested results list, from a model instance or a `values()` row."""
    return {
        "id": str(obj.id), "resource": "task", "organisation": obj.organisation_id, "key": obj.key_id,
        "user": obj.user_id, "source": obj.source_id, "session": _uuid(obj.session_id), "poll": _uuid(obj.poll_id),
        "source_type": obj.source_type, "type": obj.type, "target": obj.target, "state": obj.state,
        "results": list_envelope([render_result(result) for result in results], url=f"/results?task={obj.id}"),
        "error": obj.error, "date_created": _datetime(obj.date_created), "date_started": _datetime(obj.date_started),
        "date_completed": _datetime(obj.date_completed),
    }


# Columns render_task and render_result read, for list endpoints that skip model instances.
TASK_COLUMNS = ("id", "organisation_id", "key_id", "user_id", "source_id", "session_id", "poll_id", "source_type",
                "type", "target", "state", "error", "date_created", "date_started", "date_completed")
RESULT_COLUMNS = ("id", "organisation_id", "poll_id", "task_id", "identifier", "url", "type", "checksum", "size",
                  "signed_url", "signed_url_expires", "state", "date_created", "date_consumed", "date_deleted")


class ResultSerializer(ResourceSerializer):
    """Written out by hand (render_result): results are rendered by the hundred inside lists."""

    resource_name = "result"
    signed_url = serializers.SerializerMethodField()

    class Meta:
        model = Result
        fields = [
            "id", "organisation", "poll", "task", "identifier", "url", "type", "checksum", "size", "signed_url",
            "state", "date_created", "date_consumed", "date_deleted",
        ]

    def to_representation(self, obj):
        return render_result(obj)


def _results_list(results, url: str) -> dict:
    return list_envelope([render_result(result) for result in results], url=url)


class TaskSerializer(ResourceSerializer):
    """Written out by hand (render_task): GET /tasks renders up to 1000 per page."""

    resource_name = "task"
    results = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id", "organisation", "key", "user", "source", "session", "poll", "source_type", "type", "target",
            "state", "results", "error", "date_created", "date_started", "date_completed",
        ]

    def to_representation(self, obj):
        results = getattr(obj, "prefetched_results", None)
        return render_task(obj, obj.results.all() if results is None else results)


def render_poll(obj, tasks=None, results=None) -> dict:
    """A poll with its results, the errors of its failed tasks and its task ids by state; `tasks`
    and `results` (rows) when they were read apart from `obj`."""
    tasks = list(obj.tasks.all()) if tasks is None else tasks
    data = {
        "id": str(obj.id), "resource": "poll", "organisation": obj.organisation_id, "key": obj.key_id,
        "user": obj.user_id, "source": obj.source_id, "session": _uuid(obj.session_id),
        "subscription": _uuid(obj.subscription_id), "requestor": obj.requestor,
        "results": _results_list(obj.results.all() if results is None else results, url=f"/results?poll={obj.id}"),
        # Plain objects without `resource` (the official client would try to type them).
        "errors": [
            {"task": str(task.id), "type": task.type, "target": task.target, "error": task.error}
            for task in tasks if task.state == TaskState.FAILED
        ],
        "state": obj.state, "date_created": _datetime(obj.date_created), "date_started": _datetime(obj.date_started),
        "date_completed": _datetime(obj.date_completed),
    }
    buckets = {state: [] for state in TaskState.values}
    for task in tasks:
        buckets[task.state].append(str(task.id))
    for state in ("pending", "processing", "suspended", "succeeded", "failed"):
        data[f"tasks_{state}"] = buckets[state]
    return data


class PollSerializer(ResourceSerializer):
    """Written out by hand (render_poll): every create answers with one."""

    resource_name = "poll"

    class Meta:
        model = Poll
        fields = [
            "id", "organisation", "key", "user", "source", "session", "subscription", "requestor", "results",
            "errors", "state", "date_created", "date_started", "date_completed",
        ]

    def to_representation(self, instance):
        return render_poll(instance)


class WebhookConfigSerializer(ResourceSerializer):
    resource_name = "webhook_config"
    secret = serializers.SerializerMethodField()

    class Meta:
        model = WebhookConfig
        fields = ["id", "organisation", "url", "secret", "state", "date_created"]

    def get_secret(self, obj):
        # Stored sealed: the plaintext is on the object that just created it (the create response),
        # null everywhere else (other responses, events, webhook deliveries).
        return getattr(obj, "plaintext_secret", None)


class StorageConfigSerializer(ResourceSerializer):
    resource_name = "storage_config"
    type = serializers.CharField(read_only=True)
    credentials = serializers.SerializerMethodField()

    class Meta:
        model = StorageConfig
        fields = [
            "id", "organisation", "type", "url", "credentials", "signed_urls_enabled", "signed_urls_expiry", "state",
            "date_created",
        ]

    def get_credentials(self, obj):
        # Secrets are write-only (and stored sealed): show which keys were given, never their values.
        return {name: "********" for name in (unseal(obj.credentials) or {})}


class PermissionsSerializer(ResourceSerializer):
    resource_name = "permissions"  # the only name ricloud-py 3.2.0 parses (API.md §8.4)

    class Meta:
        model = Permissions
        fields = ["id", "organisation", "key", "user", "identifier", "scopes", "date_created"]


class OrganisationSerializer(ResourceSerializer):
    resource_name = "organisation"
    type = Constant("standard")
    config = Constant(_no_publish_config)
    permissions = serializers.SerializerMethodField()
    storage_configs = serializers.SerializerMethodField()
    webhook_configs = serializers.SerializerMethodField()

    class Meta:
        model = Organisation
        fields = [
            "id", "type", "name", "slug", "config", "permissions", "storage_configs", "storage_config_default",
            "webhook_configs", "webhook_config_default", "state", "date_created",
        ]

    def get_permissions(self, obj):
        base = obj.permissions.filter(key__isnull=True, user__isnull=True).order_by("id").first()
        return PermissionsSerializer(base).data if base else None

    def get_storage_configs(self, obj):
        configs = StorageConfigSerializer(obj.storage_configs.order_by("-id"), many=True).data
        return list_envelope(configs, url="/configs/storage")

    def get_webhook_configs(self, obj):
        configs = WebhookConfigSerializer(obj.webhook_configs.order_by("-id"), many=True).data
        return list_envelope(configs, url="/configs/webhook")


class KeySerializer(ResourceSerializer):
    resource_name = "key"
    config = Constant(_no_publish_config)
    token = serializers.SerializerMethodField()

    class Meta:
        model = Key
        fields = [
            "id", "organisation", "type", "config", "storage_config", "webhook_config", "token",
            "retrieval_protocol", "state", "date_created", "date_expires",
        ]

    def get_token(self, obj):
        # Tokens are stored hashed: the plaintext exists only on the object that just created it.
        return getattr(obj, "plaintext_token", None)


class SubscriptionSerializer(ResourceSerializer):
    resource_name = "subscription"
    org = serializers.IntegerField(source="organisation_id", read_only=True)
    date_start = serializers.DateTimeField(read_only=True, allow_null=True)  # given by the client: as given
    date_end = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = Subscription
        fields = ["id", "org", "source", "session", "poll_payload", "interval", "date_start", "date_end", "state",
                  "date_created"]


class EventSerializer(ResourceSerializer):
    resource_name = "event"

    class Meta:
        model = Event
        fields = ["id", "type", "action", "data", "state", "retries", "date_created", "date_delivered"]

    def to_representation(self, instance):
        from ..services.events import event_data

        event_data(instance)  # task and poll events are rendered when read
        return super().to_representation(instance)


def render(instance) -> dict:
    """The full representation of a model instance (used for event `data`)."""
    serializer = {
        Organisation: OrganisationSerializer,
        Key: KeySerializer,
        User: UserSerializer,
        Source: SourceSerializer,
        Session: SessionSerializer,
        Poll: PollSerializer,
        Task: TaskSerializer,
        Result: ResultSerializer,
        WebhookConfig: WebhookConfigSerializer,
        StorageConfig: StorageConfigSerializer,
        Subscription: SubscriptionSerializer,
        Permissions: PermissionsSerializer,
    }[type(instance)]
    return serializer(instance).data

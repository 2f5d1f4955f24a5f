"""Representations of every v3 resource (read side). Input validation lives in api/inputs.py."""
from rest_framework import serializers

from ..choices import TaskState
from ..models import Key, Organisation, Poll, Result, Session, Source, Task, User
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
    "render",
]


class ResourceSerializer(serializers.ModelSerializer):
    """Puts `id` and `resource` first, as every ricloud object starts."""

    resource_name = ""

    def to_representation(self, instance):
        data = super().to_representation(instance)
        return {"id": data.pop("id"), "resource": self.resource_name, **data}


class OrganisationSerializer(ResourceSerializer):
    resource_name = "organisation"
    type = serializers.SerializerMethodField()
    config = serializers.SerializerMethodField()
    storage_configs = serializers.SerializerMethodField()
    storage_config_default = serializers.SerializerMethodField()
    webhook_configs = serializers.SerializerMethodField()
    webhook_config_default = serializers.SerializerMethodField()

    class Meta:
        model = Organisation
        fields = [
            "id", "type", "name", "slug", "config", "storage_configs", "storage_config_default",
            "webhook_configs", "webhook_config_default", "state", "date_created",
        ]

    def get_type(self, obj):
        return "standard"

    def get_config(self, obj):
        return {"publish_source_files": False}

    def get_storage_configs(self, obj):
        return list_envelope([], url="/configs/storage")

    def get_storage_config_default(self, obj):
        return None

    def get_webhook_configs(self, obj):
        return list_envelope([], url="/configs/webhook")

    def get_webhook_config_default(self, obj):
        return None


class KeySerializer(ResourceSerializer):
    resource_name = "key"
    config = serializers.SerializerMethodField()
    storage_config = serializers.SerializerMethodField()
    webhook_config = serializers.SerializerMethodField()
    token = serializers.SerializerMethodField()

    class Meta:
        model = Key
        fields = [
            "id", "organisation", "type", "config", "storage_config", "webhook_config", "token", "state",
            "date_created", "date_expires",
        ]

    def get_config(self, obj):
        return {"publish_source_files": False}

    def get_storage_config(self, obj):
        return None

    def get_webhook_config(self, obj):
        return None

    def get_token(self, obj):
        # Tokens are stored hashed: the plaintext exists only on the object that just created it.
        return getattr(obj, "plaintext_token", None)


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


class ResultSerializer(ResourceSerializer):
    resource_name = "result"
    signed_url = serializers.SerializerMethodField()

    class Meta:
        model = Result
        fields = [
            "id", "organisation", "poll", "task", "identifier", "url", "type", "checksum", "size", "signed_url",
            "state", "date_created", "date_consumed", "date_deleted",
        ]

    def get_signed_url(self, obj):
        return None


def _results_list(results, url: str) -> dict:
    return list_envelope(ResultSerializer(results, many=True).data, url=url)


class TaskSerializer(ResourceSerializer):
    resource_name = "task"
    results = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id", "organisation", "key", "user", "source", "session", "poll", "source_type", "type", "target",
            "state", "results", "error", "date_created", "date_started", "date_completed",
        ]

    def get_results(self, obj):
        return _results_list(obj.results.all(), url=f"/results?task={obj.id}")


class PollSerializer(ResourceSerializer):
    resource_name = "poll"
    subscription = serializers.SerializerMethodField()
    results = serializers.SerializerMethodField()
    errors = serializers.SerializerMethodField()

    class Meta:
        model = Poll
        fields = [
            "id", "organisation", "key", "user", "source", "session", "subscription", "requestor", "results",
            "errors", "state", "date_created", "date_started", "date_completed",
        ]

    def get_subscription(self, obj):
        return None

    def get_results(self, obj):
        return _results_list(obj.results.all(), url=f"/results?poll={obj.id}")

    def get_errors(self, obj):
        # Plain objects without `resource` (the official client would try to type them).
        return [
            {"task": str(task.id), "type": task.type, "target": task.target, "error": task.error}
            for task in obj.tasks.all()
            if task.state == TaskState.FAILED
        ]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        buckets = {state: [] for state in TaskState.values}
        for task in instance.tasks.all():
            buckets[task.state].append(str(task.id))
        for state in ("pending", "processing", "suspended", "succeeded", "failed"):
            data[f"tasks_{state}"] = buckets[state]
        return data


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
    }[type(instance)]
    return serializer(instance).data

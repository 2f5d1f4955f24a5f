"""Input validation for v3 writes; ids may arrive as JSON strings or numbers."""
import uuid

from django.conf import settings
from rest_framework import serializers

__all__ = ["UserCreateInput", "UserUpdateInput", "SessionCreateInput", "PollCreateInput", "ResultAckInput", "KeyCreateInput",
           "KeyUpdateInput", "poll_create_input"]

MAX_BIGINT = 2**63 - 1


class IdInput(serializers.IntegerField):
    """An organisation-level id, given as a number or a digit string."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_BIGINT)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A number; booleans are rejected rather than read as 0 and 1."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as a string (a JSON number is not read as an integer UUID)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string; numbers and other JSON types are rejected rather than coerced."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class UserCreateInput(serializers.Serializer):
    identifier = StrictCharField(max_length=255)
    key = IdInput(required=False)
    organisation = IdInput(required=False)


class UserUpdateInput(serializers.Serializer):
    identifier = StrictCharField(max_length=255, required=False)
    state = serializers.ChoiceField(choices=["active", "deactivated"], required=False)


class SourceInput(serializers.Serializer):
    user = IdInput()
    type = StrictCharField(max_length=100)
    identifier = StrictCharField(max_length=255)


class SourceCreateInput(SourceInput):
    pass


class SessionCreateInput(serializers.Serializer):
    source = SourceInput()
    payload = serializers.DictField()


class StringList(serializers.ListField):
    child = StrictCharField(max_length=255)


class MockControlsInput(serializers.Serializer):
    fail = serializers.JSONField(required=False)
    delay = StrictFloatField(required=False, min_value=0, max_value=3600)
    result_size = serializers.IntegerField(required=False, min_value=0, max_value=settings.RICLOUD_MOCK_MAX_RESULT_SIZE)

    def validate_fail(self, value):
        if isinstance(value, bool) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
        raise serializers.ValidationError("Must be true/false or a list of targets.")


class PollPayloadInput(serializers.Serializer):
    info_types = StringList(required=False, max_length=1000)
    data_types = StringList(required=False, max_length=1000)
    files = StringList(required=False, max_length=1000)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    mock = MockControlsInput(required=False)


class PollCreateInput(serializers.Serializer):
    session = StrictUUIDField(required=False)
    subscription = StrictUUIDField(required=False)
    source = IdInput(required=False, allow_null=True)
    payload = PollPayloadInput()

    def validate(self, attrs):
        if not attrs.get("session") and not attrs.get("subscription"):
            raise serializers.ValidationError({"session": ["This field is required."]})
        return attrs


POLL_LISTS = frozenset(("info_types", "data_types", "files"))


def _plain_string(value) -> bool:
    """A string StrictCharField(max_length=255) keeps as it is: ASCII (so no surrogates), no NUL,
    not blank, nothing to trim."""
    return (type(value) is str and 0 < len(value) <= 255 and value.isascii() and "\x00" not in value
            and value == value.strip())


def poll_create_input(data) -> dict | None:
    """PollCreateInput's validated data for the body nearly every `POST /polls` sends (a session id
    and lists of types or files), read without DRF's per-request field machinery (a third of the
    request's own CPU); None for any other body, which PollCreateInput then validates and words
    the errors of, exactly as before."""
    if type(data) is not dict or data.keys() != {"session", "payload"}:
        return None
    session, payload = data["session"], data["payload"]
    if type(session) is not str or type(payload) is not dict or not payload.keys() <= POLL_LISTS:
        return None
    for items in payload.values():
        if type(items) is not list or len(items) > 1000 or not all(_plain_string(item) for item in items):
            return None
    try:
        session = uuid.UUID(hex=session)
    except ValueError:
        return None
    return {"session": session, "payload": {name: list(items) for name, items in payload.items()}}


class SubscriptionCreateInput(serializers.Serializer):
    session = StrictUUIDField()
    source = IdInput(required=False, allow_null=True)
    poll_payload = PollPayloadInput()
    interval = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    date_start = serializers.DateTimeField(required=False, allow_null=True)
    date_end = serializers.DateTimeField(required=False, allow_null=True)


class KeyCreateInput(serializers.Serializer):
    retrieval_protocol = serializers.ChoiceField(choices=["aschannel", "asstore"], required=False)
    storage_config = IdInput(required=False, allow_null=True)
    webhook_config = IdInput(required=False, allow_null=True)


class KeyUpdateInput(KeyCreateInput):
    state = serializers.ChoiceField(choices=["active", "deactivated"], required=False)


class OrganisationUpdateInput(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False)
    storage_config_default = IdInput(required=False, allow_null=True)
    webhook_config_default = IdInput(required=False, allow_null=True)


class WebhookConfigInput(serializers.Serializer):
    url = serializers.URLField(max_length=2000)

    def validate_url(self, value):
        from ..webhook_targets import refusal

        # The same parser and address policy as every delivery attempt (webhook_targets.py).
        reason = refusal(value, allow_private=settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE)
        if reason:
            raise serializers.ValidationError(reason)
        return value


class StorageConfigInput(serializers.Serializer):
    url = StrictCharField(max_length=2000)
    credentials = serializers.DictField(required=False, default=dict)
    signed_urls_enabled = serializers.BooleanField(required=False, default=False)
    signed_urls_expiry = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=7 * 24 * 3600)


class StorageConfigUpdateInput(StorageConfigInput):
    url = StrictCharField(max_length=2000, required=False)
    credentials = serializers.DictField(required=False)
    signed_urls_enabled = serializers.BooleanField(required=False)


class PermissionsInput(serializers.Serializer):
    identifier = StrictCharField(max_length=100, required=False, default="default")
    scopes = serializers.DictField()
    key = IdInput(required=False, allow_null=True)
    user = IdInput(required=False, allow_null=True)


class PermissionsUpdateInput(serializers.Serializer):
    identifier = StrictCharField(max_length=100, required=False)
    scopes = serializers.DictField(required=False)


class ResultAckInput(serializers.Serializer):
    ids = serializers.ListField(child=StrictUUIDField(), required=False, max_length=1000, allow_empty=False)
    results = serializers.ListField(child=StrictUUIDField(), required=False, max_length=1000, allow_empty=False)

    def validate(self, attrs):
        ids = attrs.get("ids") or attrs.get("results")
        if not ids:
            raise serializers.ValidationError({"ids": ["A list of result ids is required."]})
        return {"ids": ids}

"""Input validation of the client-only writes `Source.update` (`POST /sources/{id}`) and
`Task.create` (`POST /tasks`) of ricloud-py 3.2.0 (docs/DECISIONS.md 134-136)."""
from rest_framework import serializers

from .inputs import IdInput, MockControlsInput, StrictCharField, StrictUUIDField

__all__ = ["SourceUpdateInput", "TaskCreateInput"]

# Attributes a source has but a client cannot set: they name the account or are the service's.
SOURCE_READ_ONLY = ("id", "resource", "user", "type", "identifier", "info", "parent", "children", "date_created")


def refuse(data, names, message: str) -> None:
    given = [name for name in names if isinstance(data, dict) and name in data]
    if given:
        raise serializers.ValidationError({name: [message] for name in given})


class SourceUpdateInput(serializers.Serializer):
    state = serializers.ChoiceField(choices=["active", "deactivated"])

    def to_internal_value(self, data):
        refuse(data, SOURCE_READ_ONLY, "This field cannot be updated.")
        return super().to_internal_value(data)


class TaskOptionsInput(serializers.Serializer):
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    mock = MockControlsInput(required=False)


class TaskCreateInput(serializers.Serializer):
    session = StrictUUIDField()
    source = IdInput(required=False, allow_null=True)
    type = serializers.ChoiceField(choices=["info", "data", "file"])
    target = StrictCharField(max_length=255)
    payload = TaskOptionsInput(required=False)

    def validate(self, attrs):
        refuse(self.initial_data, ("poll", "subscription"), "A task is created in a poll of its own; omit this field.")
        if attrs["target"] == "*":
            raise serializers.ValidationError({"target": ["Name one item; `*` is for polls."]})
        return attrs

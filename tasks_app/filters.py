"""FilterSets that mirror the documented list parameters one-to-one (tests check the names).

Datetime filters accept an exact ISO-8601 value and the suffixes `__gt`, `__gte`, `__lt`,
`__lte`; a naive value is read as UTC. A malformed value is a 400, never an empty list.
"""
from datetime import timezone as dt_timezone

from django import forms
from django.core.exceptions import ValidationError
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField

from .choices import (
    EventState,
    PollState,
    ResultState,
    SessionState,
    SourceState,
    SubscriptionState,
    TaskState,
    UserState,
)
from .models import Event, Poll, Result, Session, Source, Subscription, Task, User

__all__ = [
    "UserFilterSet",
    "SourceFilterSet",
    "SessionFilterSet",
    "PollFilterSet",
    "TaskFilterSet",
    "ResultFilterSet",
    "EventFilterSet",
    "SubscriptionFilterSet",
    "DATETIME_LOOKUPS",
]

DATETIME_LOOKUPS = ("exact", "gt", "gte", "lt", "lte")
MAX_BIGINT = 2**63 - 1


class IdFilter(filters.Filter):
    """An integer id (organisation-level resources)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_BIGINT)
        super().__init__(*args, **kwargs)


class UTCDateTimeField(IsoDateTimeField):
    """An ISO-8601 datetime read in UTC: any offset the format allows (up to ±23:59, which Postgres
    refuses in a timestamp literal) is converted, and one that leaves the calendar is a 400."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return value
        try:
            return value.astimezone(dt_timezone.utc)
        except (OverflowError, ValueError):
            raise ValidationError("Enter a date and time within years 1 to 9999 in UTC.", code="invalid") from None


class UTCDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


def datetime_filters(*names: str) -> dict:
    declared = {}
    for name in names:
        for lookup in DATETIME_LOOKUPS:
            param = name if lookup == "exact" else f"{name}__{lookup}"
            declared[param] = UTCDateTimeFilter(field_name=name, lookup_expr=lookup)
    return declared


def with_datetime_filters(*names: str):
    """Class decorator-free way to declare datetime filters: returns a FilterSet base class."""
    return type("DatetimeFilters", (filters.FilterSet,), datetime_filters(*names))


class UserFilterSet(with_datetime_filters("date_created")):
    identifier = filters.CharFilter()
    key = IdFilter(field_name="key_id")
    state = filters.ChoiceFilter(choices=UserState.choices)

    class Meta:
        model = User
        fields = []


class SourceFilterSet(with_datetime_filters("date_created")):
    user = IdFilter(field_name="user_id")
    identifier = filters.CharFilter()
    type = filters.CharFilter()
    state = filters.ChoiceFilter(choices=SourceState.choices)
    parent = IdFilter(field_name="parent_id")

    class Meta:
        model = Source
        fields = []


class SessionFilterSet(with_datetime_filters("date_created", "date_expired")):
    key = IdFilter(field_name="key_id")
    user = IdFilter(field_name="user_id")
    source = IdFilter(field_name="source_id")
    state = filters.ChoiceFilter(choices=SessionState.choices)

    class Meta:
        model = Session
        fields = []


class PollFilterSet(with_datetime_filters("date_created", "date_started", "date_completed")):
    key = IdFilter(field_name="key_id")
    user = IdFilter(field_name="user_id")
    source = IdFilter(field_name="source_id")
    session = filters.UUIDFilter(field_name="session_id")
    subscription = filters.UUIDFilter(field_name="subscription_id")
    requestor = filters.CharFilter()
    state = filters.ChoiceFilter(choices=PollState.choices)

    class Meta:
        model = Poll
        fields = []


class TaskFilterSet(with_datetime_filters("date_created", "date_started", "date_completed")):
    key = IdFilter(field_name="key_id")
    user = IdFilter(field_name="user_id")
    source = IdFilter(field_name="source_id")
    session = filters.UUIDFilter(field_name="session_id")
    poll = filters.UUIDFilter(field_name="poll_id")
    source_type = filters.CharFilter()
    type = filters.CharFilter()
    state = filters.ChoiceFilter(choices=TaskState.choices)

    class Meta:
        model = Task
        fields = []


class ResultFilterSet(with_datetime_filters("date_created")):
    task = filters.UUIDFilter(field_name="task_id")
    poll = filters.UUIDFilter(field_name="poll_id")
    identifier = filters.CharFilter()
    state = filters.MultipleChoiceFilter(choices=ResultState.choices)

    class Meta:
        model = Result
        fields = []


class EventFilterSet(with_datetime_filters("date_created", "date_delivered")):
    type = filters.CharFilter()
    action = filters.CharFilter()
    state = filters.ChoiceFilter(choices=EventState.choices)

    class Meta:
        model = Event
        fields = []


class SubscriptionFilterSet(with_datetime_filters("date_created")):
    session = filters.UUIDFilter(field_name="session_id")
    source = IdFilter(field_name="source_id")
    state = filters.ChoiceFilter(choices=SubscriptionState.choices)

    class Meta:
        model = Subscription
        fields = []

"""Event rows, written inside the transaction of the change they describe (outbox).

Session, subscription, config and other events carry their `data` as written. Task and poll
events are written with `data` null and rendered when read or delivered (`materialise`): a task
or poll event describes an object whose representation at that moment can be rebuilt exactly
(`created` is the object before any work; a terminal state or `completed` is final), so the
write path stays one small INSERT.
"""
from django.db import transaction
from django.db.models import Prefetch

from ..models import Event, Poll, Result, Task

__all__ = ["record_event", "lazy_event", "materialise", "event_data"]

LAZY_TYPES = ("task", "poll")


def record_event(instance, action: str, *, type: str | None = None) -> Event:
    """Record `<type>.<action>` with the full representation of `instance` as it is now."""
    from ..api.serializers import render
    from .webhooks import enqueue_deliveries

    with transaction.atomic():  # the event and its delivery rows together
        event = Event.objects.create(
            organisation_id=instance.organisation_id,
            key_id=getattr(instance, "key_id", None),
            type=type or instance.__class__.__name__.lower(),
            action=action,
            object_id=str(instance.pk),
            data=render(instance),
        )
        enqueue_deliveries([event])
    return event


def lazy_event(instance, action: str) -> Event:
    """An unsaved task or poll event; its data is rendered when read (see the module docstring)."""
    return Event(organisation_id=instance.organisation_id, key_id=instance.key_id,
                 type=instance.__class__.__name__.lower(), action=action, object_id=str(instance.pk), data=None)


def _as_created_task(data: dict) -> dict:
    data.update(state="pending", error=None, date_started=None, date_completed=None)
    data["results"] = {**data["results"], "data": [], "has_more": False, "total_count": 0}
    return data


def _as_created_poll(data: dict) -> dict:
    ids = [task_id for state in ("pending", "processing", "suspended", "succeeded", "failed")
           for task_id in data[f"tasks_{state}"]]
    data.update(state="pending", date_started=None, date_completed=None, errors=[])
    data["results"] = {**data["results"], "data": [], "has_more": False, "total_count": 0}
    data.update({f"tasks_{state}": [] for state in ("processing", "suspended", "succeeded", "failed")})
    data["tasks_pending"] = sorted(ids)
    return data


def materialise(events) -> list:
    """Render the `data` of lazily written events, a constant number of queries for any number."""
    from ..api.serializers import PollSerializer, TaskSerializer

    events = list(events)
    wanted = {kind: {e.object_id for e in events if e.data is None and e.type == kind} for kind in LAZY_TYPES}
    rendered = {}
    if wanted["task"]:
        tasks = Task.objects.filter(id__in=wanted["task"]).prefetch_related(
            Prefetch("results", queryset=Result.objects.order_by("id"), to_attr="prefetched_results"))
        rendered.update({("task", str(task.id)): TaskSerializer(task).data for task in tasks})
    if wanted["poll"]:
        polls = Poll.objects.filter(id__in=wanted["poll"]).prefetch_related(
            Prefetch("tasks", queryset=Task.objects.only("id", "state", "type", "target", "error", "poll_id")
                     .order_by("id")),
            Prefetch("results", queryset=Result.objects.order_by("id")))
        rendered.update({("poll", str(poll.id)): PollSerializer(poll).data for poll in polls})
    for event in events:
        if event.data is None and event.type in LAZY_TYPES:
            data = rendered.get((event.type, event.object_id))
            if data is not None and event.action == "created":
                data = (_as_created_task if event.type == "task" else _as_created_poll)(dict(data))
            event.data = data
    return events


def event_data(event):
    if event.data is None and event.type in LAZY_TYPES:
        materialise([event])
    return event.data

"""Task creation: rows in `pending`, their `task.created` events, and enqueue on commit."""
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from ..models import Event, Key, Poll, Session, Source, Task, User
from .dispatch import send_on_commit
from .events import write_events

__all__ = ["TaskSpec", "create_tasks"]


@dataclass
class TaskSpec:
    type: str
    target: str | None = None
    payload: dict = field(default_factory=dict)
    blocked_by: list = field(default_factory=list)


def create_tasks(
    specs: list[TaskSpec],
    *,
    key: Key,
    user: User | None = None,
    source: Source | None = None,
    session: Session | None = None,
    poll: Poll | None = None,
    api_version: int = 3,
    send: bool = True,
    events: list | None = None,
) -> list[Task]:
    """Create tasks in bulk (a constant number of queries however many there are); their
    `task.created` events are rendered when read. `send=False`: tasks that their blockers will
    wake (see transitions.wake_blocked); the reaper still covers them. `events`: append the
    `task.created` events there for the caller to write with its own (one INSERT in all)."""

    now = timezone.now()
    tasks = [
        Task(
            organisation_id=key.organisation_id,
            key=key,
            user=user,
            source=source,
            session=session,
            poll=poll,
            source_type=source.type if source else None,
            type=spec.type,
            target=spec.target,
            payload=spec.payload,
            api_version=api_version,
            date_enqueued=now,
        )
        for spec in specs
    ]
    with transaction.atomic():
        Task.objects.bulk_create(tasks)
        Through = Task.blocked_by.through
        Through.objects.bulk_create(
            Through(from_task_id=task.id, to_task_id=blocker.id)
            for task, spec in zip(tasks, specs, strict=True)
            for blocker in spec.blocked_by
        )
        created = [
            Event(organisation_id=task.organisation_id, key_id=task.key_id, type="task", action="created",
                  object_id=str(task.id), data=None)
            for task in tasks
        ]
        if events is not None:
            events += created
        else:
            write_events(created, key=key)
        if send:
            send_on_commit([task.id for task in tasks])
    return tasks

"""Task creation: rows in `pending`, their `task.created` events, and enqueue on commit."""
from dataclasses import dataclass, field

from django.utils import timezone

from ..models import Event, Key, Poll, Session, Source, Task, User
from ..sealing import seal
from .dispatch import send_on_commit
from .rows import insert_rows

__all__ = ["TaskSpec", "build_tasks", "create_tasks"]


@dataclass
class TaskSpec:
    type: str
    target: str | None = None
    payload: dict = field(default_factory=dict)
    blocked_by: list = field(default_factory=list)
    # Secret arguments (a v2 password or 2FA code): stored sealed, never in `payload`.
    secrets: dict | None = None


def build_tasks(
    specs: list[TaskSpec],
    *,
    key: Key,
    user: User | None = None,
    source: Source | None = None,
    session: Session | None = None,
    poll: Poll | None = None,
    api_version: int = 3,
) -> tuple[list[Task], list, list[Event]]:
    """Unsaved tasks, their blocked-by links and their `task.created` events (rendered when read)."""
    now = timezone.now()
    tasks = [
        Task(
            # The poll by id: its created tasks point to it, and a cached object would make a cycle.
            organisation_id=key.organisation_id, key=key, user=user, source=source, session=session,
            poll_id=poll.id if poll is not None else None,
            source_type=source.type if source else None, type=spec.type, target=spec.target, payload=spec.payload,
            secrets=seal(spec.secrets) if spec.secrets else None, api_version=api_version, date_enqueued=now,
        )
        for spec in specs
    ]
    Through = Task.blocked_by.through
    blocks = [
        Through(from_task_id=task.id, to_task_id=blocker.id)
        for task, spec in zip(tasks, specs, strict=True)
        for blocker in spec.blocked_by
    ]
    events = [
        Event(organisation_id=task.organisation_id, key_id=task.key_id, type="task", action="created",
              object_id=str(task.id), data=None)
        for task in tasks
    ]
    return tasks, blocks, events


def create_tasks(specs: list[TaskSpec], *, key: Key, **context) -> list[Task]:
    """Create tasks, their links and events in one round trip, and send them after commit."""
    from .webhooks import deliveries_on_commit, plan_deliveries

    tasks, blocks, events = build_tasks(specs, key=key, **context)
    deliveries = plan_deliveries(events, key=key)
    # One statement string is one transaction even in autocommit: no BEGIN/COMMIT round trips
    # unless a caller's transaction is open (then the sends wait for its commit).
    insert_rows(tasks, blocks, events, deliveries)
    deliveries_on_commit(deliveries)
    send_on_commit([task.id for task in tasks])
    return tasks

"""The one way task state changes: a compare-and-set UPDATE whose row count says who won.

A winning transition, in the same transaction, stamps the dates, writes the Event row, derives
the state of the task's poll or session, and schedules the tasks it was blocking.
"""
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..choices import (
    POLL_TRANSITIONS,
    SESSION_TRANSITIONS,
    TASK_ACTIVE,
    TASK_TERMINAL,
    TASK_TRANSITIONS,
    PollState,
    SessionState,
    SourceState,
    TaskState,
)
from ..models import Poll, Session, Source, Task
from ..notify import notify_on_commit
from .awaiting import poll_channel, session_channel, task_channel
from .dispatch import enqueue_on_commit
from .events import record_event

__all__ = ["transition_task", "claim_task", "SESSION_INIT"]

SESSION_INIT = "session.init"


def transition_task(
    task_id,
    to: str,
    *,
    error: str | None = None,
    allowed_from: tuple[str, ...] | None = None,
    condition: Q | None = None,
) -> Task | None:
    """Move a task to `to` if it is in one of `allowed_from`; return it, or None if we lost."""
    now = timezone.now()
    with transaction.atomic():
        head = Task.objects.filter(id=task_id).values("poll_id").first()
        if head is None:
            return None
        if head["poll_id"]:
            # Serialise the tasks of one poll so that exactly one of them sees "last task done".
            list(Poll.objects.select_for_update().filter(id=head["poll_id"]).values_list("id"))
        fields: dict = {"state": to}
        if to == TaskState.PROCESSING:
            fields.update(
                date_started=Coalesce(F("date_started"), now),
                attempts=F("attempts") + 1,
                lease_expires=now + timedelta(seconds=settings.RICLOUD_TASK_LEASE_SECONDS),
            )
        elif to == TaskState.SUSPENDED:
            # Waiting for blockers is not a spent attempt: give back the claim's increment.
            fields.update(lease_expires=None, attempts=F("attempts") - 1)
        elif to in TASK_TERMINAL:
            fields.update(date_completed=now, lease_expires=None, error=error)
        match = Q(id=task_id, state__in=allowed_from or TASK_TRANSITIONS[to])
        if condition is not None:
            match &= condition
        if not Task.objects.filter(match).update(**fields):
            return None
        task = Task.objects.get(id=task_id)
        _after_transition(task, now)
        return task


def claim_task(task_id) -> Task | None:
    """pending/suspended → processing, or take over a processing task whose lease ran out."""
    now = timezone.now()
    return transition_task(
        task_id,
        TaskState.PROCESSING,
        condition=~Q(state=TaskState.PROCESSING) | Q(lease_expires__lt=now),
    )


def _after_transition(task: Task, now) -> None:
    notify_on_commit(task_channel(task.id))
    if task.state in TASK_TERMINAL:
        record_event(task, task.state)
        blocked = Task.objects.filter(blocked_by=task.id, state=TaskState.SUSPENDED).values_list("id", flat=True)
        enqueue_on_commit(list(blocked))
    if task.poll_id:
        _derive_poll(task, now)
    if task.type == SESSION_INIT and task.session_id and task.state in TASK_TERMINAL:
        _derive_session(task, now)


def _derive_poll(task: Task, now) -> None:
    polls = Poll.objects.filter(id=task.poll_id)
    if task.state == TaskState.PROCESSING:
        polls.filter(state=PollState.PENDING).update(state=PollState.PROCESSING, date_started=now)
    elif task.state in TASK_TERMINAL:
        if Task.objects.filter(poll_id=task.poll_id, state__in=TASK_ACTIVE).exists():
            return
        won = polls.filter(state__in=POLL_TRANSITIONS[PollState.COMPLETED]).update(
            state=PollState.COMPLETED, date_completed=now, date_started=Coalesce(F("date_started"), now)
        )
        if won:
            record_event(Poll.objects.get(id=task.poll_id), "completed")
            notify_on_commit(poll_channel(task.poll_id))


def _derive_session(task: Task, now) -> None:
    sessions = Session.objects.filter(id=task.session_id)
    if task.state == TaskState.SUCCEEDED:
        won = sessions.filter(state__in=SESSION_TRANSITIONS[SessionState.ACTIVE]).update(state=SessionState.ACTIVE)
        if won:
            from .subscriptions import activate_subscriptions

            activate_subscriptions(task.session_id)
        # A validated or once-locked source is usable again; deactivated/blocked stay so.
        Source.objects.filter(id=task.source_id, state__in=(SourceState.UNVALIDATED, SourceState.LOCKED)).update(
            state=SourceState.ACTIVE
        )
        action = "active"
    else:
        won = sessions.filter(state__in=SESSION_TRANSITIONS[SessionState.FAILED]).update(
            state=SessionState.FAILED, error=task.error
        )
        if task.error == "source-locked":
            Source.objects.filter(id=task.source_id).update(state=SourceState.LOCKED)
        action = "failed"
    if won:
        record_event(Session.objects.select_related("source").get(id=task.session_id), action)
        notify_on_commit(session_channel(task.session_id))

"""Sessions: creation queues `session.init`; DELETE expires the session."""
from collections import Counter

from django.db import transaction
from django.utils import timezone

from ..choices import SESSION_TRANSITIONS, SessionState, SourceState, TaskState, UserState
from ..errors import APIError
from ..models import Event, Key, Session, Source, Task, User
from ..notify import notify_on_commit
from ..sealing import seal
from .awaiting import session_channel, task_channel
from .events import record_event
from .permissions import check_source_limits, require_scopes
from .tasks import TaskSpec, create_tasks
from .transitions import SESSION_INIT, complete_polls
from .webhooks import enqueue_deliveries

__all__ = ["get_or_create_source", "create_session", "expire_session"]


def get_or_create_source(
    *, key: Key, user: User, source_type: str, identifier: str, field: str | None = None
) -> tuple[Source, bool]:
    """A primary source (user, type, identifier), within the caller's scopes and count limits.
    `field` nests validation messages under the request field that described the source."""
    if user.state != UserState.ACTIVE:
        params = {"user": [f"User is {user.state}."]}
        raise APIError("invalid-parameter", "The user is not active.", params={field: params} if field else params)
    require_scopes(key=key, user=user, wanted=[f"source_type:{source_type}"])
    with transaction.atomic():
        if not Source.objects.filter(user=user, type=source_type, identifier=identifier).exists():
            check_source_limits(key=key, user=user, source_type=source_type)
        return Source.objects.get_or_create(
            user=user, type=source_type, identifier=identifier, defaults={"organisation_id": key.organisation_id}
        )


def create_session(*, key: Key, user: User, source_type: str, identifier: str, payload: dict) -> Session:
    """Find or create the source (user, type, identifier), then a pending session and its init task.
    The credentials (`payload`) are stored sealed, for the init task only."""
    with transaction.atomic():
        source, _ = get_or_create_source(
            key=key, user=user, source_type=source_type, identifier=identifier, field="source"
        )
        if source.state in (SourceState.DEACTIVATED, SourceState.BLOCKED):
            raise APIError(
                "invalid-parameter", f"The source is {source.state}.", params={"source": [f"Source is {source.state}."]}
            )
        session = Session.objects.create(
            organisation_id=key.organisation_id, key=key, user=user, source=source, credentials=seal(payload)
        )
        create_tasks([TaskSpec(type=SESSION_INIT)], key=key, user=user, source=source, session=session)
        record_event(session, "created")
    return session


def expire_session(*, session: Session, reason: str = "organisation") -> Session:
    """Expire the session (reason `organisation`) and fail the work still waiting on it.

    Locks in the engine's one order: the waiting tasks (by id), then their polls (by id), then
    the session, so it cannot deadlock with workers finishing tasks of the same session."""
    now = timezone.now()
    with transaction.atomic():
        if not Session.objects.filter(id=session.id, state__in=SESSION_TRANSITIONS[SessionState.EXPIRED]).exists():
            return _rendered(session.id)
        waiting = (TaskState.PENDING, TaskState.SUSPENDED)
        # Locked in id order; a row a worker changed meanwhile is re-checked and left out.
        failed = list(
            Task.objects.select_for_update(no_key=True).filter(session_id=session.id, state__in=waiting)
            .order_by("id").values("id", "poll_id", "organisation_id", "key_id")
        )
        Task.objects.filter(id__in=[row["id"] for row in failed]).update(
            state=TaskState.FAILED, error="session-expired", date_completed=now, lease_expires=None
        )
        enqueue_deliveries(Event.objects.bulk_create(
            Event(organisation_id=row["organisation_id"], key_id=row["key_id"], type="task", action="failed",
                  object_id=str(row["id"]), data=None)
            for row in failed
        ))
        closed = Counter(row["poll_id"] for row in failed if row["poll_id"])
        complete_polls(closed, now, webhook_target=None)
        for row in failed:
            notify_on_commit(task_channel(row["id"]))
        won = Session.objects.filter(
            id=session.id, state__in=SESSION_TRANSITIONS[SessionState.EXPIRED]
        ).update(state=SessionState.EXPIRED, error=reason, date_expired=now, credentials=None)
        if won:
            record_event(Session.objects.select_related("source").get(id=session.id), "expired")
            notify_on_commit(session_channel(session.id))
        else:
            transaction.set_rollback(True)  # another request expired it first: change nothing
    return _rendered(session.id)


def _rendered(session_id) -> Session:
    return Session.objects.select_related("source").prefetch_related("source__children").get(id=session_id)

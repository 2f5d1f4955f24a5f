"""Sessions: creation queues `session.init`; DELETE expires the session."""
from django.db import transaction
from django.utils import timezone

from ..choices import SESSION_TRANSITIONS, SessionState, SourceState, TaskState, UserState
from ..errors import APIError
from ..models import Key, Session, Source, Task, User
from .events import record_event
from .permissions import check_source_limits, require_scopes
from .tasks import TaskSpec, create_tasks
from .transitions import SESSION_INIT, transition_task

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
    """Find or create the source (user, type, identifier), then a pending session and its init task."""
    with transaction.atomic():
        source, _ = get_or_create_source(
            key=key, user=user, source_type=source_type, identifier=identifier, field="source"
        )
        if source.state in (SourceState.DEACTIVATED, SourceState.BLOCKED):
            raise APIError(
                "invalid-parameter", f"The source is {source.state}.", params={"source": [f"Source is {source.state}."]}
            )
        session = Session.objects.create(
            organisation_id=key.organisation_id, key=key, user=user, source=source, payload=payload
        )
        create_tasks([TaskSpec(type=SESSION_INIT)], key=key, user=user, source=source, session=session)
        record_event(session, "created")
    return session


def expire_session(*, session: Session, reason: str = "organisation") -> Session:
    """Expire the session (reason `organisation`) and fail the work still waiting on it."""
    with transaction.atomic():
        won = Session.objects.filter(
            id=session.id, state__in=SESSION_TRANSITIONS[SessionState.EXPIRED]
        ).update(state=SessionState.EXPIRED, error=reason, date_expired=timezone.now())
        if won:
            waiting = Task.objects.filter(
                session_id=session.id, state__in=(TaskState.PENDING, TaskState.SUSPENDED)
            ).values_list("id", flat=True)
            for task_id in list(waiting):
                transition_task(
                    task_id, TaskState.FAILED, error="session-expired", allowed_from=(TaskState.PENDING, TaskState.SUSPENDED)
                )
            session = Session.objects.select_related("source").get(id=session.id)
            record_event(session, "expired")
    return Session.objects.select_related("source").prefetch_related("source__children").get(id=session.id)



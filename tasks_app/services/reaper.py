"""The reaper: every accepted task reaches a terminal state, even when messages or workers are lost."""
import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from ..choices import TASK_ACTIVE, TaskState
from ..models import Task
from .dispatch import enqueue_on_commit
from .transitions import transition_task

__all__ = ["reap"]

logger = logging.getLogger(__name__)


def reap(*, now=None, limit: int = 1000) -> dict:
    """Re-enqueue tasks whose message or worker was lost; fail those out of attempts.

    - `pending` and not enqueued within the grace period: the enqueue was lost;
    - `processing` past its lease: the worker died;
    - `suspended` with every blocker terminal: the wake-up was lost.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.RICLOUD_PENDING_GRACE_SECONDS)
    active_blockers = Task.objects.filter(blocks=OuterRef("pk"), state__in=TASK_ACTIVE)
    due = Task.objects.filter(
        Q(state=TaskState.PENDING)
        | Q(state=TaskState.PROCESSING, lease_expires__lt=now)
        | Q(state=TaskState.SUSPENDED) & ~Exists(active_blockers)
    ).filter(Q(date_enqueued__lt=stale) | Q(date_enqueued__isnull=True))
    exhausted = list(
        due.filter(state=TaskState.PROCESSING, attempts__gte=settings.RICLOUD_TASK_MAX_ATTEMPTS).values_list("id", flat=True)[:limit]
    )
    for task_id in exhausted:
        transition_task(task_id, TaskState.FAILED, error="worker-lost", condition=Q(lease_expires__lt=now))
    ids = list(due.exclude(id__in=exhausted).order_by("date_enqueued").values_list("id", flat=True)[:limit])
    enqueue_on_commit(ids)
    if ids or exhausted:
        logger.warning("reaper: re-enqueued %d task(s), failed %d out of attempts", len(ids), len(exhausted))
    return {"enqueued": len(ids), "failed": len(exhausted)}

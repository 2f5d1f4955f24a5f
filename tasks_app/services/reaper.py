"""The reaper: every accepted task reaches a terminal state, even when messages or workers are lost.

It runs in the maintenance loop of every worker (`workers/maintenance.py`), one at a time under
a Postgres advisory lock, so recovery needs no single beat process. Each pass:

1. fails the tasks whose lease ran out after their last allowed attempt (`worker-lost`);
2. puts the other lease-expired `processing` tasks back to `pending` (their worker died: a
   running task renews its lease by heartbeat) and sends them again;
3. sends again the waiting tasks (`pending`, or `suspended` with every blocker ended) whose
   message was really lost: not sent within the grace period, *and* older than the oldest
   message still queued on the broker, so a backlog is never mistaken for a loss. They are
   marked (`lease_expires` set while waiting) so that their next run claims them
   (workers/runner.py).

Rows are taken in id order with SKIP LOCKED, in batches, until none is left: the reaper never
waits on a row a worker holds, and keeps up with a backlog of any size.
"""
import json
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ..choices import TASK_ACTIVE, TaskState
from ..models import Task
from .dispatch import SENT_HEADER, TASKS_QUEUE, broker_client, send_on_commit
from .transitions import TASK, THROUGH, _db, _in, transition_task

__all__ = ["reap", "oldest_queued"]

logger = logging.getLogger(__name__)

BATCH = 1000
MAX_BATCHES = 50


def oldest_queued():
    """When the oldest message still waiting in the tasks queue was sent (None: queue empty or
    not a Redis broker, or unreadable)."""
    client = broker_client()
    if client is None:
        return None
    try:
        raw = client.lindex(TASKS_QUEUE, -1)  # kombu pushes on the left and pops on the right
    except Exception:  # noqa: BLE001 - no backlog information: fall back to the grace period
        logger.warning("reaper: could not read the broker queue", exc_info=True)
        return None
    if raw is None:
        return None
    try:
        sent = json.loads(raw)["headers"][SENT_HEADER]
        return datetime.fromtimestamp(float(sent), tz=UTC)
    except (ValueError, KeyError, TypeError):
        return None


def _skip_locked() -> str:
    # NO KEY UPDATE: foreign-key checks of concurrent inserts (KEY SHARE) never wait on the reaper.
    return " FOR NO KEY UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""


def _batches(select_sql: str, params: list, update_sets: str, update_params: list) -> list:
    """Update up to BATCH rows chosen by `select_sql` (id order, skipping locked rows) per
    transaction; returns every id updated."""
    done = []
    for _ in range(MAX_BATCHES):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"{select_sql} ORDER BY id LIMIT {BATCH}{_skip_locked()}", params)
            ids = [row[0] for row in cursor.fetchall()]
            if ids:
                marks = ", ".join(["%s"] * len(ids))
                cursor.execute(f"UPDATE {TASK} SET {update_sets} WHERE id IN ({marks})", update_params + ids)
                send_on_commit(ids)
        done += ids
        if len(ids) < BATCH:
            break
    return done


def reap(*, now=None) -> dict:
    now = now or timezone.now()
    lease_ended = _db(Task, "lease_expires", now)
    failed = 0
    exhausted = Task.objects.filter(
        state=TaskState.PROCESSING, lease_expires__lt=now, attempts__gte=settings.RICLOUD_TASK_MAX_ATTEMPTS
    ).order_by("id").values_list("id", flat=True)[:BATCH]
    for task_id in list(exhausted):
        failed += transition_task(task_id, TaskState.FAILED, error="worker-lost", lease_expired_at=now) is not None

    stamp = _db(Task, "date_enqueued", now)
    requeued = _batches(
        f"SELECT id FROM {TASK} WHERE state = 'processing' AND lease_expires < %s",
        [lease_ended],
        "state = 'pending', lease_expires = NULL, date_enqueued = %s",
        [stamp],
    )

    cutoff = now - timedelta(seconds=settings.RICLOUD_PENDING_GRACE_SECONDS)
    queued = oldest_queued()
    if queued is not None:
        cutoff = min(cutoff, queued - timedelta(seconds=settings.RICLOUD_PENDING_GRACE_SECONDS))
    before = _db(Task, "date_enqueued", cutoff)
    lost = _batches(
        f"SELECT id FROM {TASK} t WHERE state IN ('pending', 'suspended')"
        f" AND (date_enqueued IS NULL OR date_enqueued < %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {THROUGH} b JOIN {TASK} x ON x.id = b.to_task_id"
        f"   WHERE b.from_task_id = t.id AND (x.state IN {_in(TASK_ACTIVE)} OR x.date_completed >= %s))",
        [before, before],
        # A lease time on a waiting task marks it sent again: its next run claims it (a run without
        # a claim may be what killed its worker; claimed runs count their attempts).
        "date_enqueued = %s, lease_expires = %s",
        [stamp, _db(Task, "lease_expires", now)],
    )
    enqueued = len(requeued) + len(lost)
    if enqueued or failed:
        logger.warning("reaper: re-sent %d task(s) (%d from dead workers), failed %d out of attempts",
                       enqueued, len(requeued), failed)
    return {"enqueued": enqueued, "failed": failed}

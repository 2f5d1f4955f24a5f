"""Hand task ids to Celery, only once the transaction that created them has committed.

Each message carries the task id as its Celery id and the time it was sent (`ricloud_sent`): the
reaper compares a waiting task with the oldest message still queued to tell a lost enqueue from
a backlog (services/reaper.py).
"""
import logging
import time
from functools import partial

from django.db import transaction
from django.utils import timezone

__all__ = ["enqueue_on_commit", "send_on_commit", "send_run_task", "RUN_TASK", "TASKS_QUEUE", "SENT_HEADER"]

logger = logging.getLogger(__name__)

RUN_TASK = "ricloud.run_task"
TASKS_QUEUE = "tasks"
SENT_HEADER = "ricloud_sent"


def send_run_task(task_id) -> bool:
    """Send one id to the broker. A failed send is logged, not raised: the reaper re-sends it."""
    from ricloud_server.celery import app

    try:
        app.send_task(RUN_TASK, args=[str(task_id)], queue=TASKS_QUEUE, task_id=str(task_id),
                      headers={SENT_HEADER: time.time()})
        return True
    except Exception:  # noqa: BLE001 - broker outages must not fail the committed request
        logger.exception("could not enqueue task %s; the reaper will retry", task_id)
        return False


def send_on_commit(task_ids) -> None:
    """Send the ids once the current transaction commits (never for a rolled-back one)."""
    ids = [str(task_id) for task_id in task_ids]
    if ids:
        transaction.on_commit(partial(_send_all, ids))


def _send_all(ids) -> None:
    for task_id in ids:
        if not send_run_task(task_id):
            break  # the broker is down: the reaper sends the rest


def enqueue_on_commit(task_ids) -> None:
    """Stamp `date_enqueued` (the reaper's clock) and send the ids after commit."""
    from ..models import Task

    ids = [str(task_id) for task_id in task_ids]
    if ids:
        Task.objects.filter(id__in=ids).update(date_enqueued=timezone.now())
        send_on_commit(ids)

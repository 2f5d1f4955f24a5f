"""Hand task ids to Celery, only once the transaction that created them has committed."""
import logging
from functools import partial

from django.db import transaction
from django.utils import timezone

__all__ = ["enqueue_on_commit", "send_on_commit", "send_run_task", "RUN_TASK", "TASKS_QUEUE"]

logger = logging.getLogger(__name__)

RUN_TASK = "ricloud.run_task"
TASKS_QUEUE = "tasks"


def send_run_task(task_id) -> None:
    """Send one id to the broker. A failed send is logged, not raised: the reaper re-sends it."""
    from ricloud_server.celery import app

    try:
        app.send_task(RUN_TASK, args=[str(task_id)], queue=TASKS_QUEUE)
    except Exception:  # noqa: BLE001 - broker outages must not fail the committed request
        logger.exception("could not enqueue task %s; the reaper will retry", task_id)


def send_on_commit(task_ids) -> None:
    """Send the ids once the current transaction commits (never for a rolled-back one)."""
    for task_id in task_ids:
        transaction.on_commit(partial(send_run_task, task_id))


def enqueue_on_commit(task_ids) -> None:
    """Stamp `date_enqueued` (the reaper's clock) and send the ids after commit."""
    from ..models import Task

    ids = [str(task_id) for task_id in task_ids]
    if ids:
        Task.objects.filter(id__in=ids).update(date_enqueued=timezone.now())
        send_on_commit(ids)

"""Celery tasks: each translates an id into one service call and holds no business rules.

Declared explicitly: stable names, a queue, late acks (a dead worker's message is redelivered),
JSON arguments only, bounded retries with backoff, time limits, no result backend.
"""
import logging
import time
from functools import partial

from celery import shared_task
from django.conf import settings

from tasks_app.services import storage, subscriptions, webhooks
from tasks_app.services.dispatch import RUN_TASK, SENT_HEADER, TASKS_QUEUE
from tasks_app.services.webhooks import DELIVER_EVENT, WEBHOOKS_QUEUE

from . import maintenance, runner, shutdown  # noqa: F401 - maintenance connects the worker's loop

__all__ = ["run_task", "reap_tasks", "deliver_event", "expire_results", "run_subscriptions"]

logger = logging.getLogger(__name__)

MAX_RETRIES = 3
ROW_FRESH_SECONDS = 1.0


@shared_task(
    name=RUN_TASK,
    bind=True,
    queue=TASKS_QUEUE,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=MAX_RETRIES,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    ignore_result=True,
)
def run_task(self, task_id: str, row: dict | None = None) -> str:
    try:
        # A stopping worker interrupts the run and hands the task back (workers/shutdown.py).
        return shutdown.run_interruptibly(
            task_id, partial(runner.run, task_id, max_attempts=settings.RICLOUD_TASK_MAX_ATTEMPTS + MAX_RETRIES,
                             row=row if _fresh(self.request) else None)
        )
    except Exception as exc:
        if self.request.retries >= MAX_RETRIES:
            logger.exception("task %s failed after %d retries", task_id, MAX_RETRIES)
            runner.fail(task_id, "internal-error")
            return "failed"
        logger.warning("task %s raised %r; retrying", task_id, exc)
        runner.release(task_id)
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc


def _fresh(request) -> bool:
    """Whether a message's row (`row`, services/transitions.py `run_row`) may stand for the
    task: on its first delivery, sent less than ROW_FRESH_SECONDS ago. A message delivered again
    (a worker died with it, Redis handed it out after its visibility timeout), retried or long
    queued behind a backlog reads the task from the database instead."""
    sent = getattr(request, SENT_HEADER, None)
    redelivered = getattr(request, "redelivered", None) or (request.delivery_info or {}).get("redelivered")
    return (not request.retries and not redelivered
            and isinstance(sent, int | float) and 0 <= time.time() - sent < ROW_FRESH_SECONDS)


@shared_task(name="ricloud.reap_tasks", queue=TASKS_QUEUE, ignore_result=True, time_limit=120)
def reap_tasks() -> dict | None:
    """One maintenance pass and webhook sweep on demand (workers run them on their own; see
    workers/maintenance.py)."""
    outcome = maintenance.run_once()
    maintenance.sweep_webhooks()
    return outcome


@shared_task(
    name=DELIVER_EVENT,
    queue=WEBHOOKS_QUEUE,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    ignore_result=True,
)
def deliver_event(event_id: str) -> str:
    """An event's first delivery attempt. No Celery retries: later attempts are scheduled on the
    delivery row and sent by the maintenance loop's sweep (services/webhooks.py); a redelivered
    message finds its slot taken and sends nothing."""
    from .publishers.webhooks import post

    return webhooks.deliver_event(event_id, send=post)


@shared_task(name="ricloud.expire_results", queue=TASKS_QUEUE, ignore_result=True, time_limit=600)
def expire_results() -> int:

    from .publishers.storage import open_storage

    return storage.expire_results(delete=lambda url: open_storage(url).delete(url))


@shared_task(name="ricloud.run_subscriptions", queue=TASKS_QUEUE, ignore_result=True, time_limit=120)
def run_subscriptions() -> int:
    return subscriptions.run_due_subscriptions()

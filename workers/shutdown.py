"""A worker that is told to stop hands its running tasks back instead of sitting on them.

Celery's warm shutdown waits for running tasks to finish, and a supervisor usually kills the
worker first (honcho after 5 s, `docker stop` after 10 s), which left the tasks `processing` until
their lease ran out after the restart. Here, a pool process running a task stops its handler and
hands the task back: `processing → pending` (a compare-and-set that also requires the lease to
still be live, so that a task another worker took over is never touched), the claim's attempt
given back, and the task sent again, so another worker, or this one once restarted, runs it at
once. Nothing runs twice to completion: the interrupted run ends without its terminal transition
(whatever it had not committed is rolled back) and the new run starts from the claim. If the
broker is gone too (`make run` stops Redis at the same moment), the task is left with no enqueue
time and the first reaper pass of the next worker sends it.

How a stop reaches the pool processes:
- SIGTERM to the whole process group (honcho, systemd, docker with an init): each busy pool
  process receives it itself;
- SIGTERM or SIGINT (Ctrl-C) to the main process only: its `worker_shutting_down` handler sends
  SIGTERM to the pool processes that are running `ricloud.run_task`.
In a pool process, SIGTERM during `run_task` raises ShuttingDown (a BaseException, so no handler's
`except Exception` swallows it) and every later `run_task` of that process hands its task back
without running it; SIGTERM to an idle pool process makes it exit, as billiard's handler does.
Prefork pools only (solo and thread pools keep Celery's behaviour). RICLOUD_HAND_BACK_ON_SHUTDOWN=0
restores Celery's warm shutdown (wait for running tasks).
"""
import logging
import os
import signal

from celery.signals import worker_process_init, worker_shutting_down
from django.conf import settings
from django.db import Error as DatabaseError
from django.db import connection
from django.db.models import F
from django.utils import timezone

__all__ = ["ShuttingDown", "run_interruptibly", "hand_back"]

logger = logging.getLogger(__name__)


class ShuttingDown(BaseException):
    """Raised in a pool process's running task when the worker is stopping."""


_pool_process = [False]  # this is a prefork pool process
_previous = [None]  # the SIGTERM handler that ours replaced (billiard's: exit cleanly)
_running = [False]  # this pool process is inside run_task (or handing its task back)
_stopping = [False]  # this pool process was told to stop


def _install() -> None:
    """Take over SIGTERM in a pool process. Done when a task starts, not at process start:
    billiard installs its own handler after Celery's `worker_process_init`."""
    if _pool_process[0] and signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        _previous[0] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)


def run_interruptibly(task_id, run):
    """`run()` (the body of `run_task`), unless the worker stops: then the task is handed back
    (at once if this process was told to stop before it started)."""
    _install()
    try:
        _running[0] = True
        if _stopping[0]:
            raise ShuttingDown()
        return run()
    except ShuttingDown:
        return hand_back(task_id)  # still "running": a second SIGTERM cannot cut it short
    finally:
        _running[0] = False


def _on_sigterm(signum, frame) -> None:
    if not _running[0]:
        # Idle: exit as pool processes always did (the pool may be terminating us).
        if callable(_previous[0]):
            _previous[0](signum, frame)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        return
    if _stopping[0]:
        return  # already stopping: let the hand-back finish
    _stopping[0] = True
    raise ShuttingDown()


def hand_back(task_id) -> str:
    """processing → pending for a task this process was running, and send it again. Never raises:
    if Postgres cannot be reached, the lease runs out and the reaper takes the task over."""
    from tasks_app.choices import TaskState
    from tasks_app.models import Task
    from tasks_app.services.dispatch import send_run_task

    for attempt in (1, 2):
        try:
            now = timezone.now()
            tasks = Task.objects.filter(id=task_id)
            handed = tasks.filter(state=TaskState.PROCESSING, lease_expires__gte=now).update(
                state=TaskState.PENDING, lease_expires=None, attempts=F("attempts") - 1, date_enqueued=now
            )
            # Interrupted before its claim: still pending, and its message is acknowledged.
            if not (handed or tasks.filter(state=TaskState.PENDING).exists()):
                return "stopped"
            if not send_run_task(task_id):
                tasks.filter(state=TaskState.PENDING).update(date_enqueued=None)  # the reaper's first pass
            logger.warning("worker stopping: task %s handed back", task_id)
            return "handed-back"
        except DatabaseError:
            connection.close()  # the interrupted statement may have left it unusable: once more
            if attempt == 2:
                logger.warning("worker stopping: could not hand task %s back; its lease will run out", task_id,
                               exc_info=True)
    return "stopped"


@worker_process_init.connect
def _in_pool_process(**_) -> None:
    _pool_process[0] = settings.RICLOUD_HAND_BACK_ON_SHUTDOWN


@worker_shutting_down.connect
def _stop_running_tasks(how=None, **_) -> None:
    """In the main process, from its signal handler: tell the pool processes running tasks."""
    if how != "Warm" or not settings.RICLOUD_HAND_BACK_ON_SHUTDOWN:
        return  # a cold shutdown terminates them with SIGTERM itself
    from celery.worker import state

    from tasks_app.services.dispatch import RUN_TASK

    pids = {request.worker_pid for request in list(state.active_requests) if request.name == RUN_TASK}
    for pid in pids - {None, os.getpid()}:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass  # already gone

"""Lease renewal for running tasks.

A claim gives a task a short lease (RICLOUD_TASK_LEASE_SECONDS). While a handler runs, one
daemon thread per worker process renews the leases of the tasks that process holds, every
quarter lease, with one UPDATE for all of them. A task that ends within the first quarter never
costs a renewal. When the process dies, renewals stop and the reaper takes the task over as soon
as its lease runs out.
"""
import logging
import os
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

__all__ = ["holding", "interval"]

logger = logging.getLogger(__name__)

_held: dict = {}  # task id → when it was claimed (monotonic)
_lock = threading.Lock()
_wake = threading.Event()
_thread_pid = [None]


def interval() -> float:
    return max(settings.RICLOUD_TASK_LEASE_SECONDS / 4, 0.25)


@contextmanager
def holding(task_id):
    with _lock:
        _held[str(task_id)] = time.monotonic()
        if _thread_pid[0] != os.getpid():  # one thread per process (prefork children included)
            _thread_pid[0] = os.getpid()
            threading.Thread(target=_loop, name="ricloud-heartbeat", daemon=True).start()
    try:
        yield
    finally:
        with _lock:
            _held.pop(str(task_id), None)


def _loop() -> None:
    while True:
        _wake.wait(interval())
        every = interval()
        with _lock:
            due = [task_id for task_id, since in _held.items() if time.monotonic() - since >= every]
        if not due:
            continue
        try:
            renew(due)
        except Exception:  # noqa: BLE001 - a missed renewal is retried next beat
            logger.warning("could not renew the lease of %d task(s)", len(due), exc_info=True)
        finally:
            connection.close()  # never keep a connection open between beats


def renew(task_ids) -> int:
    from tasks_app.models import Task

    lease = timezone.now() + timedelta(seconds=settings.RICLOUD_TASK_LEASE_SECONDS)
    return Task.objects.filter(id__in=task_ids, state="processing").update(lease_expires=lease)

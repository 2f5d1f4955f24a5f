"""The maintenance loop: the reaper and the count folder, run by every worker.

When a Celery worker is ready it starts one daemon thread that, every
RICLOUD_REAPER_INTERVAL_SECONDS, takes a Postgres advisory lock (without waiting) and, if it got
it, reaps lost work (`services/reaper.py`), folds task-count deltas (`services/counts.py`) and
drops aschannel deliveries past RICLOUD_DELIVERY_RETENTION_SECONDS (`services/deliveries.py`).
Every worker runs the loop, one of them at a time does the work: recovery does not depend on a
beat process, and any number of workers (or a second beat) are safe. On SQLite (the embedded
default, one host) the loop runs without the lock: every step is a compare-and-set anyway.

After each pass, outside the lock, every worker also sweeps the webhook deliveries that are due
(`sweep_webhooks`): their claims skip rows another sweeper holds, so sweepers share the work,
and the sends (HTTP, up to ~50 s each) never hold up another worker's reaping.
"""
import logging
import threading

from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings
from django.db import close_old_connections, connection

__all__ = ["run_once", "sweep_webhooks", "start"]

logger = logging.getLogger(__name__)

LOCK = 0x726963726561  # pg advisory lock key of the maintenance pass
_stop = threading.Event()


def run_once() -> dict | None:
    """One pass, if no other process is running one; returns what it did (None: skipped)."""
    from tasks_app.services.counts import fold_task_counts
    from tasks_app.services.deliveries import drop_stale_deliveries
    from tasks_app.services.reaper import reap

    postgres = connection.vendor == "postgresql"
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK])
            if not cursor.fetchone()[0]:
                return None
    try:
        outcome = reap()
        outcome["folded"] = fold_task_counts()
        outcome["deliveries_dropped"] = drop_stale_deliveries()
        return outcome
    finally:
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK])


def sweep_webhooks() -> dict:
    """Send the webhook attempts that are due (services/webhooks.py sweep_deliveries)."""
    from tasks_app.services.webhooks import sweep_deliveries

    from .publishers.webhooks import post

    return sweep_deliveries(send=post)


def _loop() -> None:
    while not _stop.wait(settings.RICLOUD_REAPER_INTERVAL_SECONDS):
        try:
            close_old_connections()
            run_once()
            sweep_webhooks()
        except Exception:  # noqa: BLE001 - a database or broker outage: try again next interval
            logger.warning("maintenance pass failed; retrying in %ss", settings.RICLOUD_REAPER_INTERVAL_SECONDS,
                           exc_info=True)
            try:
                connection.close()  # the advisory lock (a session lock) goes with the connection
            except Exception:  # noqa: BLE001
                pass


def start() -> threading.Thread:
    thread = threading.Thread(target=_loop, name="ricloud-maintenance", daemon=True)
    thread.start()
    return thread


@worker_ready.connect
def _on_worker_ready(**_) -> None:
    if settings.RICLOUD_MAINTENANCE_IN_WORKER:
        start()


@worker_shutting_down.connect
def _on_shutdown(**_) -> None:
    _stop.set()

"""The subscription loop: every worker runs it, so subscribed devices are polled without beat.

When a Celery worker is ready it starts one daemon thread that calls `services.run_due` every
RICLOUD_ASMASTER_LOOP_SECONDS (0 disables it). Every step of `run_due` is a compare-and-set, so
any number of workers may run it at once.
"""
import logging
import os
import threading

from celery.signals import worker_ready, worker_shutting_down
from django.db import close_old_connections

__all__ = ["loop_seconds", "start"]

logger = logging.getLogger(__name__)
_stop = threading.Event()


def loop_seconds() -> float:
    return float(os.environ.get("RICLOUD_ASMASTER_LOOP_SECONDS", "10"))


def _loop(interval: float) -> None:
    from .services import run_due

    while not _stop.wait(interval):
        try:
            close_old_connections()
            run_due()
        except Exception:  # noqa: BLE001 - an outage: try again next interval
            logger.warning("asmaster subscription pass failed; retrying in %ss", interval, exc_info=True)


def start(interval: float) -> threading.Thread:
    thread = threading.Thread(target=_loop, args=(interval,), name="ricloud-asmaster", daemon=True)
    thread.start()
    return thread


@worker_ready.connect
def _on_worker_ready(**_) -> None:
    interval = loop_seconds()
    if interval > 0:
        start(interval)


@worker_shutting_down.connect
def _on_shutdown(**_) -> None:
    _stop.set()

"""gunicorn hooks of the web process (hooks only: the command line keeps every setting).

Read from the checkout's `gunicorn.conf.py` (gunicorn loads that file from its working directory,
where the Procfile's and the image's `web` commands run) and by `ricloud-server web`
(`--config python:ricloud_server.gunicorn_conf`).

Metrics (ricloud_server/metrics.py): the master makes the directory its workers write their
metrics into before it forks them (prometheus_client's multiprocess mode), and forgets a dead
worker's live gauges.
"""
import os

__all__ = ["on_starting", "child_exit"]


def on_starting(server):
    from ricloud_server.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

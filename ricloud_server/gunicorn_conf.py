"""gunicorn settings of the web process: hooks and logging only (the command line keeps the rest).

Read from the checkout's `gunicorn.conf.py` (gunicorn loads that file from its working directory,
where the Procfile's and the image's `web` commands run) and by `ricloud-server web`
(`--config python:ricloud_server.gunicorn_conf`).

- Metrics (ricloud_server/metrics.py): the master makes the directory its workers write their
  metrics into before it forks them (prometheus_client's multiprocess mode), and forgets a dead
  worker's live gauges.
- Logs (ricloud_server/requestlog.py, docs/DECISIONS.md 105): gunicorn's own lines in the format
  of RICLOUD_LOG_FORMAT, and no access log: the request line written by the app replaces it (it has
  the route, the request id and the key; a `--access-logfile` on the command line is overridden).
"""
import os

__all__ = ["on_starting", "child_exit", "logconfig_dict"]


def on_starting(server):
    from ricloud_server.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _log_format() -> str:
    """settings.RICLOUD_LOG_FORMAT's rule, read without loading the settings in the master."""
    debug = os.environ.get("DJANGO_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
    return (os.environ.get("RICLOUD_LOG_FORMAT") or ("text" if debug else "json")).strip().lower()


logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "ricloud_server.requestlog.JsonFormatter"},
        "text": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                 "datefmt": "[%Y-%m-%d %H:%M:%S %z]"},
    },
    "handlers": {"gunicorn": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                              "formatter": "json" if _log_format() == "json" else "text"}},
    "root": {"handlers": ["gunicorn"], "level": "INFO"},  # the master's; a worker's is settings.LOGGING
    "loggers": {
        "gunicorn.error": {"handlers": ["gunicorn"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "INFO", "propagate": False},
    },
}

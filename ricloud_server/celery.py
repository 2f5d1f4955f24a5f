"""The Celery application: configured from Django settings (CELERY_* names)."""
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")

app = Celery("ricloud_server")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@signals.worker_init.connect
@signals.beat_init.connect
def require_encryption_keys(**kwargs) -> None:
    """Credentials are stored encrypted (tasks_app/sealing.py): a worker or beat without a key
    stops at once with the reason (Celery only logs exceptions raised by signal handlers)."""
    from django.core.exceptions import ImproperlyConfigured

    from tasks_app.sealing import require_keys

    try:
        require_keys()
    except ImproperlyConfigured as exc:
        raise SystemExit(f"ricloud-server: {exc}") from None


@signals.setup_logging.connect
def use_django_logging(loglevel=None, **kwargs) -> None:
    """Workers log through settings.LOGGING (JSON or text, with the request id of the task being
    run: ricloud_server/requestlog.py) instead of Celery's own format; `--loglevel` still applies."""
    import logging

    import django

    django.setup()  # configures LOGGING (a no-op when already done)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def _connect_observability() -> None:
    from . import metrics, requestlog

    requestlog.connect_celery_signals()  # the request id travels with messages (web and worker)
    metrics.connect_worker_signals()  # run time, queue wait and the worker's /metrics


_connect_observability()


def _reuse_redis_clients() -> None:
    """kombu's Redis transport builds a new `redis.Redis` for every ack and every update of its
    unacked index (four per message), each copying redis-py's ~170 response callbacks: ~40 µs of
    CPU apiece, about a tenth of a no-op task's worker time. A channel reuses its synchronous
    client while the connection pool is the same (a reconnection makes a new pool, and so a new
    client); clients are made for pools, to be shared."""
    from kombu.transport import redis as transport

    create = transport.Channel._create_client
    if getattr(create, "reuses", False):
        return

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return create(self, asynchronous=True)
        pool = self.pool
        client = self.__dict__.get("_ricloud_client")
        if client is None or client.connection_pool is not pool:
            client = self.__dict__["_ricloud_client"] = create(self)
        return client

    _create_client.reuses = True
    transport.Channel._create_client = _create_client


_reuse_redis_clients()

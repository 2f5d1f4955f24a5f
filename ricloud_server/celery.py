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

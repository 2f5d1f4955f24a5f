"""What storage and webhook configs share: a changed config is `new` until its test task runs."""
from django.db import transaction

from ..choices import ConfigState
from ..models import Key
from .tasks import TaskSpec, create_tasks

__all__ = ["queue_config_test", "change_config", "deactivate_config"]


def queue_config_test(*, key: Key, config):
    """Queue `<config>.test` (`storage_config.test`, `webhook_config.test`) targeting the config id."""
    task_type = {"StorageConfig": "storage_config.test", "WebhookConfig": "webhook_config.test"}[type(config).__name__]
    (task,) = create_tasks([TaskSpec(type=task_type, target=str(config.id))], key=key)
    return task


def change_config(*, key: Key, config, **changes):
    """Apply changes, make the config `new` again and retest it (nothing to do without changes)."""
    if changes:
        with transaction.atomic():
            type(config).objects.filter(id=config.id).update(state=ConfigState.NEW, **changes)
            queue_config_test(key=key, config=config)
        config.refresh_from_db()
    return config


def deactivate_config(*, config):
    type(config).objects.filter(id=config.id).update(state=ConfigState.DEACTIVATED)
    config.refresh_from_db()
    return config

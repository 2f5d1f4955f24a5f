"""System tasks that target no source: configuration tests."""
from tasks_app.choices import ConfigState
from tasks_app.models import StorageConfig, WebhookConfig
from tasks_app.services.events import record_event
from tasks_app.services.storage import mark_storage_tested
from tasks_app.services.webhooks import deliver_event

from ..publishers.storage import get_storage
from ..publishers.webhooks import post
from .base import HandlerError, Output, TaskContext, register

__all__ = ["webhook_config_test", "storage_config_test"]


@register("", "webhook_config.test")
def webhook_config_test(ctx: TaskContext) -> list[Output]:
    """Deliver a `webhook_config.test` event once: a 2xx makes the config valid, anything else invalid."""
    config = WebhookConfig.objects.filter(id=ctx.target, organisation_id=ctx.organisation_id).first()
    if config is None:
        raise HandlerError("not-found", "The webhook config no longer exists.")
    event = record_event(config, "test", type="webhook_config")
    state = deliver_event(event.id, send=post, config=config, retry=False)
    WebhookConfig.objects.filter(id=config.id).exclude(state=ConfigState.DEACTIVATED).update(
        state=ConfigState.VALID if state == "delivered" else ConfigState.INVALID
    )
    if state != "delivered":
        raise HandlerError("webhook-test-failed", "The webhook receiver did not answer with a 2xx status.")
    return []


@register("", "storage_config.test")
def storage_config_test(ctx: TaskContext) -> list[Output]:
    """Write an object, read it back and delete it: success makes the config valid."""
    config = StorageConfig.objects.filter(id=ctx.target, organisation_id=ctx.organisation_id).first()
    if config is None:
        raise HandlerError("not-found", "The storage config no longer exists.")
    probe = f"ricloud-test/{ctx.task_id}".encode()
    try:
        storage = get_storage(config)
        stored = storage.put(f"ricloud-test/{ctx.task_id}", probe)
        ok = storage.get(stored.url) == probe
        storage.delete(stored.url)
    except Exception as exc:  # noqa: BLE001 - any backend failure means the config does not work
        mark_storage_tested(config=config, ok=False)
        raise HandlerError("storage-test-failed", f"{type(exc).__name__}: {exc}"[:300]) from None
    mark_storage_tested(config=config, ok=ok)
    if not ok:
        raise HandlerError("storage-test-failed", "The object read back differs from the one written.")
    return []

"""System tasks that target no source: configuration tests."""
from tasks_app.choices import ConfigState
from tasks_app.models import WebhookConfig
from tasks_app.services.events import record_event
from tasks_app.services.webhooks import deliver_event

from .base import HandlerError, Output, TaskContext, register

__all__ = ["webhook_config_test"]


@register("", "webhook_config.test")
def webhook_config_test(ctx: TaskContext) -> list[Output]:
    """Deliver a `webhook_config.test` event once: a 2xx makes the config valid, anything else invalid."""
    config = WebhookConfig.objects.filter(id=ctx.target, organisation_id=ctx.organisation_id).first()
    if config is None:
        raise HandlerError("not-found", "The webhook config no longer exists.")
    event = record_event(config, "test", type="webhook_config")
    state = deliver_event(event.id, config=config, retry=False)
    WebhookConfig.objects.filter(id=config.id).exclude(state=ConfigState.DEACTIVATED).update(
        state=ConfigState.VALID if state == "delivered" else ConfigState.INVALID
    )
    if state != "delivered":
        raise HandlerError("webhook-test-failed", "The webhook receiver did not answer with a 2xx status.")
    return []

"""Webhook configs and event delivery (one delivery row per event and config, one attempt row
per try, exponential backoff, no retry on 4xx)."""
import json
import secrets

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..choices import ConfigState, EventState
from ..models import Event, Key, WebhookAttempt, WebhookConfig, WebhookDelivery
from ..sealing import seal, unseal
from .configs import change_config, queue_config_test

__all__ = [
    "DELIVER_EVENT",
    "WEBHOOKS_QUEUE",
    "effective_webhook_config",
    "create_webhook_config",
    "update_webhook_config",
    "enqueue_deliveries",
    "deliver_event",
    "event_body",
    "RetryLater",
]

DELIVER_EVENT = "ricloud.deliver_event"
WEBHOOKS_QUEUE = "webhooks"


class RetryLater(Exception):
    def __init__(self, countdown: float):
        super().__init__(countdown)
        self.countdown = countdown


def effective_webhook_config(key: Key) -> WebhookConfig | None:
    """The key's own config, else the organisation default; deactivated configs do not count."""
    for config_id in (key.webhook_config_id, key.organisation.webhook_config_default_id):
        if config_id:
            config = WebhookConfig.objects.filter(id=config_id).exclude(state=ConfigState.DEACTIVATED).first()
            if config:
                return config
    return None


def create_webhook_config(*, key: Key, url: str) -> tuple[WebhookConfig, object]:
    """Create a config with a generated secret and queue its test task. The secret is stored
    sealed; its plaintext is on `config.plaintext_secret` (the create response) and nowhere else."""
    secret = f"whsec_{secrets.token_urlsafe(24)}"
    with transaction.atomic():
        config = WebhookConfig.objects.create(organisation_id=key.organisation_id, url=url, secret=seal(secret))
        task = queue_config_test(key=key, config=config)
    config.plaintext_secret = secret
    return config, task


def update_webhook_config(*, key: Key, config: WebhookConfig, url: str | None) -> WebhookConfig:
    """A new URL makes the config `new` and retests it."""
    return change_config(key=key, config=config, **({"url": url} if url is not None else {}))



def enqueue_deliveries(events: list[Event], *, checked: bool = False, key: Key | None = None) -> None:
    """After commit, send the events that have somewhere to go to the webhooks queue.
    `checked`: the caller already knows their key has a webhook config (or a default); `key`: the
    events' key, loaded with its organisation (no lookup needed)."""
    from ricloud_server.celery import app

    keys = {event.key_id for event in events if event.key_id}
    if checked:
        targets = dict.fromkeys(keys, True)
    elif key is not None and keys <= {key.id} and Key.organisation.is_cached(key):
        targets = {key.id: bool(key.webhook_config_id or key.organisation.webhook_config_default_id)}
    else:
        targets = {
            key_id: bool(config or default)
            for key_id, config, default in Key.objects.filter(id__in=keys).values_list(
                "id", "webhook_config_id", "organisation__webhook_config_default_id"
            )
        }
    for event in events:
        if event.key_id and targets.get(event.key_id) and event.type != "webhook_config":
            transaction.on_commit(
                lambda event_id=str(event.id): app.send_task(DELIVER_EVENT, args=[event_id], queue=WEBHOOKS_QUEUE)
            )


def event_body(event: Event) -> bytes:
    from ..api.serializers import EventSerializer

    return json.dumps(EventSerializer(event).data, separators=(",", ":"), default=str).encode("utf-8")


def deliver_event(event_id, *, config: WebhookConfig | None = None, retry: bool = True) -> str:
    """One delivery attempt of an event to its effective config (or `config`).

    Returns the delivery state; raises RetryLater when another attempt is due."""
    from workers.publishers.webhooks import post

    event = Event.objects.select_related("key__organisation").filter(id=event_id).first()
    if event is None:
        return "gone"
    config = config or (effective_webhook_config(event.key) if event.key else None)
    if config is None:
        return "no-target"
    delivery, _ = WebhookDelivery.objects.get_or_create(event=event, config=config)
    if delivery.state != "pending":
        return delivery.state
    outcome = post(config_url=config.url, secret=unseal(config.secret), event_id=event.id, body=event_body(event))
    now = timezone.now()
    with transaction.atomic():
        WebhookDelivery.objects.filter(id=delivery.id).update(attempts=F("attempts") + 1)
        delivery.refresh_from_db()
        WebhookAttempt.objects.create(
            delivery=delivery, number=delivery.attempts, url=outcome.url, status_code=outcome.status_code,
            error=outcome.error, duration_ms=outcome.duration_ms,
        )
        if outcome.ok:
            state, event_state = "delivered", EventState.DELIVERED
        elif outcome.permanent or not retry or delivery.attempts >= settings.RICLOUD_WEBHOOK_MAX_ATTEMPTS:
            state, event_state = "failed", EventState.FAILED
        else:
            state, event_state = "pending", EventState.PENDING
        WebhookDelivery.objects.filter(id=delivery.id).update(
            state=state, date_delivered=now if outcome.ok else None
        )
        Event.objects.filter(id=event.id).update(
            state=event_state, retries=delivery.attempts - 1, date_delivered=now if outcome.ok else None
        )
    if state == "pending":
        raise RetryLater(settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS * 4 ** (delivery.attempts - 1))
    return state

"""Event rows, written inside the transaction of the change they describe (outbox)."""
from ..models import Event

__all__ = ["record_event"]


def record_event(instance, action: str, *, type: str | None = None) -> Event:
    """Record `<type>.<action>` with the full representation of `instance` as it is now."""
    from ..api.serializers import render
    from .webhooks import enqueue_deliveries

    event = Event.objects.create(
        organisation_id=instance.organisation_id,
        key_id=getattr(instance, "key_id", None),
        type=type or instance.__class__.__name__.lower(),
        action=action,
        object_id=str(instance.pk),
        data=render(instance),
    )
    enqueue_deliveries([event])
    return event

"""Subscriptions: beat creates their polls on schedule (`requestor` "subscription")."""
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..choices import SessionState, SubscriptionState
from ..errors import APIError
from ..models import Key, Session, Source, Subscription
from ..notify import notify_on_commit
from .awaiting import subscription_channel
from .events import record_event
from .polls import check_session_usable, create_poll, expand_payload

__all__ = ["create_subscription", "activate_subscriptions", "delete_subscription", "run_due_subscriptions",
           "DEFAULT_INTERVAL"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 24 * 3600


def create_subscription(*, key: Key, session: Session, source: Source | None, poll_payload: dict,
                        interval: int | None, date_start=None, date_end=None) -> Subscription:
    check_session_usable(session)
    source = source or session.source
    expand_payload(source, poll_payload)
    if interval is not None and interval < settings.RICLOUD_SUBSCRIPTION_MIN_INTERVAL:
        raise APIError("invalid-parameter", "One or more parameters failed validation.",
                       params={"interval": [f"At least {settings.RICLOUD_SUBSCRIPTION_MIN_INTERVAL} seconds."]})
    if date_start and date_end and date_end <= date_start:
        raise APIError("invalid-parameter", "One or more parameters failed validation.",
                       params={"date_end": ["Must be after date_start."]})
    now = timezone.now()
    with transaction.atomic():
        subscription = Subscription.objects.create(
            organisation_id=key.organisation_id, key=key, user_id=session.user_id, source=source, session=session,
            poll_payload=poll_payload, interval=interval, date_start=date_start, date_end=date_end,
            date_next_poll=max(date_start or now, now),
            state=SubscriptionState.ACTIVE if session.state == SessionState.ACTIVE else SubscriptionState.PENDING,
        )
        record_event(subscription, "created")
        if subscription.state == SubscriptionState.ACTIVE:
            notify_on_commit(subscription_channel(subscription.id))
    return subscription


def activate_subscriptions(session_id) -> None:
    """A session became active: its pending subscriptions start."""
    ids = list(Subscription.objects.filter(session_id=session_id, state=SubscriptionState.PENDING).values_list("id", flat=True))
    Subscription.objects.filter(id__in=ids, state=SubscriptionState.PENDING).update(state=SubscriptionState.ACTIVE)
    for subscription_id in ids:
        notify_on_commit(subscription_channel(subscription_id))


def delete_subscription(*, subscription: Subscription) -> Subscription:
    with transaction.atomic():
        won = Subscription.objects.filter(id=subscription.id).exclude(state=SubscriptionState.DELETED).update(
            state=SubscriptionState.DELETED
        )
        subscription.refresh_from_db()
        if won:
            record_event(subscription, "deleted")
    return subscription


def run_due_subscriptions(*, now=None, limit: int = 500) -> int:
    """Activate subscriptions whose session became active, end those past `date_end` or whose
    session died, and create one poll for each due subscription (compare-and-set on its clock)."""
    now = now or timezone.now()
    for session_id in Subscription.objects.filter(
        state=SubscriptionState.PENDING, session__state=SessionState.ACTIVE
    ).values_list("session_id", flat=True).distinct():
        activate_subscriptions(session_id)
    ended = Subscription.objects.exclude(state=SubscriptionState.DELETED).filter(
        Q(date_end__lte=now) | Q(session__state__in=(SessionState.EXPIRED, SessionState.FAILED))
    )
    ended.update(state=SubscriptionState.DELETED)
    created = 0
    due = Subscription.objects.filter(state=SubscriptionState.ACTIVE, date_next_poll__lte=now).select_related(
        "key", "session__source", "session__user", "source"
    )[:limit]
    for subscription in due:
        following = now + timedelta(seconds=subscription.interval or DEFAULT_INTERVAL)
        with transaction.atomic():
            won = Subscription.objects.filter(
                id=subscription.id, state=SubscriptionState.ACTIVE, date_next_poll=subscription.date_next_poll
            ).update(date_next_poll=following)
            if not won:
                continue
            try:
                with transaction.atomic():
                    create_poll(key=subscription.key, session=subscription.session, source=subscription.source,
                                payload=subscription.poll_payload, requestor="subscription", subscription=subscription)
                created += 1
            except APIError as exc:
                logger.warning("subscription %s: poll refused (%s); ending it", subscription.id, exc.error_code)
                Subscription.objects.filter(id=subscription.id).update(state=SubscriptionState.DELETED)
    return created

"""Webhook configs and event delivery (one delivery row per event and config, one attempt row
per try, exponential backoff, no retry on 4xx).

The schedule is on the delivery row, not in broker messages: a `pending` delivery is due at
`next_attempt_at`. An attempt starts with a claim, one statement that counts the attempt, moves
`next_attempt_at` a lease ahead and writes the attempt row (`in progress`), committed before
anything is sent; its outcome then sets the next slot (`backoff_seconds`) or ends the delivery.
So each slot is sent at most once whoever runs it, and every slot comes while attempts remain:

* the first attempt runs at once, from the event's Celery message (`deliver_event`); a
  redelivered message finds the slot taken and sends nothing;
* later attempts are claimed by `sweep_deliveries`, which every worker's maintenance loop runs
  (workers/maintenance.py); claims skip rows another sweeper holds (SKIP LOCKED);
* an attempt whose worker died is `lost` when its lease ends, and the next slot is claimed then
  (or the delivery fails, if it was the last).
"""
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ..choices import ConfigState, EventState
from ..models import Event, Key, WebhookAttempt, WebhookConfig, WebhookDelivery
from ..sealing import seal, unseal
from ..webhook_targets import delivery_url
from .configs import change_config, queue_config_test
from .rows import insert_rows
from .transitions import _db

logger = logging.getLogger(__name__)

__all__ = [
    "DELIVER_EVENT",
    "WEBHOOKS_QUEUE",
    "effective_webhook_config",
    "create_webhook_config",
    "update_webhook_config",
    "enqueue_deliveries",
    "plan_deliveries",
    "deliveries_on_commit",
    "deliver_event",
    "sweep_deliveries",
    "backoff_seconds",
    "event_body",
    "AttemptOutcome",
]

DELIVER_EVENT = "ricloud.deliver_event"
WEBHOOKS_QUEUE = "webhooks"


# A sweeper sends this many attempts at once, and claims no more than it is about to send (a
# claim must not wait out its lease in a local queue); it keeps claiming for up to the budget.
SWEEP_CONCURRENCY = 8
SWEEP_BUDGET_SECONDS = 30
IN_PROGRESS = "in progress"
LOST = "lost: the worker stopped before recording the outcome"


@dataclass
class AttemptOutcome:
    """What one attempt did (what a `send` returns)."""

    url: str
    status_code: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def permanent(self) -> bool:
        """A 4xx (or a refused target) is not retried."""
        if self.status_code is None:
            return self.error.startswith("refused")
        return 400 <= self.status_code < 500


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt: int
    max_attempts: int
    event_id: object


def backoff_seconds(attempt: int) -> float:
    """The wait after failed attempt n before attempt n + 1: base × 4^(n-1), the base being
    RICLOUD_WEBHOOK_BACKOFF_SECONDS (60 s, 4 min, 16 min, 64 min by default)."""
    return settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS * 4 ** (attempt - 1)


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



def enqueue_deliveries(events: list[Event], *, key: Key | None = None, config_id: int | None = None) -> None:
    """Schedule the events that have somewhere to go, in the caller's transaction (see
    plan_deliveries), and send the first attempts' messages after commit."""
    rows = plan_deliveries(events, key=key, config_id=config_id)
    if rows:
        insert_rows(rows)
        deliveries_on_commit(rows)


def plan_deliveries(events: list[Event], *, key: Key | None = None,
                    config_id: int | None = None) -> list[WebhookDelivery]:
    """The delivery rows (unsaved) of the events that have somewhere to go: one per event, due
    after RICLOUD_WEBHOOK_FIRST_ATTEMPT_GRACE_SECONDS. They are written with the events, and the
    event's message makes the first attempt at once; should the message be lost (a Redis restart,
    a failed send), the maintenance sweep sends the row when it falls due. The row, not the
    message, guarantees the delivery. `key`: the events' key, loaded with its organisation;
    `config_id`: their key's effective config when the caller knows it (no lookup)."""
    keys = {event.key_id for event in events if event.key_id}
    if not keys:
        return []
    if config_id is not None:
        targets = dict.fromkeys(keys, config_id)
    else:
        if key is not None and keys <= {key.id} and Key.organisation.is_cached(key):
            candidates = {key.id: (key.webhook_config_id, key.organisation.webhook_config_default_id)}
        else:
            candidates = {
                key_id: (config, default)
                for key_id, config, default in Key.objects.filter(id__in=keys).values_list(
                    "id", "webhook_config_id", "organisation__webhook_config_default_id"
                )
            }
        wanted = {config for pair in candidates.values() for config in pair if config}
        if not wanted:
            return []
        active = set(WebhookConfig.objects.filter(id__in=wanted).exclude(state=ConfigState.DEACTIVATED)
                     .values_list("id", flat=True))
        targets = {key_id: next((c for c in pair if c in active), None) for key_id, pair in candidates.items()}
    due = timezone.now() + timedelta(seconds=settings.RICLOUD_WEBHOOK_FIRST_ATTEMPT_GRACE_SECONDS)
    return [WebhookDelivery(event_id=event.id, config_id=targets[event.key_id], next_attempt_at=due,
                            max_attempts=settings.RICLOUD_WEBHOOK_MAX_ATTEMPTS)
            for event in events
            if event.key_id and targets.get(event.key_id) and event.type != "webhook_config"]


def deliveries_on_commit(rows: list[WebhookDelivery]) -> None:
    first_attempts_on_commit([row.event_id for row in rows])


def first_attempts_on_commit(event_ids) -> None:
    """The first attempts' messages of deliveries written in this transaction, after commit."""
    if event_ids:
        transaction.on_commit(partial(_send_deliveries, [str(event_id) for event_id in event_ids]))


def _send_deliveries(event_ids: list[str]) -> None:
    """The first attempts' messages, after the commit. Never raises: a broker outage must not turn
    a committed request, or a task's ending, into an error. The first failed send (0.6 s of the
    producer's retries) ends the batch (logged); the sweep makes the attempts it left once their
    delivery rows fall due."""
    from ricloud_server.celery import app

    for sent, event_id in enumerate(event_ids):
        try:
            app.send_task(DELIVER_EVENT, args=[event_id], queue=WEBHOOKS_QUEUE)
        except Exception:  # noqa: BLE001 - kombu's OperationalError, or anything the broker raises
            logger.warning("could not enqueue the webhook deliveries of %d event(s) (broker unavailable)",
                           len(event_ids) - sent, exc_info=True)
            return


def event_body(event: Event) -> bytes:
    from ..api.serializers import EventSerializer

    return json.dumps(EventSerializer(event).data, separators=(",", ":"), default=str).encode("utf-8")


def _table() -> str:
    return WebhookDelivery._meta.db_table


def _lock() -> str:
    # NO KEY UPDATE: the attempt rows inserted with the claim (KEY SHARE) never wait on it.
    return " FOR NO KEY UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""


def _claim(*, limit: int, delivery_id: int | None = None) -> list[Claim]:
    """Take up to `limit` due attempts: count each, move its slot a lease ahead and write its
    attempt row `in progress` (an earlier attempt still `in progress` was lost), in one
    transaction committed before anything is sent."""
    now = timezone.now()
    # The event's own message may take a delivery's first attempt before it is due (its row is
    # due only after a grace, for the sweep to catch a lost message).
    only = " AND id = %s" if delivery_id is not None else ""
    due = "(next_attempt_at <= %s OR attempts = 0)" if delivery_id is not None else "next_attempt_at <= %s"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table()} SET attempts = attempts + 1, next_attempt_at = %s"
            f" WHERE id IN (SELECT id FROM {_table()} WHERE state = 'pending' AND {due}"
            f"   AND attempts < max_attempts{only} ORDER BY next_attempt_at LIMIT {int(limit)}{_lock()})"
            f" RETURNING id, attempts, max_attempts, event_id",
            # The lease (RICLOUD_WEBHOOK_ATTEMPT_LEASE_SECONDS, 120 s) outlasts any attempt
            # (workers/publishers/webhooks.py: about 50 s at most).
            [_db(WebhookDelivery, "next_attempt_at",
                 now + timedelta(seconds=settings.RICLOUD_WEBHOOK_ATTEMPT_LEASE_SECONDS)),
             _db(WebhookDelivery, "next_attempt_at", now), *([delivery_id] if delivery_id is not None else [])],
        )
        claims = [Claim(*row) for row in cursor.fetchall()]
        if claims:
            ids = [claim.delivery_id for claim in claims]
            WebhookAttempt.objects.filter(delivery_id__in=ids, error=IN_PROGRESS).update(error=LOST)
            WebhookAttempt.objects.bulk_create(
                WebhookAttempt(delivery_id=claim.delivery_id, number=claim.attempt, url="", error=IN_PROGRESS)
                for claim in claims
            )
    return claims


def _give_up() -> int:
    """Fail the deliveries whose last attempt was lost (lease over, no attempt left)."""
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table()} SET state = 'failed', next_attempt_at = NULL"
            f" WHERE id IN (SELECT id FROM {_table()} WHERE state = 'pending' AND next_attempt_at <= %s"
            f"   AND attempts >= max_attempts ORDER BY next_attempt_at LIMIT 1000{_lock()})"
            f" RETURNING id, event_id, attempts",
            [_db(WebhookDelivery, "next_attempt_at", now)],
        )
        rows = cursor.fetchall()
        if rows:
            WebhookAttempt.objects.filter(delivery_id__in=[row[0] for row in rows], error=IN_PROGRESS).update(error=LOST)
        for _, event_id, attempts in rows:
            Event.objects.filter(id=event_id).update(state=EventState.FAILED, retries=max(attempts - 1, 0))
    return len(rows)


def _jobs(claims: list[Claim]) -> list[tuple[Claim, dict | AttemptOutcome]]:
    """What to send for each claim (`send`'s keyword arguments), or the outcome of an attempt
    that is not sent (the config was deactivated); fills in the attempt rows' URL."""
    deliveries = WebhookDelivery.objects.select_related("event", "config").in_bulk([c.delivery_id for c in claims])
    jobs = []
    for claim in claims:
        delivery = deliveries[claim.delivery_id]
        url = delivery_url(delivery.config.url, delivery.event_id)
        WebhookAttempt.objects.filter(delivery_id=claim.delivery_id, number=claim.attempt).update(url=url)
        if delivery.config.state == ConfigState.DEACTIVATED:
            jobs.append((claim, AttemptOutcome(url, None, "refused: the webhook config was deactivated", 0)))
            continue
        try:
            jobs.append((claim, {"config_url": delivery.config.url, "secret": unseal(delivery.config.secret),
                                 "event_id": delivery.event_id, "body": event_body(delivery.event)}))
        except Exception as exc:  # noqa: BLE001 - recorded on this attempt, not left `in progress`
            jobs.append((claim, AttemptOutcome(url, None, f"{type(exc).__name__}: {exc}"[:500], 0)))
    return jobs


def _attempt(send, job: dict | AttemptOutcome) -> AttemptOutcome:
    if isinstance(job, AttemptOutcome):
        return job
    try:
        return send(**job)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt; the slot is not lost
        return AttemptOutcome("", None, f"{type(exc).__name__}: {exc}"[:500], 0)


def _record(claim: Claim, outcome: AttemptOutcome) -> str:
    """Write the attempt's outcome and the delivery's next slot or end; returns its state."""
    now = timezone.now()
    if outcome.ok:
        state, event_state = "delivered", EventState.DELIVERED
    elif outcome.permanent or claim.attempt >= claim.max_attempts:
        state, event_state = "failed", EventState.FAILED
    else:
        state, event_state = "pending", EventState.PENDING
    with transaction.atomic():
        WebhookAttempt.objects.filter(delivery_id=claim.delivery_id, number=claim.attempt).update(
            status_code=outcome.status_code, error=outcome.error, duration_ms=outcome.duration_ms,
            **({"url": outcome.url} if outcome.url else {}),
        )
        rows = WebhookDelivery.objects.filter(id=claim.delivery_id, state="pending")
        if not outcome.ok:  # a success is recorded even if the slot was given up meanwhile
            rows = rows.filter(attempts=claim.attempt)
        if not rows.update(
            state=state,
            date_delivered=now if outcome.ok else None,
            next_attempt_at=now + timedelta(seconds=backoff_seconds(claim.attempt)) if state == "pending" else None,
        ):
            return WebhookDelivery.objects.values_list("state", flat=True).get(id=claim.delivery_id)
        Event.objects.filter(id=claim.event_id).update(
            state=event_state, retries=claim.attempt - 1, date_delivered=now if outcome.ok else None
        )
    return state


def deliver_event(event_id, *, send, config: WebhookConfig | None = None, retry: bool = True) -> str:
    """The first attempt of an event's delivery to its effective config (or `config`); `retry`
    False: that attempt is the only one (a config test). `send(config_url=, secret=, event_id=,
    body=)` makes the HTTP attempt and returns an AttemptOutcome.

    Returns the delivery state (`pending`: another attempt is scheduled, or this slot was
    already taken)."""
    event = Event.objects.select_related("key__organisation").filter(id=event_id).first()
    if event is None:
        return "gone"
    delivery = None if config else WebhookDelivery.objects.filter(event=event).order_by("id").first()
    if delivery is None:  # a config test, or an event from before delivery rows came with events
        config = config or (effective_webhook_config(event.key) if event.key else None)
        if config is None:
            return "no-target"
        delivery, _ = WebhookDelivery.objects.get_or_create(
            event=event, config=config,
            defaults={"next_attempt_at": timezone.now(),
                      "max_attempts": settings.RICLOUD_WEBHOOK_MAX_ATTEMPTS if retry else 1},
        )
    claims = _claim(limit=1, delivery_id=delivery.id)
    if not claims:
        return WebhookDelivery.objects.values_list("state", flat=True).get(id=delivery.id)
    ((claim, job),) = _jobs(claims)
    return _record(claim, _attempt(send, job))


def sweep_deliveries(*, send, budget_seconds: float = SWEEP_BUDGET_SECONDS,
                     concurrency: int = SWEEP_CONCURRENCY) -> dict:
    """Send the attempts that are due, `concurrency` at a time, for up to `budget_seconds`;
    fail the deliveries whose last attempt was lost. Safe to run in any number of processes."""
    outcome = {"failed_lost": _give_up(), "attempts": 0, "delivered": 0, "failed": 0}
    deadline = time.monotonic() + budget_seconds
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook-sweep") as pool:
        while time.monotonic() < deadline:
            claims = _claim(limit=concurrency)
            if not claims:
                break
            # The pool's threads only send (no database); outcomes are written from this thread.
            sending = {pool.submit(_attempt, send, job): claim for claim, job in _jobs(claims)}
            for future in as_completed(sending):
                state = _record(sending[future], future.result())
                outcome["attempts"] += 1
                outcome[state] = outcome.get(state, 0) + 1
            if len(claims) < concurrency:
                break
    return outcome



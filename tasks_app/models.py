"""The domain model. There is exactly one Task model; v3 and v2 both run on it.

Organisation-level resources (organisation, key, user, source) have integer ids as in the
documentation's examples; the asynchronous resources (session, poll, task, result, event)
have time-ordered UUIDs, rendered as strings.
"""
import hashlib
import secrets

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils.text import slugify

from .choices import (
    ConfigState,
    DeliveryState,
    EventState,
    KeyState,
    OrganisationState,
    PollState,
    ResultState,
    RetrievalProtocol,
    SessionState,
    SourceState,
    SubscriptionState,
    TaskState,
    UserState,
)
from .ids import uuid7
from .sealing import SealedField

__all__ = [
    "Organisation",
    "Key",
    "User",
    "Source",
    "Session",
    "Poll",
    "Task",
    "Result",
    "Event",
    "Delivery",
    "TaskCount",
    "TaskCountDelta",
    "WebhookConfig",
    "StorageConfig",
    "Subscription",
    "Permissions",
    "WebhookDelivery",
    "WebhookAttempt",
    "hash_token",
    "generate_token",
]


def hash_token(token: str) -> str:
    """Tokens are stored as their SHA-256; the plaintext is shown once."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    return secrets.token_hex(20)


class Organisation(models.Model):
    """An API customer; every other row belongs to exactly one organisation."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200)
    state = models.CharField(max_length=20, choices=OrganisationState.choices, default=OrganisationState.UNCONFIGURED)
    storage_config_default = models.ForeignKey(
        "StorageConfig", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    webhook_config_default = models.ForeignKey(
        "WebhookConfig", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    date_created = models.DateTimeField(auto_now_add=True)

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:200] or "organisation"
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.name


class Key(models.Model):
    """An API key; requests authenticate with its token and act for its organisation."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="keys")
    type = models.CharField(max_length=20, default="standard")
    token_hash = models.CharField(max_length=64, unique=True)
    # v2: where results of tasks submitted with this key go (one protocol per token).
    retrieval_protocol = models.CharField(
        max_length=20, choices=RetrievalProtocol.choices, default=RetrievalProtocol.ASCHANNEL
    )
    # Overrides of the organisation defaults.
    storage_config = models.ForeignKey("StorageConfig", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    webhook_config = models.ForeignKey("WebhookConfig", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=20, choices=KeyState.choices, default=KeyState.ACTIVE)
    date_created = models.DateTimeField(auto_now_add=True)
    date_expires = models.DateTimeField(null=True, blank=True)

    @property
    def stream(self) -> str:
        """The key's constant aschannel stream id."""
        return key_stream(self.id)


def key_stream(key_id) -> str:
    """The aschannel stream id of a key, from its id alone."""
    return f"stream-{key_id}"


class User(models.Model):
    """The caller's end-user; `identifier` is unique per key (POST /users is get-or-create)."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="users")
    identifier = models.CharField(max_length=255)
    state = models.CharField(max_length=20, choices=UserState.choices, default=UserState.ACTIVE)
    date_created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "identifier"], name="user_unique_key_identifier")]
        indexes = [models.Index(fields=["organisation", "id"], name="user_org_id")]


class Source(models.Model):
    """A data origin (an iCloud account, a mock account); sources form a tree."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="sources")
    type = models.CharField(max_length=100)
    identifier = models.CharField(max_length=255)
    info = models.JSONField(null=True, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    state = models.CharField(max_length=20, choices=SourceState.choices, default=SourceState.UNVALIDATED)
    date_created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "type", "identifier"], name="source_unique_user_type_identifier")
        ]
        indexes = [models.Index(fields=["organisation", "id"], name="source_org_id")]


class Session(models.Model):
    """Authenticated access to one source, established by a `session.init` task."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="sessions")
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="sessions")
    # The service credentials (POST /sessions `payload`), sealed (tasks_app/sealing.py) for the
    # session.init task and dropped when the session leaves `pending`; never rendered.
    credentials = SealedField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=SessionState.choices, default=SessionState.PENDING)
    error = models.CharField(max_length=100, null=True, blank=True)
    date_created = models.DateTimeField(auto_now_add=True)
    date_expired = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["organisation", "id"], name="session_org_id"),
            models.Index(fields=["organisation", "state", "id"], name="session_org_state_id"),
        ]


# The foreign keys of the tables every task writes (polls, tasks and their links, results,
# deliveries, events, webhook deliveries) are relations for Django but not constraints in the
# database (`db_constraint=False`): each enforced one costs a check at commit that also locks the
# parent row `FOR KEY SHARE`, and the parents (organisation, key, user, session, poll) are shared
# by every concurrent writer. Their rows are written only by the engine, from parents it holds;
# deletions cascade through Django's collector as before. docs/DECISIONS.md 146.


class Poll(models.Model):
    """One request for data against a session; it aggregates the tasks it creates."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # The organisation's own index would repeat poll_org_id's leading column: one index fewer to
    # write on every poll's insert and completion.
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+", db_index=False,
                                     db_constraint=False)
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="polls", db_constraint=False)
    subscription = models.ForeignKey(
        "Subscription", null=True, blank=True, on_delete=models.SET_NULL, related_name="polls", db_constraint=False
    )
    payload = models.JSONField(default=dict)
    requestor = models.CharField(max_length=20, default="api")
    state = models.CharField(max_length=20, choices=PollState.choices, default=PollState.PENDING)
    # Tasks not yet terminal: each task's terminal transition decrements it with RETURNING, and
    # the one that reaches 0 completes the poll (no lock of the poll for the other transitions).
    open_tasks = models.PositiveIntegerField(default=0)
    date_created = models.DateTimeField(auto_now_add=True)
    date_started = models.DateTimeField(null=True, blank=True)
    date_completed = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["organisation", "id"], name="poll_org_id"),
            models.Index(fields=["organisation", "state", "id"], name="poll_org_state_id"),
        ]


class Task(models.Model):
    """One unit of asynchronous work; its state changes only through services.transitions."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False,
    )
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False,
    )
    source = models.ForeignKey(
        Source, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False,
    )
    session = models.ForeignKey(
        Session, null=True, blank=True, on_delete=models.CASCADE, related_name="tasks",
        db_index=False, db_constraint=False,
    )
    poll = models.ForeignKey(
        Poll, null=True, blank=True, on_delete=models.CASCADE, related_name="tasks",
        db_index=False, db_constraint=False,
    )
    source_type = models.CharField(max_length=100, null=True, blank=True)
    type = models.CharField(max_length=100)
    target = models.CharField(max_length=255, null=True, blank=True)
    # 3 for v3 resources; 2 for tasks submitted through the v2 asapi (their results are delivered).
    api_version = models.PositiveSmallIntegerField(default=3)
    # Denormalised from its results so that v2 task-status answers 10,000 ids from the task rows:
    # whether anything was published, and whether a client has consumed it.
    has_results = models.BooleanField(default=False)
    results_consumed = models.BooleanField(default=False)
    # Handler arguments that are not the target (e.g. the poll's scenario controls); never rendered.
    payload = models.JSONField(default=dict)
    # Secret arguments (a v2 log-in password, a 2FA code), sealed; a retry or a re-run after a
    # crash reads them again, and the terminal transition drops them (services/transitions.py).
    secrets = SealedField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=TaskState.choices, default=TaskState.PENDING)
    error = models.CharField(max_length=100, null=True, blank=True)
    # Tasks that must be terminal before this one runs (a poll task waits for session.init).
    blocked_by = models.ManyToManyField(
        "self", symmetrical=False, related_name="blocks", blank=True, db_constraint=False,
    )
    attempts = models.PositiveIntegerField(default=0)
    date_enqueued = models.DateTimeField(null=True, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    date_created = models.DateTimeField(auto_now_add=True)
    date_started = models.DateTimeField(null=True, blank=True)
    date_completed = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["organisation", "id"], name="task_org_id"),
            models.Index(fields=["organisation", "state", "id"], name="task_org_state_id"),
            models.Index(fields=["organisation", "state", "type", "id"], name="task_org_state_type_id"),
            models.Index(fields=["organisation", "type", "id"], name="task_org_type_id"),
            models.Index(fields=["organisation", "source_type", "id"], name="task_org_source_type_id"),
            models.Index(fields=["organisation", "date_created"], name="task_org_created"),
            models.Index(fields=["organisation", "date_started"], name="task_org_started"),
            models.Index(fields=["organisation", "date_completed"], name="task_org_completed"),
            models.Index(fields=["key", "id"], name="task_key_id"),
            models.Index(fields=["user", "id"], name="task_user_id"),
            models.Index(fields=["source", "id"], name="task_source_id"),
            models.Index(fields=["session", "id"], name="task_session_id"),
            models.Index(fields=["poll", "id"], name="task_poll_id"),
            # The reaper's scan: only non-terminal rows are indexed.
            models.Index(
                fields=["state", "date_enqueued"],
                name="task_active_state",
                condition=models.Q(state__in=["pending", "processing", "suspended"]),
            ),
        ]


class TaskCount(models.Model):
    """How many tasks there are per (organisation, key, state, type, source_type), as of the last
    fold of `TaskCountDelta` (services/counts.py). Only the folder writes it; `bucket` is always 0
    for new rows (older rows may carry other buckets: counts sum over them)."""

    organisation_id = models.BigIntegerField()
    key_id = models.BigIntegerField()
    state = models.CharField(max_length=20)
    type = models.CharField(max_length=100)
    source_type = models.CharField(max_length=100)  # "" for tasks without a source
    bucket = models.SmallIntegerField()
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organisation_id", "key_id", "state", "type", "source_type", "bucket"], name="taskcount_unique"
            )
        ]


class TaskCountDelta(models.Model):
    """An append-only change to a TaskCount total, written by Postgres triggers in the transaction
    of the task write; folded into TaskCount by the maintenance loop. Never updated in place."""

    organisation_id = models.BigIntegerField()
    key_id = models.BigIntegerField()
    state = models.CharField(max_length=20)
    type = models.CharField(max_length=100)
    source_type = models.CharField(max_length=100)
    n = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["organisation_id"], name="taskcountdelta_org")]


class Result(models.Model):
    """One published object (a JSON document or a file) in a storage backend."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False,
    )
    poll = models.ForeignKey(
        Poll, null=True, blank=True, on_delete=models.CASCADE, related_name="results",
        db_index=False, db_constraint=False,
    )
    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="results",
        db_index=False, db_constraint=False,
    )
    identifier = models.CharField(max_length=255)
    url = models.TextField()
    type = models.CharField(max_length=50, null=True, blank=True)
    checksum = models.CharField(max_length=32)
    size = models.BigIntegerField()
    # Null: the server's own storage (RICLOUD_STORAGE_URL), which the cleanup may expire.
    storage_config = models.ForeignKey(
        "StorageConfig", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False,
    )
    signed_url = models.TextField(null=True, blank=True)
    signed_url_expires = models.DateTimeField(null=True, blank=True)
    # A small v2 result's bytes, kept in its row (an `inline:` URL) instead of a file: v2 results
    # are only ever streamed, fetched or downloaded through this server (workers/runner.py).
    content = models.BinaryField(null=True, blank=True, editable=False)
    state = models.CharField(max_length=20, choices=ResultState.choices, default=ResultState.AVAILABLE)
    date_created = models.DateTimeField(auto_now_add=True)
    date_consumed = models.DateTimeField(null=True, blank=True)
    date_deleted = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # A redelivered task publishes nothing twice.
            models.UniqueConstraint(fields=["task", "identifier"], name="result_unique_task_identifier")
        ]
        indexes = [
            models.Index(fields=["organisation", "state", "id"], name="result_org_state_id"),
            models.Index(fields=["poll", "id"], name="result_poll_id"),
        ]


class WebhookConfig(models.Model):
    """Where events are delivered; `secret` (sealed) signs every delivery."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="webhook_configs")
    url = models.URLField(max_length=2000)
    secret = SealedField()
    state = models.CharField(max_length=20, choices=ConfigState.choices, default=ConfigState.NEW)
    date_created = models.DateTimeField(auto_now_add=True)


class StorageConfig(models.Model):
    """Where results are published: `local://` or `s3://` (boto3)."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="storage_configs")
    url = models.CharField(max_length=2000)
    # Sealed (write-only in the API); null: none given.
    credentials = SealedField(null=True, blank=True)
    signed_urls_enabled = models.BooleanField(default=False)
    signed_urls_expiry = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=ConfigState.choices, default=ConfigState.NEW)
    date_created = models.DateTimeField(auto_now_add=True)

    @property
    def type(self) -> str:
        return self.url.split("://", 1)[0]


class Subscription(models.Model):
    """A standing request: beat creates a poll every `interval` seconds within its window."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="subscriptions")
    poll_payload = models.JSONField(default=dict)
    interval = models.PositiveIntegerField(null=True, blank=True)
    date_start = models.DateTimeField(null=True, blank=True)
    date_end = models.DateTimeField(null=True, blank=True)
    date_next_poll = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=SubscriptionState.choices, default=SubscriptionState.PENDING)
    date_created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["organisation", "id"], name="subscription_org_id"),
            models.Index(fields=["date_next_poll"], name="subscription_due", condition=models.Q(state="active")),
        ]


class Permissions(models.Model):
    """Scopes (`source_type:icloud.*` → limits) of an organisation, or narrowed for a key or user."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="permissions")
    key = models.ForeignKey(Key, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    identifier = models.CharField(max_length=100, default="default")
    scopes = models.JSONField(default=dict)
    date_created = models.DateTimeField(auto_now_add=True)


class WebhookDelivery(models.Model):
    """One event on its way to one webhook config; an attempt row per try.

    The schedule lives on the row: a `pending` delivery is due at `next_attempt_at`, and an
    attempt is claimed by moving that time forward and counting it in `attempts` in one
    statement before anything is sent (services/webhooks.py), so each slot is sent at most once.
    """

    event = models.ForeignKey("Event", on_delete=models.CASCADE, related_name="deliveries", db_constraint=False)
    config = models.ForeignKey(WebhookConfig, on_delete=models.CASCADE, related_name="deliveries", db_constraint=False)
    state = models.CharField(max_length=20, default="pending")
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=5)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    date_created = models.DateTimeField(auto_now_add=True)
    date_delivered = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "config"], name="webhook_delivery_unique")]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due", condition=models.Q(state="pending")),
        ]


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    url = models.TextField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    date_created = models.DateTimeField(auto_now_add=True)


class Delivery(models.Model):
    """A v2 result on its way down an aschannel stream; it stays until the client consumes it."""

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False,
    )
    stream = models.CharField(max_length=100)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="deliveries", db_constraint=False)
    result = models.OneToOneField(Result, on_delete=models.CASCADE, related_name="delivery", db_constraint=False)
    state = models.CharField(max_length=20, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    date_created = models.DateTimeField(auto_now_add=True)
    date_consumed = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["stream", "id"], name="delivery_pending", condition=models.Q(state="pending")
            ),
        ]


class Event(models.Model):
    """A state change, written in the same transaction as the change (transactional outbox)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False,
    )
    key = models.ForeignKey(
        Key, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False,
    )
    type = models.CharField(max_length=50)
    action = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    # Null for task and poll events: their representation is rendered when read or delivered
    # (services/events.py), which keeps the write path cheap.
    data = models.JSONField(encoder=DjangoJSONEncoder, null=True, blank=True)
    state = models.CharField(max_length=20, choices=EventState.choices, default=EventState.PENDING)
    retries = models.PositiveIntegerField(default=0)
    date_created = models.DateTimeField(auto_now_add=True)
    date_delivered = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["organisation", "id"], name="event_org_id"),
            models.Index(fields=["organisation", "type", "action", "id"], name="event_org_type_action_id"),
            models.Index(fields=["object_id"], name="event_object"),
        ]


# DRF treats the authenticated key as `request.user`.
Key.is_authenticated = True
Key.is_anonymous = False

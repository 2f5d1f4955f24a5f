"""State sets and their allowed transitions, declared as data.

`TRANSITIONS[to]` lists the states a row may move *from* to reach `to`; the compare-and-set
helpers in `services/transitions.py` turn that into `UPDATE ... WHERE state IN (...)`.
"""
from django.db import models

__all__ = [
    "OrganisationState",
    "KeyState",
    "UserState",
    "SourceState",
    "SessionState",
    "PollState",
    "TaskState",
    "ResultState",
    "EventState",
    "DeliveryState",
    "ConfigState",
    "SubscriptionState",
    "RetrievalProtocol",
    "TASK_TRANSITIONS",
    "SESSION_TRANSITIONS",
    "POLL_TRANSITIONS",
    "RESULT_TRANSITIONS",
    "TASK_TERMINAL",
    "TASK_ACTIVE",
]


class OrganisationState(models.TextChoices):
    UNCONFIGURED = "unconfigured"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    BLOCKED = "blocked"


class KeyState(models.TextChoices):
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    BLOCKED = "blocked"
    EXPIRED = "expired"


class UserState(models.TextChoices):
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    BLOCKED = "blocked"


class SourceState(models.TextChoices):
    UNVALIDATED = "unvalidated"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    BLOCKED = "blocked"
    LOCKED = "locked"


class SessionState(models.TextChoices):
    PENDING = "pending"
    ACTIVE = "active"
    FAILED = "failed"
    EXPIRED = "expired"


class PollState(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"


class TaskState(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    SUSPENDED = "suspended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ResultState(models.TextChoices):
    AVAILABLE = "available"
    CONSUMED = "consumed"
    EXPIRED = "expired"


class ConfigState(models.TextChoices):
    NEW = "new"
    VALID = "valid"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"


class SubscriptionState(models.TextChoices):
    PENDING = "pending"
    ACTIVE = "active"
    DELETED = "deleted"


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    CONSUMED = "consumed"


class RetrievalProtocol(models.TextChoices):
    ASCHANNEL = "aschannel"
    ASSTORE = "asstore"


class EventState(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


TASK_TRANSITIONS: dict[str, tuple[str, ...]] = {
    # The reaper puts a task whose worker died (lease ran out) back in the queue.
    TaskState.PENDING: (TaskState.PROCESSING,),
    # A lease-expired `processing` task may be claimed again (its worker died).
    TaskState.PROCESSING: (TaskState.PENDING, TaskState.SUSPENDED, TaskState.PROCESSING),
    TaskState.SUSPENDED: (TaskState.PROCESSING,),
    TaskState.SUCCEEDED: (TaskState.PROCESSING,),
    # pending/suspended tasks fail when cancelled or when a task blocking them failed.
    TaskState.FAILED: (TaskState.PENDING, TaskState.PROCESSING, TaskState.SUSPENDED),
}
TASK_TERMINAL = (TaskState.SUCCEEDED, TaskState.FAILED)
TASK_ACTIVE = (TaskState.PENDING, TaskState.PROCESSING, TaskState.SUSPENDED)

SESSION_TRANSITIONS: dict[str, tuple[str, ...]] = {
    SessionState.ACTIVE: (SessionState.PENDING,),
    SessionState.FAILED: (SessionState.PENDING,),
    SessionState.EXPIRED: (SessionState.PENDING, SessionState.ACTIVE),
}

POLL_TRANSITIONS: dict[str, tuple[str, ...]] = {
    PollState.PROCESSING: (PollState.PENDING,),
    PollState.COMPLETED: (PollState.PENDING, PollState.PROCESSING),
}

RESULT_TRANSITIONS: dict[str, tuple[str, ...]] = {
    ResultState.CONSUMED: (ResultState.AVAILABLE,),
    ResultState.EXPIRED: (ResultState.AVAILABLE, ResultState.CONSUMED),
}

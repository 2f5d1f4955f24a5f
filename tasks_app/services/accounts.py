"""v2 accounts and task submission on the one engine.

A registered v2 account is a Source of the key's v2 user (identifier = username); a submitted
task is a Task with `api_version` 2 whose `type` is the action slug.
"""
from django.db import transaction
from django.utils import timezone

from .. import authcache
from ..choices import DeliveryState, ResultState, SourceState
from ..models import Delivery, Key, Result, Source, Task, User
from .rows import instance
from .tasks import TaskSpec, create_tasks

__all__ = [
    "V2_USER",
    "AccountExists",
    "NoSuchAccount",
    "register_account",
    "deregister_account",
    "find_account",
    "submit_task",
    "consume_results",
    "fetch_result_once",
]

V2_USER = "asapi"


class AccountExists(Exception):
    pass


class NoSuchAccount(Exception):
    pass


def _v2_user(key: Key) -> User:
    user, _ = User.objects.get_or_create(key=key, identifier=V2_USER, defaults={"organisation_id": key.organisation_id})
    return user


SOURCE_FIELDS = [field.attname for field in Source._meta.concrete_fields]
USER_FIELDS = [field.attname for field in User._meta.concrete_fields]


def _load_account(key: Key, source_type: str, username: str):
    source = (
        Source.objects.select_related("user")
        .filter(user__key=key, user__identifier=V2_USER, type=source_type, identifier=username)
        .exclude(state=SourceState.DEACTIVATED)
        .first()
    )
    if source is None:
        return None
    return ({name: None if name in ("info", "state") else getattr(source, name) for name in SOURCE_FIELDS},
            {name: getattr(source.user, name) for name in USER_FIELDS})


def find_account(*, key: Key, source_type: str, username: str) -> Source | None:
    """The key's registered account, from the process cache (authcache) while nothing was
    registered or deregistered since. `info` and `state` are not cached (the worker changes them):
    what a submit needs is the account's ids and type."""
    values = authcache.cached(("account", key.id, source_type, username),
                              getattr(key, "auth_generation", None) or authcache.generation(),
                              lambda: _load_account(key, source_type, username))
    if values is None:
        return None
    source = instance(Source, values[0])
    source.user = instance(User, values[1])
    return source


def register_account(*, key: Key, source_type: str, username: str) -> Source:
    """Register (or re-register a deregistered) account; an active registration is `unique_together`."""
    with transaction.atomic():
        source, created = Source.objects.select_for_update(no_key=True).get_or_create(
            user=_v2_user(key), type=source_type, identifier=username,
            defaults={"organisation_id": key.organisation_id},
        )
        if not created:
            if source.state != SourceState.DEACTIVATED:
                raise AccountExists
            Source.objects.filter(id=source.id).update(state=SourceState.UNVALIDATED)
        authcache.bump()
    return source


def deregister_account(*, key: Key, source_type: str, username: str) -> None:
    updated = Source.objects.filter(
        user__key=key, user__identifier=V2_USER, type=source_type, identifier=username
    ).exclude(state=SourceState.DEACTIVATED).update(state=SourceState.DEACTIVATED)
    authcache.bump()
    if not updated:
        raise NoSuchAccount


def submit_task(*, key: Key, account: Source, action: str, target: str | None, parameters: dict,
                secrets: dict | None = None) -> Task:
    """A v2 task; `secrets` (a password, a 2FA code) are sealed apart from the other parameters."""
    (task,) = create_tasks(
        [TaskSpec(type=action, target=target, payload=parameters, secrets=secrets)], key=key, user=account.user,
        source=account, api_version=2,
    )
    return task


def consume_results(*, key: Key, task_ids: list) -> int:
    """Mark the results (and aschannel deliveries) of these tasks consumed; returns how many tasks."""
    now = timezone.now()
    with transaction.atomic():
        # Tasks first, in id order (the engine's lock order: task, then its results and
        # deliveries): consumers of overlapping ids (several streams of a key) queue, never deadlock.
        task_ids = list(Task.objects.select_for_update(no_key=True)
                        .filter(organisation_id=key.organisation_id, id__in=task_ids)
                        .order_by("id").values_list("id", flat=True))
        if not task_ids:
            return 0
        Result.objects.filter(organisation_id=key.organisation_id, task_id__in=task_ids, state=ResultState.AVAILABLE).update(
            state=ResultState.CONSUMED, date_consumed=now
        )
        Delivery.objects.filter(organisation_id=key.organisation_id, task_id__in=task_ids, state=DeliveryState.PENDING).update(
            state=DeliveryState.CONSUMED, date_consumed=now
        )
        Task.objects.filter(id__in=task_ids, has_results=True, results_consumed=False).update(results_consumed=True)
    return len(task_ids)


def fetch_result_once(*, key: Key, task_id, read) -> tuple[Result, bytes] | None:
    """asstore: hand out a v2 task's result once; `read(result)` loads its bytes before the
    compare-and-set to `consumed`, so a failed read leaves the result available."""
    result = (
        Result.objects.select_related("storage_config")
        .filter(organisation_id=key.organisation_id, task_id=task_id, task__api_version=2, state=ResultState.AVAILABLE)
        .first()
    )
    if result is None:
        return None
    content = read(result)
    won = Result.objects.filter(id=result.id, state=ResultState.AVAILABLE).update(
        state=ResultState.CONSUMED, date_consumed=timezone.now()
    )
    if not won:
        return None
    Task.objects.filter(id=result.task_id).update(results_consumed=True)
    return result, content

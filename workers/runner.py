"""Runs one task: claim, wait for blockers, call the handler, publish, finish.

Every step is safe to repeat: the claim is a compare-and-set, results are keyed by
(task, identifier) and stored at deterministic paths, and finishing is a compare-and-set.
While the handler runs, a heartbeat renews the task's short lease (`heartbeat.py`), so a task
whose worker died is taken over by the reaper within a lease, however long tasks may run.

A run that cannot wait is not worth a lease: a pending task on its first delivery, with no
blocker, whose handler says this run cannot wait (an in-process simulation without a delay,
`handlers.may_wait`), runs without a claim and ends `pending → succeeded | failed` in one
statement that also records its start and attempt. Its ending is a compare-and-set from
`pending`, so a worker that claimed the task meanwhile wins and this run's ending is dropped;
a run cut short by a dying worker leaves the task `pending`, and the reaper sends it again once
its grace has passed, marked so that the next run claims it (`lease_expires` set on a pending
task), which bounds a task that kills its worker by the attempts of claimed runs.
"""
import hashlib
import json
import logging
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from tasks_app.choices import TASK_TERMINAL, RetrievalProtocol, TaskState
from tasks_app.models import Result, Session, Source, StorageConfig, Task
from tasks_app.sealing import UnreadableSecret, unseal
from tasks_app.services.dispatch import send_run_task
from tasks_app.services.transitions import SESSION_INIT, claim_task, read_task, task_from_row, transition_task

from . import heartbeat
from .handlers import HandlerError, Output, TaskContext, get_handler, may_wait
from .publishers.aschannel import deliveries, wake_stream
from .publishers.storage import get_storage, inline_url

__all__ = ["run", "release", "fail"]

logger = logging.getLogger(__name__)


def fail(task_id, error: str, *, task: Task | None = None, results=(), protocol=None, unclaimed=None) -> Task | None:
    """End a task `failed`; `results` (a v2 task's error document, published for `task`) commit
    with it. `unclaimed`: the ending of a run without a claim (`_ending`)."""
    rows, on_win = _written(task, results, protocol)
    return transition_task(task_id, TaskState.FAILED, error=error, has_results=bool(results), rows=rows,
                           on_win=on_win, alone=_alone(task), **_ending(unclaimed))


def _ending(unclaimed) -> dict:
    """How a run ends: from its claim (None), or, for a run without one that started at
    `unclaimed`, from `pending` only, recording its start and attempt."""
    return {} if unclaimed is None else {"allowed_from": (TaskState.PENDING,), "started": unclaimed}


def _alone(task: Task | None) -> bool:
    """Whether the task's ending commits nothing else (a session's init also changes its session)."""
    return task is not None and task.type != SESSION_INIT


def release(task_id) -> bool:
    """Give up the lease of a processing task so that a retry may claim it at once. Never raises
    (it runs while handling another error, e.g. a lost database): False if it could not."""
    try:
        Task.objects.filter(id=task_id, state=TaskState.PROCESSING).update(lease_expires=timezone.now())
        return True
    except Exception:  # noqa: BLE001 - the lease then runs out by itself and the reaper re-sends
        logger.warning("could not release task %s; its lease will run out", task_id)
        return False


def run(task_id, *, max_attempts: int, row: dict | None = None) -> str:
    """Run a task to a terminal state (or suspend it); returns what happened, for logs and tests.
    `row`: the task as its fresh message describes it (`run_row`), instead of reading it; a run
    from it is claim-free, so whatever changed meanwhile wins over its ending."""
    task = task_from_row(row) if row else None
    if task is None or str(task.id) != str(task_id):
        task = read_task(task_id)
    if task is None or task.state in TASK_TERMINAL:
        return "lost"
    if _runs_at_once(task):
        return _execute(task, unclaimed=timezone.now())
    task = claim_task(task_id)
    if task is None:
        return "lost"
    with heartbeat.holding(task.id):
        return _run_claimed(task, max_attempts)


def _runs_at_once(task: Task) -> bool:
    """Whether the task may run without a claim (the module docstring): pending, never claimed
    nor sent again by the reaper, nothing blocking it, and a run of it cannot wait."""
    return (task.state == TaskState.PENDING and task.attempts == 0 and task.lease_expires is None
            and task.type != SESSION_INIT and not task.active_blockers and not task.failed_blockers
            and get_handler(task.source_type, task.type) is not None
            and not may_wait(task.source_type, task.type, task.payload))


def _run_claimed(task: Task, max_attempts: int) -> str:
    if task.attempts > max_attempts:
        fail(task.id, "attempts-exhausted", task=task)
        return "failed"
    if task.failed_blockers:
        if task.failed_init_error is None:
            error = "blocking-task-failed"
        else:
            # The session expired before the task could run (DELETE /sessions), or it failed.
            error = "session-expired" if task.failed_init_error == "session-expired" else "session-failed"
        fail(task.id, error, task=task)
        return "failed"
    if task.active_blockers:
        return _suspend(task)
    if get_handler(task.source_type, task.type) is None:
        fail(task.id, "unsupported-task", task=task)
        return "failed"
    return _execute(task)


def _execute(task: Task, unclaimed=None) -> str:
    """Call the handler, publish its outputs, end the task (`unclaimed`: see `_ending`)."""
    handler = get_handler(task.source_type, task.type)
    try:
        context = _context(task)
        outputs = handler(context)
    except HandlerError as exc:
        return _fail_with(task, exc.code, str(exc), unclaimed)
    except SoftTimeLimitExceeded:
        return _fail_with(task, "timeout", "The task ran out of time.", unclaimed)
    results = _publish(task, outputs)
    source_changes = {"info": context.source_info, "state": context.new_source_state}
    source_changes = {name: value for name, value in source_changes.items() if value is not None}
    if source_changes:
        Source.objects.filter(id=task.source_id).update(**source_changes)
    rows, on_win = _written(task, results, task.retrieval_protocol)
    won = transition_task(task.id, TaskState.SUCCEEDED, has_results=bool(results), rows=rows, on_win=on_win,
                          alone=_alone(task), **_ending(unclaimed))
    return "succeeded" if won else "lost"


def _fail_with(task: Task, code: str, message: str, unclaimed=None) -> str:
    if task.api_version == 2:
        # v2 clients wait for a result on their stream or in asstore: deliver the error itself.
        error = {"error": code, "message": message, "success": False}
        results = _publish(task, [Output(task.type, json.dumps(error, sort_keys=True).encode("utf-8"), "json")])
        won = fail(task.id, code, task=task, results=results, protocol=task.retrieval_protocol, unclaimed=unclaimed)
    else:
        won = fail(task.id, code, task=task, unclaimed=unclaimed)
    return "failed" if won is not None or unclaimed is None else "lost"


def _suspend(task: Task) -> str:
    if transition_task(task.id, TaskState.SUSPENDED) is None:
        return "lost"
    # A blocker may have finished between our check and the suspension; if so, run again.
    if not Task.objects.filter(blocks=task.id).exclude(state__in=TASK_TERMINAL).exists():
        send_run_task(task.id)
    return "suspended"


def _context(task: Task) -> TaskContext:
    source = {"identifier": task.source_identifier, "state": task.source_state} if task.source_id else {}
    return TaskContext(
        task_id=str(task.id),
        organisation_id=task.organisation_id,
        key_id=task.key_id,
        type=task.type,
        target=task.target,
        source_type=task.source_type or "",
        source_identifier=source.get("identifier", ""),
        source_state=source.get("state", ""),
        credentials=_credentials(task),
        options=task.payload or {},
    )


def _credentials(task: Task) -> dict:
    """The session's credentials for its init, else the task's own secret arguments, unsealed.
    They are stored until the task ends, so a retry or a re-run after a crash finds them; a task
    that finds none where it needs them, or cannot decrypt them, fails saying so."""
    if task.type == SESSION_INIT and task.session_id:
        sealed = Session.objects.filter(id=task.session_id).values_list("credentials", flat=True).first()
        if sealed is None:
            raise HandlerError("credentials-unavailable",
                               "The session's credentials are no longer stored; create a new session.")
    elif task.secrets is None:
        return {}
    else:
        sealed = task.secrets
    try:
        return unseal(sealed)
    except UnreadableSecret as exc:
        logger.error("task %s: %s", task.id, exc)
        raise HandlerError("credentials-unreadable", str(exc)) from None


def _signed_url(storage, config, url: str) -> dict:
    if not (config and config.signed_urls_enabled and hasattr(storage, "signed_url")):
        return {}
    expiry = config.signed_urls_expiry or 3600
    return {"signed_url": storage.signed_url(url, expiry), "signed_url_expires": timezone.now() + timedelta(seconds=expiry)}


def _publish(task: Task, outputs: list[Output]) -> list[Result]:
    """Store the outputs; returns their unsaved Result rows, which the terminal transition writes
    (`_record`) in its own transaction: results, deliveries and the terminal state commit together."""
    if not outputs:
        return []
    ref = getattr(task, "storage_config_ref", None)
    config = StorageConfig.objects.get(id=ref) if ref else None
    # A small v2 result bound for the server's own store stays in its row: v2 results are only
    # read through this server (streams, asstore, downloads), so a file would be pure cost.
    inline = settings.RICLOUD_INLINE_RESULT_MAX_BYTES if config is None and task.api_version == 2 else -1
    storage = None  # opened for the first output that is not kept inline (an S3 client is costly)
    results = []
    for output in outputs:
        if len(output.content) <= inline:
            results.append(Result(
                task_id=task.id, identifier=output.identifier, organisation_id=task.organisation_id,
                poll_id=task.poll_id, url=inline_url(task.id, output.identifier), type=output.type,
                checksum=hashlib.md5(output.content).hexdigest(), size=len(output.content), content=output.content,
            ))
            continue
        storage = storage or get_storage(config)
        stored = storage.put(
            storage.name_for(
                organisation_id=task.organisation_id, poll_id=task.poll_id, task_id=task.id, identifier=output.identifier
            ),
            output.content,
        )
        results.append(Result(
            task_id=task.id, identifier=output.identifier, organisation_id=task.organisation_id, poll_id=task.poll_id,
            url=stored.url, type=output.type, checksum=stored.checksum, size=stored.size, storage_config=config,
            **_signed_url(storage, config, stored.url),
        ))
    return results


def _written(task: Task | None, results, protocol) -> tuple[tuple, object]:
    """What the terminal transition writes if it wins (a task publishes only in the transaction
    that ends it, so no earlier attempt can have written any): the results and, for a v2 task on
    aschannel, their deliveries on the key's stream, whose listener is then woken."""
    if not results:
        return (), None
    if task.api_version == 2 and protocol == RetrievalProtocol.ASCHANNEL:
        return (results, deliveries(task, results)), wake_stream
    return (results,), None

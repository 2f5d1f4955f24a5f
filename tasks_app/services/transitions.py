"""The one way task state changes: a compare-and-set `UPDATE … RETURNING` whose row says who won.

A winning transition, in the same transaction:
- stamps the dates and lease of the task (same statement);
- on a claim, marks a pending poll `processing` (only when the RETURNING row says it is pending);
- on a terminal state, writes the task's Event row (rendered when read, not now), decrements its
  poll's `open_tasks` with RETURNING (the transition that reaches 0 completes the poll: no poll
  lock for every other task), and derives its session's state for `session.init`;
- after commit, wakes the tasks it was blocking once their last blocker has ended.

Lock order, everywhere: task rows (by id when several) → poll → session → source. No transaction
takes a task lock while holding a poll, session or source lock, so transitions cannot deadlock.
Row locks are `FOR NO KEY UPDATE` (what an UPDATE of non-key columns takes), never `FOR UPDATE`:
they do not conflict with the `KEY SHARE` locks that foreign-key checks of concurrent inserts take
at commit (a new poll's tasks reference the session's init task, its session and its source).
"""
import hashlib
import json
import uuid
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.utils import timezone

from ..choices import (
    SESSION_TRANSITIONS,
    TASK_ACTIVE,
    TASK_TERMINAL,
    TASK_TRANSITIONS,
    PollState,
    SessionState,
    SourceState,
    TaskState,
)
from ..ids import uuid7
from ..models import Event, Poll, Result, Session, Source, Task
from ..notify import notify_on_commit
from .awaiting import poll_channel, session_channel, task_channel
from .dispatch import send_run_tasks
from .events import record_event
from .rows import guarded_inserts, insert_rows, instance

__all__ = ["transition_task", "claim_task", "read_task", "complete_polls", "wake_blocked", "SESSION_INIT"]

SESSION_INIT = "session.init"

TASK = Task._meta.db_table
POLL = Poll._meta.db_table
THROUGH = Task.blocked_by.through._meta.db_table
KEY = "tasks_app_key"
EVENT = Event._meta.db_table
SOURCE = Source._meta.db_table
STORAGE = "tasks_app_storageconfig"
ORGANISATION = "tasks_app_organisation"
WEBHOOK = "tasks_app_webhookconfig"


# What a held `POST /polls` renders of its poll, its tasks and results (serializers.py render_poll):
# read by polls.completed_poll, or sent by the ending that completes it (_completion_notice).
POLL_COLUMNS = ("id", "organisation_id", "key_id", "user_id", "source_id", "session_id", "subscription_id",
                "requestor", "state", "date_created", "date_started", "date_completed")
POLL_TASK_COLUMNS = ("id", "state", "type", "target", "error")
POLL_RESULT_COLUMNS = ("id", "organisation_id", "poll_id", "task_id", "identifier", "url", "type", "checksum", "size",
                       "signed_url", "signed_url_expires", "state", "date_created", "date_consumed", "date_deleted")


def _decrement_poll(poll_id_sql: str) -> str:
    """Close n tasks of a poll (params: n, n, n, now, now, then the id's if `poll_id_sql` is `%s`):
    the statement that brings `open_tasks` to 0 completes the poll and says so by RETURNING 0; an
    earlier one starts a poll still `pending` (its task ran without a claim: runner.py)."""
    return (f"UPDATE {POLL} SET open_tasks = open_tasks - %s,"
            f" state = CASE WHEN open_tasks <= %s THEN 'completed' WHEN state = 'pending' THEN 'processing'"
            f" ELSE state END,"
            f" date_completed = CASE WHEN open_tasks <= %s THEN %s ELSE date_completed END,"
            f" date_started = COALESCE(date_started, %s)"
            f" WHERE id = {poll_id_sql} AND open_tasks > 0 RETURNING open_tasks, organisation_id, key_id,"
            f" {', '.join(name for name in POLL_COLUMNS if name not in ('organisation_id', 'key_id'))}")


def _insert_event(kind: str, action_sql: str, source: str) -> str:
    """`INSERT` of an Event per row of `source` (a CTE that has organisation_id, key_id and id),
    RETURNING its id (params: the event's id, its date)."""
    return (f"INSERT INTO {EVENT} (id, organisation_id, key_id, type, action, object_id, data, state, retries,"
            f" date_created) SELECT %s::uuid, organisation_id, key_id, '{kind}', {action_sql}, id::text, NULL,"
            f" 'pending', 0, %s::timestamptz FROM {source} RETURNING id")


POLL_COMPLETED_EVENT = _insert_event("poll", "'completed'", "p WHERE open_tasks = 0")
# The webhook deliveries of the ending's events, when the key has a webhook target (params: max
# attempts, when the row falls due, its date): what plan_deliveries writes for them otherwise.
EVENT_DELIVERIES = (
    "INSERT INTO tasks_app_webhookdelivery (event_id, config_id, state, attempts, max_attempts, next_attempt_at,"
    " date_created) SELECT x.id, t.webhook_target, 'pending', 0, %s, %s::timestamptz, %s::timestamptz"
    " FROM t, (SELECT id FROM e UNION ALL SELECT id FROM pe) AS x WHERE t.webhook_target IS NOT NULL"
)


def _db(model, field: str, value):
    # The thread's own connection, not the `django.db.connection` proxy: fields consult it for
    # every value, and each look-up through the proxy goes through asgiref's Local.
    return model._meta.get_field(field).get_db_prep_value(value, connections[DEFAULT_DB_ALIAS], prepared=False)


def _in(values) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"  # state names are our constants


ACTIVE = _in(TASK_ACTIVE)
# The state of a task found by its id, as an expression no index can answer. Written plainly,
# `id = $1 AND state IN ('pending')` lets the planner pick the partial index of active tasks
# when its statistics were gathered on a quiet table (one pending task, by their account): an
# ending then read every pending task of a backlog to find its own (DECISIONS 140).
ROW_STATE = "(state || '')"
# Extra columns a transition returns with the row, so that nothing is read again afterwards.
RETURNING_CLAIM = f"""
    (SELECT state FROM {POLL} p WHERE p.id = {TASK}.poll_id) AS poll_state,
    -- The blockers' states filter the aggregates, never the join: a state condition in WHERE lets
    -- the planner start from the partial index of active tasks (thousands under a backlog, one
    -- row after an ANALYZE of a quiet table) instead of this task's few blocker links.
    (SELECT count(*) FILTER (WHERE x.state IN {ACTIVE}) FROM {THROUGH} b JOIN {TASK} x ON x.id = b.to_task_id
        WHERE b.from_task_id = {TASK}.id) AS active_blockers,
    (SELECT count(*) FILTER (WHERE x.state = 'failed') FROM {THROUGH} b JOIN {TASK} x ON x.id = b.to_task_id
        WHERE b.from_task_id = {TASK}.id) AS failed_blockers,
    (SELECT max(COALESCE(x.error, '')) FILTER (WHERE x.state = 'failed' AND x.type = '{SESSION_INIT}')
        FROM {THROUGH} b JOIN {TASK} x ON x.id = b.to_task_id WHERE b.from_task_id = {TASK}.id) AS failed_init_error,
    (SELECT s.identifier FROM {SOURCE} s WHERE s.id = {TASK}.source_id) AS source_identifier,
    (SELECT s.state FROM {SOURCE} s WHERE s.id = {TASK}.source_id) AS source_state,
    (SELECT k.retrieval_protocol FROM {KEY} k WHERE k.id = {TASK}.key_id) AS retrieval_protocol,
    -- the key's valid storage config, else the organisation's valid default (None: the server's)
    (SELECT COALESCE(
        (SELECT c.id FROM {STORAGE} c WHERE c.id = k.storage_config_id AND c.state = 'valid'),
        (SELECT c.id FROM {STORAGE} c WHERE c.id = o.storage_config_default_id AND c.state = 'valid'))
     FROM {KEY} k JOIN {ORGANISATION} o ON o.id = k.organisation_id WHERE k.id = {TASK}.key_id) AS storage_config_ref
"""
RETURNING_TERMINAL = f"""
    EXISTS (SELECT 1 FROM {THROUGH} b WHERE b.to_task_id = {TASK}.id) AS blocks_any,
    (SELECT COALESCE(
        (SELECT c.id FROM {WEBHOOK} c WHERE c.id = k.webhook_config_id AND c.state <> 'deactivated'),
        (SELECT c.id FROM {WEBHOOK} c WHERE c.id = o.webhook_config_default_id AND c.state <> 'deactivated'))
     FROM {KEY} k JOIN {ORGANISATION} o ON o.id = k.organisation_id WHERE k.id = {TASK}.key_id) AS webhook_target
"""


def transition_task(
    task_id,
    to: str,
    *,
    error: str | None = None,
    allowed_from: tuple[str, ...] | None = None,
    lease_expired_at=None,
    has_results: bool = False,
    rows=(),
    on_win=None,
    alone: bool = False,
    started=None,
) -> Task | None:
    """Move a task to `to` if it is in one of `allowed_from`; return it, or None if we lost.

    `lease_expired_at`: also require that a `processing` task's lease ran out before that moment
    (a claim may take over a dead worker's task; the reaper fails only abandoned tasks).
    `rows`: groups of unsaved rows (a task's results and deliveries) written only if the transition
    wins, in its transaction (on Postgres by its statement, when they are few).
    `on_win(task)`: called inside the transaction when the transition wins.
    `alone`: the caller knows that nothing else must commit with this ending (the task is not a
    session's init, whose ending also changes its session): on Postgres the ending is then its one
    statement sent on its own, without BEGIN and COMMIT, and `on_win` runs just after it (it may
    only register after-commit work).
    `started`: the ending of a run that made no claim (runner.py): the run's start and attempt are
    recorded with it."""
    now = timezone.now()
    sets, params = ["state = %s"], [to]
    if to == TaskState.PROCESSING:
        lease = now + timedelta(seconds=settings.RICLOUD_TASK_LEASE_SECONDS)
        sets += ["date_started = COALESCE(date_started, %s)", "attempts = attempts + 1", "lease_expires = %s"]
        params += [_db(Task, "date_started", now), _db(Task, "lease_expires", lease)]
        extra = RETURNING_CLAIM
    elif to == TaskState.SUSPENDED:
        # Waiting for blockers is not a spent attempt: give back the claim's increment.
        sets += ["lease_expires = NULL", "attempts = attempts - 1"]
        extra = ""
    else:
        # An ended task never runs again: its secret arguments (a v2 password) go with the ending.
        sets += ["date_completed = %s", "lease_expires = NULL", "error = %s", "secrets = NULL"]
        params += [_db(Task, "date_completed", now), error]
        if has_results:
            sets.append("has_results = %s")
            params.append(True)
        if started is not None:
            sets += ["date_started = COALESCE(date_started, %s)", "attempts = attempts + 1"]
            params.append(_db(Task, "date_started", started))
        extra = RETURNING_TERMINAL
    where = f"id = %s AND {ROW_STATE} IN {_in(allowed_from or TASK_TRANSITIONS[to])}"
    params.append(_db(Task, "id", task_id))
    if lease_expired_at is not None:
        where += " AND (state <> 'processing' OR lease_expires < %s)"
        params.append(_db(Task, "lease_expires", lease_expired_at))
    update = f"UPDATE {TASK} SET {', '.join(sets)} WHERE {where} RETURNING *" + (f", {extra}" if extra else "")
    if to == TaskState.PROCESSING and on_win is None and connection.vendor == "postgresql" \
            and not connection.in_atomic_block:
        # A claim is one statement (_pg_transition): sent on its own it is its own transaction,
        # without the BEGIN and COMMIT round trips of an atomic block.
        return _pg_transition(update, params, to, now)
    groups = [list(group) for group in rows if group]
    fold = connection.vendor == "postgresql" and to in TASK_TERMINAL and sum(map(len, groups)) <= ROWS_IN_STATEMENT
    if fold and alone and connection.vendor == "postgresql" and not connection.in_atomic_block:
        task = _pg_transition(update, params, to, now, groups)
        if task is not None:
            if on_win is not None:
                on_win(task)
            _after_transition(task, now, in_statement=True, rows=groups)  # on-commit work runs at once
        return task
    with transaction.atomic():
        if connection.vendor == "postgresql":
            task = _pg_transition(update, params, to, now, groups if fold else ())
        else:
            found = list(Task.objects.raw(update, params))
            task = found[0] if found else None
        if task is None:
            return None
        if groups and not fold:
            insert_rows(*groups)
        if on_win is not None:
            on_win(task)
        _after_transition(task, now, in_statement=connection.vendor == "postgresql", rows=groups if fold else None)
        return task


# Up to this many rows ride in an ending's statement (each count of rows is a statement of its own
# to prepare); more are inserted after it, in the same transaction.
ROWS_IN_STATEMENT = 8


def _pg_transition(update: str, params: list, to: str, now, rows=()) -> Task | None:
    """On Postgres the transition and what must change with it are one statement: a claim also
    starts a pending poll; an ending also writes the task's event, decrements the poll's
    open-task counter (returning what is left) and writes `rows` (its results and deliveries)."""
    stamp = _db(Poll, "date_started", now)
    prefix = ""
    if to == TaskState.PROCESSING:
        # A claim lost in a Postgres crash only means the task is claimed again: no flush wait.
        prefix = "SET LOCAL synchronous_commit TO OFF; "
        sql = (f"WITH t AS ({update}),"
               f" p AS (UPDATE {POLL} SET state = 'processing', date_started = %s"
               f"   WHERE id = (SELECT poll_id FROM t) AND state = 'pending' RETURNING id)"
               f" SELECT t.* FROM t")
        params = params + [stamp]
    elif to in TASK_TERMINAL:
        # The task's event, the poll's counter and, when this ending closes the poll, its
        # `poll.completed` event, the events' webhook deliveries, and the task's results and
        # deliveries (`rows`): one round trip.
        inserts, values = guarded_inserts(rows, "t")
        sql = (f"WITH t AS ({update}),"
               f" e AS ({_insert_event('task', 'state', 't')}),"
               f" p AS ({_decrement_poll('(SELECT poll_id FROM t)')}),"
               f" pe AS ({POLL_COMPLETED_EVENT}),"
               f" wd AS ({EVENT_DELIVERIES})"
               + "".join(f", w{number} AS ({insert})" for number, insert in enumerate(inserts)) +
               " SELECT t.*, (SELECT id FROM e) AS event_id, (SELECT open_tasks FROM p) AS poll_open_tasks,"
               " (SELECT id FROM pe) AS poll_event_id,"
               f" (SELECT json_build_array({', '.join(POLL_COLUMNS)}) FROM p WHERE open_tasks = 0"
               f"   AND (SELECT count(*) FROM {TASK} x WHERE x.poll_id = p.id) = 1) AS poll_alone FROM t")
        due = now + timedelta(seconds=settings.RICLOUD_WEBHOOK_FIRST_ATTEMPT_GRACE_SECONDS)
        params = params + [uuid7(), stamp, 1, 1, 1, stamp, stamp, uuid7(), stamp, settings.RICLOUD_WEBHOOK_MAX_ATTEMPTS,
                           _db(Poll, "date_started", due), stamp] + values
    else:
        sql = update
    with connection.cursor() as cursor:
        cursor.execute(prefix + prepared(sql, len(params)), params)
        return _task_from(cursor)


def _task_from(cursor) -> Task | None:
    """The Task of the cursor's row (None: no row); columns that are not fields become attributes."""
    row = cursor.fetchone()
    if row is None:
        return None
    values = dict(zip([column.name for column in cursor.description], row, strict=True))
    if isinstance(values["payload"], str):
        values["payload"] = json.loads(values["payload"])
    return instance(Task, values)  # not Model.__init__: the worker's largest cost after the database


def prepared(sql: str, count: int) -> str:
    """`EXECUTE` of a server-side prepared statement for `sql` (`%s` placeholders), prepared once
    per connection. The transition statements plan in ~0.5 ms and run in ~0.1 ms: planning them
    once is most of their cost. RICLOUD_PREPARED_STATEMENTS=0 turns it off (e.g. behind a pooler
    in transaction mode, which does not keep a session's prepared statements)."""
    if not settings.RICLOUD_PREPARED_STATEMENTS:
        return sql
    # Per database session: the thread's own wrapper (django.db.connection is a proxy shared by
    # every thread), forgotten when it reconnects (_forget_prepared).
    names = connections[DEFAULT_DB_ALIAS].__dict__.setdefault("ricloud_prepared", {})
    name = names.get(sql)
    if name is None:
        name = "ricloud_" + hashlib.sha1(sql.encode("utf-8")).hexdigest()[:20]
        parts = sql.split("%s")
        text = parts[0] + "".join(f"${number}{part}" for number, part in enumerate(parts[1:], 1))
        with connection.cursor() as cursor:
            cursor.execute(f"PREPARE {name} AS {text}")
        names[sql] = name
    return f"EXECUTE {name} (" + ", ".join(["%s"] * count) + ")"


@receiver(connection_created)
def _forget_prepared(sender, connection, **kwargs) -> None:
    """A new database session has no prepared statements yet."""
    connection.__dict__.pop("ricloud_prepared", None)


def read_task(task_id) -> Task | None:
    """The task with what a claim returns (its blockers, source, retrieval protocol and storage),
    read without claiming it; None if there is no such task."""
    sql = f"SELECT {TASK}.*, {RETURNING_CLAIM} FROM {TASK} WHERE {TASK}.id = %s"
    params = [_db(Task, "id", task_id)]
    if connection.vendor != "postgresql":
        found = list(Task.objects.raw(sql, params))
        return found[0] if found else None
    with connection.cursor() as cursor:
        cursor.execute(prepared(sql, 1), params)
        return _task_from(cursor)


# The columns of a row carried by a task's message (`run_row`); `task_from_row` fills in the rest
# as `read_task` would find them for a task just created and never run.
ROW_IDS = ("id", "session_id", "poll_id")
ROW_TASK_COLUMNS = ("id", "organisation_id", "key_id", "user_id", "source_id", "session_id", "poll_id", "source_type",
                    "type", "target", "api_version", "payload")
ROW_COLUMNS = ROW_TASK_COLUMNS + ("source_identifier", "source_state", "retrieval_protocol")
ROW_FRESH = {"state": TaskState.PENDING, "attempts": 0, "lease_expires": None, "secrets": None, "error": None,
             "has_results": False, "results_consumed": False, "date_started": None, "date_completed": None,
             "active_blockers": 0, "failed_blockers": 0, "failed_init_error": None, "storage_config_ref": None}


def run_row(task: Task, *, key, source, blocked: bool) -> dict | None:
    """What `read_task` would return for a task just created, as JSON for its message, when the
    task will run at once (runner.py: no claim) and that row says all it needs: no blocker, not a
    session's init, no secret argument (never in a message, even sealed), a handler that cannot
    wait for this run, and no storage config on its key or organisation (whose validity only the
    database knows). None: the worker reads the task."""
    from workers.handlers import get_handler, may_wait

    if (blocked or task.type == SESSION_INIT or task.secrets is not None or source is None
            or key.storage_config_id is not None or key.organisation.storage_config_default_id is not None
            or get_handler(task.source_type, task.type) is None
            or may_wait(task.source_type, task.type, task.payload)):
        return None
    row = {name: getattr(task, name) for name in ROW_TASK_COLUMNS}
    for name in ROW_IDS:
        row[name] = None if row[name] is None else str(row[name])
    row.update(source_identifier=source.identifier, source_state=source.state,
               retrieval_protocol=key.retrieval_protocol)
    return row


def task_from_row(row: dict) -> Task | None:
    """The task a message's row describes (`run_row`), as `read_task` would have read it; None if
    the row is not one."""
    try:
        values = {name: row[name] for name in ROW_COLUMNS}
        for name in ROW_IDS:
            values[name] = None if values[name] is None else uuid.UUID(values[name])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return instance(Task, {**values, **ROW_FRESH, "poll_state": PollState.PENDING if values["poll_id"] else None})


def claim_task(task_id) -> Task | None:
    """pending/suspended → processing, or take over a processing task whose lease ran out.
    The returned task carries `active_blockers`, `failed_blockers` and `failed_init_error` (None
    unless its session's init task failed)."""
    return transition_task(task_id, TaskState.PROCESSING, lease_expired_at=timezone.now())


def _after_transition(task: Task, now, *, in_statement: bool, rows=None) -> None:
    """What a transition changes besides the task; `in_statement`: the poll update and the task
    event were already part of the transition's statement (_pg_transition), with `rows` (None:
    its rows, if any, were written apart)."""
    if task.state == TaskState.PROCESSING:
        if task.poll_id and not in_statement and task.poll_state == PollState.PENDING:
            Poll.objects.filter(id=task.poll_id, state=PollState.PENDING).update(
                state=PollState.PROCESSING, date_started=now
            )
        return
    if task.state not in TASK_TERMINAL:
        return
    if not task.poll_id and task.api_version == 3 and task.type != SESSION_INIT:
        # Held requests wait on their poll's or session's channel; a task's own channel is for
        # tasks outside polls (the config tests).
        notify_on_commit(task_channel(task.id))
    if in_statement:  # the statement wrote the event and, with a target, its delivery rows
        if task.webhook_target:  # their first attempts, after commit
            first_attempts_on_commit([task.event_id])
    else:
        event = Event.objects.create(
            organisation_id=task.organisation_id, key_id=task.key_id, type="task", action=task.state,
            object_id=str(task.id), data=None,
        )
        if task.webhook_target:
            _deliver_on_commit([event], config_id=task.webhook_target)
    if task.blocks_any:
        transaction.on_commit(partial(wake_blocked, task.id))
    if task.poll_id:
        if in_statement:
            if task.poll_open_tasks == 0:
                _poll_completed(task.poll_id, task.organisation_id, task.key_id, task.webhook_target or False,
                                event_id=task.poll_event_id, notice=_completion_notice(task, rows))
        else:
            complete_polls({task.poll_id: 1}, now, webhook_target=task.webhook_target or False)
    if task.type == SESSION_INIT and task.session_id:
        _derive_session(task)


def first_attempts_on_commit(event_ids) -> None:
    from .webhooks import first_attempts_on_commit as send

    send(event_ids)


def _deliver_on_commit(events, config_id=None) -> None:
    """Schedule the events' webhook deliveries in this transaction; `config_id`: the key's
    effective webhook config when the caller knows it (None: look it up)."""
    from .webhooks import enqueue_deliveries

    enqueue_deliveries(events, config_id=config_id)


def complete_polls(closed: dict, now, *, webhook_target=True) -> None:
    """Decrement `open_tasks` of each poll by the number of its tasks that just ended (polls in id
    order); the statement that brings a poll to 0 completes it and records `poll.completed`.
    `webhook_target`: whether the key has a webhook config (None: look it up)."""
    for poll_id in sorted(closed, key=str):
        n = closed[poll_id]
        with connection.cursor() as cursor:
            cursor.execute(_decrement_poll("%s"), [n, n, n, _db(Poll, "date_completed", now),
                                                   _db(Poll, "date_started", now), _db(Poll, "id", poll_id)])
            row = cursor.fetchone()
        if row is not None and row[0] == 0:
            _poll_completed(poll_id, row[1], row[2], webhook_target)


def _poll_completed(poll_id, organisation_id, key_id, webhook_target, event_id=None, notice="1") -> None:
    """The transition that brought the poll to no open task: record `poll.completed` (`event_id`:
    the transition's statement already wrote it), wake waiters (`notice`: what they are sent)."""
    fields = {"organisation_id": organisation_id, "key_id": key_id, "type": "poll", "action": "completed",
              "object_id": str(poll_id), "data": None}
    if event_id:  # and its webhook delivery, when there is a target
        if webhook_target:
            first_attempts_on_commit([event_id])
    elif webhook_target is not False:
        event = Event.objects.create(**fields)
        known = webhook_target if type(webhook_target) is int else None
        _deliver_on_commit([event], config_id=known)
    else:
        Event.objects.create(**fields)
    notify_on_commit(poll_channel(poll_id), notice)


def _completion_notice(task: Task, rows) -> str:
    """What a completed poll's waiters are sent: the poll, its tasks and results as the rows
    `polls.completed_poll` reads (JSON, `polls.poll_from_notice`) when the ending's statement
    returned the poll (`poll_alone`: this ending completed a poll of this one task) and wrote the
    task's results (`rows`, None when they were written apart), so that a held `POST /polls`
    answers without reading them; else "1", a plain wake-up, and waiters read the poll."""
    poll = getattr(task, "poll_alone", None)
    if not poll or rows is None:
        return "1"
    results = sorted((row for group in rows for row in group if isinstance(row, Result)), key=lambda r: r.id)
    return json.dumps([
        poll,
        [[_plain(getattr(task, name)) for name in POLL_TASK_COLUMNS]],
        [[_plain(getattr(result, name)) for name in POLL_RESULT_COLUMNS] for result in results],
    ])


def _plain(value):
    """A column's value as Postgres renders it in JSON (ids as text, times in ISO 8601)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# The tasks a task blocks, their states and how many of their blockers are still active. States
# are tested per row (in the aggregate's FILTER and by the caller), never in WHERE: there they let
# the planner start from the partial index of active tasks, thousands of rows under a backlog
# (and one row in statistics gathered on a quiet table), instead of this task's few links.
WAITING_ON = (
    f"SELECT w.id, w.state, (SELECT count(*) FILTER (WHERE x.state IN {ACTIVE}) FROM {THROUGH} c"
    f"   JOIN {TASK} x ON x.id = c.to_task_id WHERE c.from_task_id = w.id)"
    f" FROM {THROUGH} b JOIN {TASK} w ON w.id = b.from_task_id WHERE b.to_task_id = %s ORDER BY w.id"
)


def wake_blocked(task_id) -> int:
    """After a blocker committed its end: send every task it was blocking whose blockers have all
    ended (each waiting task is woken by its last blocker, not by every one of them)."""
    with connection.cursor() as cursor:
        cursor.execute(WAITING_ON, [_db(Task, "id", task_id)])
        ids = [task for task, state, open_blockers in cursor.fetchall()
               if state in (TaskState.PENDING, TaskState.SUSPENDED) and not open_blockers]
    send_run_tasks(ids)
    return len(ids)


def _derive_session(task: Task) -> None:
    sessions = Session.objects.filter(id=task.session_id)
    if task.state == TaskState.SUCCEEDED:
        # The credentials served the init only: they are dropped as the session leaves `pending`.
        won = sessions.filter(state__in=SESSION_TRANSITIONS[SessionState.ACTIVE]).update(
            state=SessionState.ACTIVE, credentials=None
        )
        if won:
            from .subscriptions import activate_subscriptions

            activate_subscriptions(task.session_id)
        # A validated or once-locked source is usable again; deactivated/blocked stay so.
        Source.objects.filter(id=task.source_id, state__in=(SourceState.UNVALIDATED, SourceState.LOCKED)).update(
            state=SourceState.ACTIVE
        )
        action = "active"
    else:
        won = sessions.filter(state__in=SESSION_TRANSITIONS[SessionState.FAILED]).update(
            state=SessionState.FAILED, error=task.error, credentials=None
        )
        if task.error == "source-locked":
            Source.objects.filter(id=task.source_id).update(state=SourceState.LOCKED)
        action = "failed"
    if won:
        record_event(Session.objects.select_related("source").get(id=task.session_id), action)
        notify_on_commit(session_channel(task.session_id))

"""Polls: one task per requested item (`info`, `data`, `file`), blocked as the work requires."""
import json
import time
from datetime import datetime
from types import SimpleNamespace

from django.db import connection, transaction

from ..choices import TASK_TERMINAL, SessionState
from ..errors import APIError
from ..models import Key, Poll, Result, Session, Source, Task, User
from .dispatch import send_on_commit
from .events import lazy_event
from .permissions import require_scopes
from .rows import guarded_inserts, insert_rows, instance
from .tasks import TaskSpec, build_tasks
from .transitions import POLL_COLUMNS, POLL_RESULT_COLUMNS, POLL_TASK_COLUMNS, SESSION_INIT, prepared, run_row
from .webhooks import deliveries_on_commit, plan_deliveries

__all__ = [
    "create_poll", "create_poll_at_once", "poll_from_notice", "read_session", "lock_session", "check_session_usable",
    "expand_payload", "completed_poll", "flush_wal", "FLUSH_WAL", "MAX_POLL_ITEMS",
]

MAX_POLL_ITEMS = 1000


def _invalid(field: str, message: str) -> APIError:
    return APIError("invalid-parameter", "One or more parameters failed validation.", params={"payload": {field: [message]}})


def _expand(requested: list[str], known: tuple[str, ...], field: str) -> list[str]:
    if "*" in requested:
        return list(known)
    unknown = [item for item in requested if item not in known]
    if unknown:
        raise _invalid(field, f"Unknown for this source type: {', '.join(unknown)}. Known: {', '.join(known)}.")
    return list(dict.fromkeys(requested))


def check_session_usable(session: Session) -> None:
    if session.state == SessionState.EXPIRED:
        raise APIError("session-expired", "The session has expired; create a new one.")
    if session.state == SessionState.FAILED:
        raise APIError(
            "invalid-parameter",
            "The session failed to initialise; create a new one.",
            params={"session": [f"Session failed with error {session.error!r}."]},
        )


def expand_payload(source: Source, payload: dict) -> tuple[list[str], list[str], list[str]]:
    """The info types, data types and files a payload asks of a source, checked against its catalogue."""
    from workers.handlers import catalogue

    info_known, data_known = catalogue(source.type)
    info_types = _expand(payload.get("info_types") or [], info_known, "info_types")
    data_types = _expand(payload.get("data_types") or [], data_known, "data_types")
    files = list(dict.fromkeys(payload.get("files") or []))
    total = len(info_types) + len(data_types) + len(files)
    if total == 0:
        raise _invalid("non_field_errors", "Request at least one of info_types, data_types or files.")
    if total > MAX_POLL_ITEMS:
        raise _invalid("non_field_errors", f"A poll may request at most {MAX_POLL_ITEMS} items; got {total}.")
    return info_types, data_types, files


_COLUMNS: dict = {}


def _columns(model, alias: str) -> tuple[list, str]:
    if (model, alias) not in _COLUMNS:
        fields = model._meta.concrete_fields
        _COLUMNS[model, alias] = fields, ", ".join(f"{alias}.{connection.ops.quote_name(field.column)}" for field in fields)
    return _COLUMNS[model, alias]


# Dates that arrive as ISO 8601 text when the rows come as JSON (the read's arrays, a notice).
POLL_DATES = ("date_created", "date_started", "date_completed")
RESULT_DATES = ("signed_url_expires", "date_created", "date_consumed", "date_deleted")


def _rows_json(model, columns) -> str:
    """Its rows of the poll as one JSON array of arrays, in id order."""
    return (f"(SELECT COALESCE(json_agg(json_build_array({', '.join(columns)}) ORDER BY id), '[]')::text"
            f" FROM {model._meta.db_table} WHERE poll_id = p.id)")


COMPLETED_POLL_SQL = (f"SELECT {', '.join(POLL_COLUMNS)}, {_rows_json(Task, POLL_TASK_COLUMNS)},"
                      f" {_rows_json(Result, POLL_RESULT_COLUMNS)} FROM {Poll._meta.db_table} p"
                      f" WHERE id = %s AND state = 'completed'")


def completed_poll(poll_id) -> tuple | None:
    """(poll, tasks, results) as rows for render_poll if the poll is completed, else None: what a
    held `POST /polls` checks on each wake-up and answers with. One prepared statement (its tasks
    and results as JSON arrays), no model instances: the ORM's three queries and their building
    were most of the cost of answering."""
    if connection.vendor != "postgresql":
        poll = Poll.objects.filter(id=poll_id, state="completed").first()
        if poll is None:
            return None
        return (poll, list(poll.tasks.only(*POLL_TASK_COLUMNS, "poll_id").order_by("id")),
                list(Result.objects.filter(poll_id=poll_id).order_by("id")))
    with connection.cursor() as cursor:
        cursor.execute(prepared(COMPLETED_POLL_SQL, 1), [poll_id])
        row = cursor.fetchone()
    if row is None:
        return None
    return _poll_rows(dict(zip(POLL_COLUMNS, row[:-2], strict=True)), json.loads(row[-2]), json.loads(row[-1]))


def poll_from_notice(message, poll_id) -> tuple | None:
    """`completed_poll`'s rows from the message that woke a poll's waiters, when its worker sent
    the completed poll (transitions.py `_completion_notice`: the poll's only task ended it); None
    for a plain wake-up, or anything else, which the waiter then checks in the database."""
    try:
        poll, tasks, results = json.loads(message)
        values = dict(zip(POLL_COLUMNS, poll, strict=True))
        if values["id"] != str(poll_id) or values["state"] != "completed":
            return None
        for name in POLL_DATES:
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        return _poll_rows(values, tasks, results)
    except (TypeError, ValueError, KeyError):
        return None


def _poll_rows(poll: dict, tasks: list, results: list) -> tuple:
    tasks = [SimpleNamespace(**dict(zip(POLL_TASK_COLUMNS, values, strict=True))) for values in tasks]
    rows = []
    for values in results:
        result = dict(zip(POLL_RESULT_COLUMNS, values, strict=True))
        for name in RESULT_DATES:
            if result[name] is not None:
                result[name] = datetime.fromisoformat(result[name])
        rows.append(SimpleNamespace(**result))
    return SimpleNamespace(**poll), tasks, rows


def _instance(model, fields, values):
    return instance(model, {
        field.attname: field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, values, strict=True)
    })


def lock_session(organisation_id, session_id) -> Session | None:
    """A session of the organisation with its source and user, held `FOR SHARE` until the caller's
    transaction ends (one query): a concurrent DELETE /sessions waits for the poll being created,
    or came first and the poll sees the session expired. Call it inside `transaction.atomic()`."""
    if connection.vendor != "postgresql":
        return Session.objects.select_related("source", "user").filter(
            organisation_id=organisation_id, pk=session_id).first()
    session = _session_with_source_and_user(organisation_id, session_id, " FOR SHARE OF s")
    if session is not None:
        session.locked = True
    return session


def read_session(organisation_id, session_id) -> Session | None:
    """`lock_session`'s session, source and user, read without a lock or a transaction (Postgres)."""
    return _session_with_source_and_user(organisation_id, session_id)


def _session_with_source_and_user(organisation_id, session_id, lock: str = "") -> Session | None:
    session_fields, session_columns = _columns(Session, "s")
    source_fields, source_columns = _columns(Source, "r")
    user_fields, user_columns = _columns(User, "u")
    sql = (f"SELECT {session_columns}, {source_columns}, {user_columns} FROM {Session._meta.db_table} s"
           f" JOIN {Source._meta.db_table} r ON r.id = s.source_id JOIN {User._meta.db_table} u ON u.id = s.user_id"
           f" WHERE s.organisation_id = %s AND s.id = %s{lock}")
    with connection.cursor() as cursor:
        cursor.execute(prepared(sql, 2), [organisation_id, session_id])
        row = cursor.fetchone()
    if row is None:
        return None
    a, b = len(session_fields), len(session_fields) + len(source_fields)
    session = _instance(Session, session_fields, row[:a])
    session.source = _instance(Source, source_fields, row[a:b])
    session.user = _instance(User, user_fields, row[b:])
    return session


def _lock_session_usable(session: Session) -> Session:
    """Hold the session (FOR SHARE, lock_session) while its poll is created, and check it again
    under that lock, unless the caller already locked it; returns it as read under the lock.
    Taking a session share lock before inserting new task rows cannot deadlock: new rows are
    locked by nobody else."""
    if not getattr(session, "locked", False):
        session = lock_session(session.organisation_id, session.id) or session
        check_session_usable(session)
    return session


class _Plan(SimpleNamespace):
    """A poll's unsaved rows: `poll`, `tasks` (info and data), `files_tasks`, their `blocks` and
    `files_blocks`, `events`, and whether it waits for the session's init (`blocked`)."""

    def sent(self) -> list[Task]:
        """The tasks sent once the rows commit; files blocked by data tasks wait for them."""
        return self.tasks + (self.files_tasks if not any(task.type == "data" for task in self.tasks) else [])


def _plan(*, key: Key, session: Session, source: Source | None, payload: dict, requestor: str = "api",
          subscription=None) -> _Plan:
    """Validate the payload against the source type's catalogue and the key's scopes, and build the
    poll's rows."""
    check_session_usable(session)
    source = source or session.source
    info_types, data_types, files = expand_payload(source, payload)
    service = source.type.split(".")[0]
    task_types = [kind for kind, items in (("info", info_types), ("data", data_types), ("file", files)) if items]
    require_scopes(
        key=key,
        user=session.user,
        wanted=[f"source_type:{source.type}"]
        + [f"task_type:{service}.{kind}" for kind in task_types]
        + [f"data_type:{item}" for item in info_types + data_types],
    )

    shared = {name: payload[name] for name in ("mock", "since", "until") if name in payload}
    init = None
    if session.state == SessionState.PENDING:  # an active session's init task has ended
        init = Task.objects.filter(session_id=session.id, type=SESSION_INIT).exclude(state__in=TASK_TERMINAL).first()
    waits_for_session = [init] if init else []
    specs = [TaskSpec("info", item, shared, waits_for_session) for item in info_types]
    specs += [TaskSpec("data", item, shared, waits_for_session) for item in data_types]
    poll = Poll(
        organisation_id=key.organisation_id, key=key, user_id=session.user_id, source=source, session=session,
        payload=payload, requestor=requestor, subscription=subscription,
        open_tasks=len(info_types) + len(data_types) + len(files),
    )
    context = {"key": key, "user": session.user, "source": source, "session": session, "poll": poll}
    tasks, blocks, events = build_tasks(specs, **context)
    files_tasks, files_blocks, files_events = [], [], []
    if files:
        # Files named by data tasks of this same poll can only be fetched after those run.
        # They are not sent now when data tasks block them: the last of those wakes them.
        data_tasks = [task for task in tasks if task.type == "data"]
        files_tasks, files_blocks, files_events = build_tasks(
            [TaskSpec("file", file_id, shared, waits_for_session + data_tasks) for file_id in files], **context)
    events = [*events, *files_events, lazy_event(poll, "created")]
    return _Plan(poll=poll, source=source, tasks=tasks, files_tasks=files_tasks, blocks=blocks,
                 files_blocks=files_blocks, events=events, blocked=bool(waits_for_session))


def _created(plan: _Plan, key: Key, source) -> Poll:
    """Once the plan's rows are written (in the current transaction, or committed): its tasks'
    messages after commit, and the poll for the response. `source`: the source's identifier and
    state as of the write (they travel in the tasks' rows)."""
    sent = plan.sent()
    # A task that will run at once carries its row: its worker need not read it first.
    rows = {str(task.id): run_row(task, key=key, source=source, blocked=plan.blocked) for task in sent}
    send_on_commit([task.id for task in sent], {task_id: row for task_id, row in rows.items() if row})
    poll = plan.poll
    poll.created_tasks = sorted(plan.tasks + plan.files_tasks, key=lambda t: t.id)  # for the response
    return poll


def create_poll(
    *, key: Key, session: Session, source: Source | None, payload: dict, requestor: str = "api", subscription=None
) -> Poll:
    """Validate the payload against the source type's catalogue, then create the poll and its tasks."""
    plan = _plan(key=key, session=session, source=source, payload=payload, requestor=requestor,
                 subscription=subscription)
    # Part of the caller's transaction when there is one (POST /polls locks the session in it):
    # no savepoint, whose two round trips would buy nothing, since an error fails the request.
    with transaction.atomic(savepoint=False):
        locked = _lock_session_usable(session)
        deliveries = plan_deliveries(plan.events, key=key)
        insert_rows([plan.poll], plan.tasks, plan.files_tasks, plan.blocks, plan.files_blocks, plan.events, deliveries)
        deliveries_on_commit(deliveries)
        source = plan.source
        return _created(plan, key, locked.source if locked.source_id == source.id else source)


# POST /polls on an active session, in one statement (create_poll_at_once).
AT_ONCE_MAX_TASKS = 4  # larger polls (and their statement shapes) take the transaction
KNOWN_SESSIONS_MAX = 10_000
_known_sessions: dict = {}  # (organisation id, session id) → the session as first read (read_session)
# The session as it was read (its user and source, and the source's type and identifier, which the
# rows and their validation took from the process's copy), still `active`, share-locked.
AT_ONCE_GUARD = (f"SELECT r.state FROM {Session._meta.db_table} s JOIN {Source._meta.db_table} r ON r.id = s.source_id"
                 f" WHERE s.id = %s AND s.organisation_id = %s AND s.state = 'active' AND s.user_id = %s"
                 f" AND s.source_id = %s AND r.type = %s AND r.identifier = %s FOR SHARE OF s")


# Sent before a statement in the same query string, which Postgres runs as one implicit transaction:
# its commit returns once written, without waiting for the WAL flush.
NO_FLUSH = "SET LOCAL synchronous_commit TO off; "


def create_poll_at_once(*, key: Key, session_id, payload: dict, durable: bool = True, announce=None) -> Poll | None:
    """POST /polls on an active session as one statement, its own transaction: the session's
    share lock and its state check (the guard), the poll, its tasks, events and deliveries, where
    `create_poll` takes BEGIN, the lock, the inserts and COMMIT, four round trips. What the rows
    need of the session, its source and user does not change once written (ids, the source's
    type and identifier), so it is read once per process (`_known_sessions`), and the guard
    checks it all the same (a reset test backend may give a new session an old one's id, with
    another user and source): it writes only if the session is still `active` and still what
    was read, and returns the source's state, which the tasks' messages carry. None, having written
    nothing: the caller takes `create_poll`, which also words every error (a session no longer
    active, an invalid payload), as before. Postgres only, outside a transaction.

    `durable` False: the caller reveals the poll only after a later synchronous commit or
    `flush_wal()` (a held POST /polls), so the statement does not wait for its own WAL flush
    (`synchronous_commit` off for it alone; docs/DECISIONS.md 153). `announce(poll_id)`: told
    the poll's id before the statement is sent (a hold subscribes to its channel meanwhile). The
    poll returned has `subscribed_by`, a `time.monotonic()` taken once the statement returned and
    before its tasks were sent."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    known = (key.organisation_id, str(session_id))
    session = _known_sessions.get(known)
    if session is None:
        session = read_session(key.organisation_id, session_id)
        if session is None or session.state != SessionState.ACTIVE:
            return None
        if len(_known_sessions) >= KNOWN_SESSIONS_MAX:
            _known_sessions.clear()
        _known_sessions[known] = session
    try:
        plan = _plan(key=key, session=session, source=None, payload=payload)
    except APIError:
        return None  # create_poll words it, from the session as it is now
    if len(plan.tasks) + len(plan.files_tasks) > AT_ONCE_MAX_TASKS or plan.blocks or plan.files_blocks:
        return None
    if announce is not None:
        announce(plan.poll.id)
    deliveries = plan_deliveries(plan.events, key=key)
    inserts, values = guarded_inserts([group for group in ([plan.poll], plan.tasks, plan.files_tasks, plan.events,
                                                          deliveries) if group], "g")
    sql = f"WITH g AS ({AT_ONCE_GUARD}), " + ", ".join(
        f"w{number} AS ({insert})" for number, insert in enumerate(inserts)) + " SELECT state FROM g"
    with connection.cursor() as cursor:
        guard = [session.id, key.organisation_id, session.user_id, session.source_id, session.source.type,
                 session.source.identifier]
        cursor.execute(("" if durable else NO_FLUSH) + prepared(sql, len(guard) + len(values)), [*guard, *values])
        row = cursor.fetchone()
    if row is None:  # no longer active (or gone): nothing was written
        _known_sessions.pop(known, None)
        return None
    # Before this moment only a transaction that saw the poll committed, while the statement
    # returned, could notify its channel, and the tasks are sent after it: a hold on the channel
    # may trust a subscription confirmed by then (DECISIONS 154).
    plan.poll.subscribed_by = time.monotonic()
    deliveries_on_commit(deliveries)  # outside a transaction: at once
    return _created(plan, key, SimpleNamespace(identifier=session.source.identifier, state=row[0]))


# A transaction of its own that writes one WAL record (a transactional logical-decoding message,
# which any role may emit and which changes no table): Postgres commits a transaction that wrote
# WAL synchronously, flushing the WAL up to its commit record, and with it everything before.
# (A transaction that only takes an id, `SELECT txid_current()`, writes no WAL before its commit
# record, and Postgres does not wait for that record's flush.)
FLUSH_WAL = "SELECT pg_logical_emit_message(true, 'ricloud.flush', '')"


def flush_wal() -> None:
    """Return once everything committed so far is as durable as any synchronous commit
    (`FLUSH_WAL`). What a `durable=False` create wrote is then safe to reveal."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(FLUSH_WAL)

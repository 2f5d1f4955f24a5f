"""RICLOUD_DETERMINISTIC=1: the same scenario gives byte-identical responses on two freshly reset
servers (docs/DECISIONS.md 114-115). Off, nothing here runs: `ids.uuid7` checks one global and
`render_time` one boolean.

Ids. Version-7-shaped UUIDs whose millisecond field is a logical *tick* from a fixed epoch:
- made while serving a request (sessions, polls, tasks, their `created` events, v2 submits): the
  next value of one counter in Redis (`ricloud:deterministic:tick`), shared by every web process
  and restarted by the reset; requests sent one at a time draw ticks in the same order;
- made by a worker running a task (its results, its terminal event, a session's event): derived
  from the task's id and their rank in that run (tick of the task, sequence = rank, the rest a
  hash), so which worker runs what, and when, does not matter;
- `poll.completed`: derived from the poll's id, whichever of its tasks ended last;
- anything else a worker makes on its own (the reaper, subscriptions, asmaster's loop): random.
Ordering by id (every list and nested list is ordered so) is then (tick of the object or of the
task that made it, rank in that run): deterministic.

Timestamps. Every timestamp the server stamped (`date_created`, `date_started`, ...) is rendered
as EPOCH; what a client sent (a subscription's `date_start`) is rendered as sent. The engine's
own clocks (leases, schedules, retention, rate limits) keep real time.
"""
import hashlib
import logging
import threading
import uuid
from datetime import UTC, datetime

from . import ids

__all__ = ["ON", "EPOCH", "EPOCH_TEXT", "configure", "render_time", "derived_id", "TICK_KEY"]

logger = logging.getLogger(__name__)

ON = False
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
EPOCH_TEXT = "2020-01-01T00:00:00Z"
EPOCH_MS = int(EPOCH.timestamp() * 1000)
TICK_KEY = "ricloud:deterministic:tick"
# The expiry of signed download URLs of local results (tasks_app/downloads.py): 2100-01-01.
DOWNLOAD_EXPIRES = 4_102_444_800
_scope = threading.local()  # .parent (the task a worker is running) and .rank
_in_worker = [False]


def render_time(value) -> str | None:
    """A server-stamped timestamp as rendered: EPOCH in deterministic mode, else ISO 8601 UTC (`…Z`)."""
    if value is None:
        return None
    if ON:
        return EPOCH_TEXT
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _make(ms_hex: str, seq: int, seed: str) -> uuid.UUID:
    """`<48-bit ms>7<12-bit seq>8<60 bits of md5(seed)>` (the same formula as EVENT_TRIGGER_SQL)."""
    return uuid.UUID(f"{ms_hex}7{seq:03x}8{hashlib.md5(seed.encode()).hexdigest()[:15]}")


def derived_id(parent: uuid.UUID, label) -> uuid.UUID:
    """An id of something `parent` made: `parent`'s tick, sequence = `label` when it is a rank
    (1..4094), 4095 for a name; the rest a hash of both."""
    seq = min(label, 0xFFE) if isinstance(label, int) else 0xFFF
    return _make(parent.hex[:12], seq, f"{parent}:{label}")


def _random_id() -> uuid.UUID:
    return ids.uuid7_at(datetime.now(UTC))


def next_id() -> uuid.UUID:
    """`ids.uuid7` in deterministic mode (see the module docstring)."""
    parent = getattr(_scope, "parent", None)
    if parent is not None:
        _scope.rank += 1
        return derived_id(parent, _scope.rank)
    if _in_worker[0]:
        return _random_id()
    from .notify import get_redis

    try:
        tick = get_redis().incr(TICK_KEY)
    except Exception:  # noqa: BLE001 - Redis down: ids stay unique, only not reproducible
        logger.warning("deterministic ids: Redis unavailable, using a random id")
        return _random_id()
    return _make(f"{(EPOCH_MS + tick) & ((1 << 48) - 1):012x}", 0, f"tick:{tick}")


# --- worker hooks (connected only in deterministic mode) ---------------------------------------

def _enter_worker(**_) -> None:
    _in_worker[0] = True


def _task_started(sender=None, args=None, **_) -> None:
    from .services.dispatch import RUN_TASK

    _in_worker[0] = True
    _scope.parent = None
    if getattr(sender, "name", None) == RUN_TASK and args:
        try:
            _scope.parent, _scope.rank = uuid.UUID(str(args[0])), 0
        except ValueError:
            pass


def _task_ended(**_) -> None:
    _scope.parent = None


def _poll_completed_id(sender, instance, **_) -> None:
    """`poll.completed` is written by whichever task of the poll ends last: its id comes from the poll."""
    if instance._state.adding and instance.type == "poll" and instance.action == "completed":
        try:
            instance.id = derived_id(uuid.UUID(instance.object_id), "poll.completed")
        except ValueError:
            pass


def configure(on: bool) -> None:
    """Turn the mode on or off for this process (AppConfig.ready, from RICLOUD_DETERMINISTIC)."""
    global ON
    from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init, worker_ready
    from django.db.models.signals import pre_save

    from .models import Event

    ON = bool(on)
    ids.deterministic = next_id if ON else None
    hooks = [(worker_init, _enter_worker, None), (worker_process_init, _enter_worker, None),
             (worker_ready, _enter_worker, None),  # the main process's maintenance loop
             (task_prerun, _task_started, None), (task_postrun, _task_ended, None),
             (pre_save, _poll_completed_id, Event)]
    for signal, receiver, sender in hooks:
        uid = f"determinism-{receiver.__name__}-{id(signal)}"
        if ON:
            signal.connect(receiver, sender=sender, weak=False, dispatch_uid=uid)
        else:
            signal.disconnect(receiver, sender=sender, dispatch_uid=uid)


# poll.completed on Postgres is written inside the ending task's statement (services/transitions.py),
# with an id drawn before the poll is known: in this mode a trigger gives it the poll's derived id
# (derived_id(poll, "poll.completed")). The reset installs it when the mode is on, drops it when off.
EVENT_TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION ricloud_deterministic_event_id() RETURNS trigger AS $$
BEGIN
    NEW.id := (substr(replace(NEW.object_id, '-', ''), 1, 12) || '7fff8'
               || substr(md5(NEW.object_id || ':poll.completed'), 1, 15))::uuid;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS ricloud_deterministic_event_id ON tasks_app_event;
CREATE TRIGGER ricloud_deterministic_event_id BEFORE INSERT ON tasks_app_event FOR EACH ROW
    WHEN (NEW.type = 'poll' AND NEW.action = 'completed') EXECUTE FUNCTION ricloud_deterministic_event_id();
"""
DROP_EVENT_TRIGGER_SQL = "DROP TRIGGER IF EXISTS ricloud_deterministic_event_id ON tasks_app_event"


def sync_database(cursor) -> None:
    """Install (mode on) or drop (off) the poll.completed trigger; Postgres only."""
    cursor.execute(EVENT_TRIGGER_SQL if ON else DROP_EVENT_TRIGGER_SQL)

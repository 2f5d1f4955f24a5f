"""Fast `total_count` and page windows for GET /tasks on large tables.

Counts are append-only: Postgres triggers write *deltas* (`TaskCountDelta`: +n/-n per organisation,
key, state, type and source type) in the same transaction as every task insert, state change and
delete. Nothing updates a shared row on the write path, so writers never wait on each other and
cannot deadlock on counters. `fold_task_counts()` (run by the maintenance loop of every worker,
one at a time under an advisory lock) moves the deltas into the `TaskCount` totals; a count reads
totals and pending deltas in one statement, so it is exact at any moment.

Date bounds become primary-key bounds because task ids are UUIDv7 minted at creation.
"""
import uuid
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction

__all__ = [
    "COUNTED_FILTERS",
    "count_tasks",
    "fold_task_counts",
    "uuid7_floor",
    "uuid7_window",
    "rebuild_task_counts",
    "TRIGGER_SQL",
]

COUNTED_FILTERS = ("key", "state", "type", "source_type")
COLUMNS = {"key": "key_id", "state": "state", "type": "type", "source_type": "source_type"}
# A task's id is minted a moment before its date_created: one minute covers any clock step.
MARGIN = timedelta(minutes=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last millisecond a UUIDv7 timestamp (48 bits) can hold.
UUID7_MAX_MS = (1 << 48) - 1
FOLD_LOCK = 0x7269636C6F7564  # pg advisory lock key: one folder at a time


def count_tasks(organisation_id, values: dict) -> int:
    """Totals plus not-yet-folded deltas, in one statement (one snapshot: never counted twice)."""
    where, params = ["organisation_id = %s"], [organisation_id]
    for name in COUNTED_FILTERS:
        if name in values:
            where.append(f"{COLUMNS[name]} = %s")
            params.append(values[name] if name != "key" else getattr(values[name], "pk", values[name]))
    condition = " AND ".join(where)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(SUM(n), 0) FROM (SELECT n FROM tasks_app_taskcount WHERE {condition}"
            f" UNION ALL SELECT n FROM tasks_app_taskcountdelta WHERE {condition}) AS c",
            params + params,
        )
        return int(cursor.fetchone()[0])


FOLD_SQL = """
WITH moved AS (
    DELETE FROM tasks_app_taskcountdelta RETURNING organisation_id, key_id, state, type, source_type, n
), summed AS (
    SELECT organisation_id, key_id, state, type, source_type, SUM(n) AS n FROM moved GROUP BY 1, 2, 3, 4, 5
)
INSERT INTO tasks_app_taskcount (organisation_id, key_id, state, type, source_type, bucket, n)
SELECT organisation_id, key_id, state, type, source_type, 0, n FROM summed ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (organisation_id, key_id, state, type, source_type, bucket)
DO UPDATE SET n = tasks_app_taskcount.n + EXCLUDED.n
"""


def fold_task_counts() -> int:
    """Move pending deltas into the totals; returns how many total rows changed (0 if another
    process is folding right now). Totals rows are touched in key order by a single folder."""
    if connection.vendor != "postgresql":
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [FOLD_LOCK])
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(FOLD_SQL)
        return cursor.rowcount


def uuid7_floor(moment) -> uuid.UUID:
    """The smallest UUIDv7 of that millisecond, clamped to what a UUIDv7 can hold."""
    ms = (moment - EPOCH) // timedelta(milliseconds=1)
    return uuid.UUID(int=min(max(ms, 0), UUID7_MAX_MS) << 80)


def _shift(moment, delta):
    try:
        return moment + delta
    except OverflowError:
        return moment


def uuid7_window(queryset, values: dict):
    lower = [values[k] for k in ("date_created", "date_created__gt", "date_created__gte") if k in values]
    upper = [values[k] for k in ("date_created", "date_created__lt", "date_created__lte") if k in values]
    if lower:
        queryset = queryset.filter(pk__gte=uuid7_floor(_shift(max(lower), -MARGIN)))
    if upper:
        bound = _shift(min(upper), MARGIN)
        if (bound - EPOCH) // timedelta(milliseconds=1) < UUID7_MAX_MS:
            queryset = queryset.filter(pk__lt=uuid7_floor(bound))
    return queryset


DELTA_COLUMNS = "organisation_id, key_id, state, type, source_type, n"
TRIGGER_SQL = f"""
DROP TRIGGER IF EXISTS tasks_app_task_count ON tasks_app_task;
DROP FUNCTION IF EXISTS tasks_app_task_count();
DROP FUNCTION IF EXISTS tasks_app_task_count_bump(tasks_app_task, integer);

CREATE OR REPLACE FUNCTION tasks_app_task_count_insert() RETURNS trigger AS $$
BEGIN
    INSERT INTO tasks_app_taskcountdelta ({DELTA_COLUMNS})
    SELECT organisation_id, key_id, state, type, COALESCE(source_type, ''), count(*)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION tasks_app_task_count_delete() RETURNS trigger AS $$
BEGIN
    INSERT INTO tasks_app_taskcountdelta ({DELTA_COLUMNS})
    SELECT organisation_id, key_id, state, type, COALESCE(source_type, ''), -count(*)
    FROM old_rows GROUP BY 1, 2, 3, 4, 5;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION tasks_app_task_count_update() RETURNS trigger AS $$
BEGIN
    INSERT INTO tasks_app_taskcountdelta ({DELTA_COLUMNS}) VALUES
        (OLD.organisation_id, OLD.key_id, OLD.state, OLD.type, COALESCE(OLD.source_type, ''), -1),
        (NEW.organisation_id, NEW.key_id, NEW.state, NEW.type, COALESCE(NEW.source_type, ''), 1);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS tasks_app_task_count_insert ON tasks_app_task;
CREATE TRIGGER tasks_app_task_count_insert AFTER INSERT ON tasks_app_task
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tasks_app_task_count_insert();
DROP TRIGGER IF EXISTS tasks_app_task_count_delete ON tasks_app_task;
CREATE TRIGGER tasks_app_task_count_delete AFTER DELETE ON tasks_app_task
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tasks_app_task_count_delete();
DROP TRIGGER IF EXISTS tasks_app_task_count_update ON tasks_app_task;
CREATE TRIGGER tasks_app_task_count_update
    AFTER UPDATE OF state, type, source_type, key_id, organisation_id ON tasks_app_task FOR EACH ROW
    WHEN ((OLD.state, OLD.type, OLD.source_type, OLD.key_id, OLD.organisation_id)
          IS DISTINCT FROM (NEW.state, NEW.type, NEW.source_type, NEW.key_id, NEW.organisation_id))
    EXECUTE FUNCTION tasks_app_task_count_update();
"""

REBUILD_SQL = """
DELETE FROM tasks_app_taskcountdelta;
DELETE FROM tasks_app_taskcount;
INSERT INTO tasks_app_taskcount (organisation_id, key_id, state, type, source_type, bucket, n)
SELECT organisation_id, key_id, state, type, COALESCE(source_type, ''), 0, count(*)
FROM tasks_app_task GROUP BY 1, 2, 3, 4, 5;
"""


def rebuild_task_counts(cursor) -> None:
    """Recompute every counter from the task table (after bulk loads with the triggers disabled)."""
    cursor.execute(REBUILD_SQL)

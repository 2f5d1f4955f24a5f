"""Fast `total_count` and page windows for GET /tasks on large tables.

Counts come from `TaskCount`, which a Postgres trigger keeps exact in the same transaction as
every task insert, state change and delete (see migration 0004). Date bounds become primary-key
bounds because task ids are UUIDv7 minted at creation.
"""
import uuid
from datetime import timedelta

from django.db.models import Sum

from ..models import TaskCount

__all__ = ["COUNTED_FILTERS", "count_tasks", "uuid7_floor", "uuid7_window", "rebuild_task_counts", "TRIGGER_SQL"]

COUNTED_FILTERS = ("key", "state", "type", "source_type")
# A task's id is minted a moment before its date_created: one minute covers any clock step.
MARGIN = timedelta(minutes=1)
BUCKETS = 8


def count_tasks(organisation_id, values: dict) -> int:
    filters = {"organisation_id": organisation_id}
    for name in COUNTED_FILTERS:
        if name in values:
            filters["key_id" if name == "key" else name] = values[name]
    return TaskCount.objects.filter(**filters).aggregate(total=Sum("n"))["total"] or 0


def uuid7_floor(moment) -> uuid.UUID:
    """The smallest UUIDv7 of that millisecond."""
    return uuid.UUID(int=(int(moment.timestamp() * 1000) & ((1 << 48) - 1)) << 80)


def uuid7_window(queryset, values: dict):
    lower = [values[k] for k in ("date_created", "date_created__gt", "date_created__gte") if k in values]
    upper = [values[k] for k in ("date_created", "date_created__lt", "date_created__lte") if k in values]
    if lower:
        queryset = queryset.filter(pk__gte=uuid7_floor(max(lower) - MARGIN))
    if upper:
        queryset = queryset.filter(pk__lt=uuid7_floor(min(upper) + MARGIN))
    return queryset


TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION tasks_app_task_count_bump(t tasks_app_task, delta integer) RETURNS void AS $$
    INSERT INTO tasks_app_taskcount (organisation_id, key_id, state, type, source_type, bucket, n)
    VALUES (t.organisation_id, t.key_id, t.state, t.type, COALESCE(t.source_type, ''),
            abs(hashtext(t.id::text)) % {BUCKETS}, delta)
    ON CONFLICT (organisation_id, key_id, state, type, source_type, bucket)
    DO UPDATE SET n = tasks_app_taskcount.n + EXCLUDED.n;
$$ LANGUAGE sql;

CREATE OR REPLACE FUNCTION tasks_app_task_count() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tasks_app_task_count_bump(NEW, 1);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM tasks_app_task_count_bump(OLD, -1);
    ELSIF (OLD.state, OLD.type, OLD.source_type, OLD.key_id, OLD.organisation_id)
          IS DISTINCT FROM (NEW.state, NEW.type, NEW.source_type, NEW.key_id, NEW.organisation_id) THEN
        -- Touch the two rows in a fixed order so concurrent transitions cannot deadlock.
        IF OLD.state <= NEW.state THEN
            PERFORM tasks_app_task_count_bump(OLD, -1);
            PERFORM tasks_app_task_count_bump(NEW, 1);
        ELSE
            PERFORM tasks_app_task_count_bump(NEW, 1);
            PERFORM tasks_app_task_count_bump(OLD, -1);
        END IF;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS tasks_app_task_count ON tasks_app_task;
CREATE TRIGGER tasks_app_task_count
    AFTER INSERT OR DELETE OR UPDATE OF state, type, source_type, key_id, organisation_id ON tasks_app_task
    FOR EACH ROW EXECUTE FUNCTION tasks_app_task_count();
"""

REBUILD_SQL = f"""
DELETE FROM tasks_app_taskcount;
INSERT INTO tasks_app_taskcount (organisation_id, key_id, state, type, source_type, bucket, n)
SELECT organisation_id, key_id, state, type, COALESCE(source_type, ''), abs(hashtext(id::text)) % {BUCKETS}, count(*)
FROM tasks_app_task GROUP BY 1, 2, 3, 4, 5, 6;
"""


def rebuild_task_counts(cursor) -> None:
    """Recompute every counter from the task table (after bulk loads with the trigger disabled)."""
    cursor.execute(REBUILD_SQL)

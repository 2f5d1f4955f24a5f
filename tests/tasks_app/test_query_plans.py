"""The worker's per-task statements start from the task's own rows, whatever the statistics say.

Under a backlog thousands of tasks are `pending`, while the statistics may have been gathered on a
quiet table (an autovacuum ANALYZE between bursts) and say almost none are. A statement that tests
blockers' states in WHERE then lets the planner start from the partial index of active tasks and
read the whole backlog for every claim: measured at 1.5 ms a claim with 3,000 pending tasks,
0.35 ms once the states were tested per blocker row. These tests build exactly that situation and
read the plans Postgres chooses, generic (a prepared statement's) and custom.
"""
import re

import pytest
from django.db import connection
from django.utils import timezone

from tasks_app.models import Task, User
from tasks_app.services import transitions
from tasks_app.services.polls import create_poll
from tasks_app.services.rows import insert_rows
from tasks_app.services.sessions import create_session
from tasks_app.services.tasks import TaskSpec, build_tasks

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="Postgres plans"),
]

BACKLOG = 3000


@pytest.fixture
def backlog(key, settings):
    """A session with a poll, and BACKLOG tasks that were ended when the table was analysed and
    are pending now."""
    settings.RICLOUD_PREPARED_STATEMENTS = False  # the statements' text, to EXPLAIN
    user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
    session = create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com",
                             payload={"password": "x"})
    init = Task.objects.get(session=session, type="session.init")
    tasks, blocks, _ = build_tasks([TaskSpec("info", "account.info", {}, [])] * BACKLOG, key=key, user=user,
                                   source=session.source, session=session)
    insert_rows(tasks, blocks)
    Task.objects.update(state="succeeded")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_app_task")  # the quiet table's statistics
    Task.objects.update(state="pending")
    return session, init


def plans(sql: str, params) -> dict:
    """The custom and the generic plan of `sql` (%s placeholders)."""
    out = {}
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        out["custom"] = "\n".join(row[0] for row in cursor.fetchall())
        parts = sql.split("%s")
        text = parts[0] + "".join(f"${number}{part}" for number, part in enumerate(parts[1:], 1))
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        try:
            cursor.execute(f"PREPARE plan_probe AS {text}")
            cursor.execute("EXPLAIN EXECUTE plan_probe (" + ", ".join(["%s"] * len(params)) + ")", params)
            out["generic"] = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE plan_probe")
            cursor.execute("RESET plan_cache_mode")
    return out


def statement_of(transition) -> tuple[str, list]:
    """The UPDATE (and its parameters) that `transition()` sends."""
    seen = {}
    real = transitions._pg_transition

    def spy(update, params, to, now, rows=()):
        seen["statement"] = (update, list(params))
        return real(update, params, to, now, rows)

    transitions._pg_transition = spy
    try:
        assert transition() is not None
    finally:
        transitions._pg_transition = real
    return seen["statement"]


def test_a_claim_reads_its_own_blockers_not_the_backlog(backlog):
    session, init = backlog
    task = Task.objects.filter(state="pending").exclude(id=init.id).first()
    update, params = statement_of(lambda: transitions.claim_task(task.id))
    for kind, plan in plans(update, params).items():
        assert "task_active_state" not in plan, f"{kind} plan of the claim starts from the backlog:\n{plan}"
        assert re.search(r"Scan (using|on) tasks_app_task_blocked_by_from_task_id", plan), plan


def test_waking_blocked_tasks_reads_the_blockers_links_not_the_backlog(backlog, key):
    session, init = backlog
    poll = create_poll(key=key, session=session, source=None, payload={"info_types": ["account.info"]})
    assert poll.created_tasks
    for kind, plan in plans(transitions.WAITING_ON, [init.id]).items():
        assert "task_active_state" not in plan, f"{kind} plan of wake_blocked starts from the backlog:\n{plan}"
    assert transitions.wake_blocked(init.id) == 0  # the init is still pending: nobody wakes
    Task.objects.filter(id=init.id).update(state="succeeded")
    assert transitions.wake_blocked(init.id) == len(poll.created_tasks)


def test_an_ending_without_a_claim_finds_its_task_by_id(backlog):
    """`id = $1 AND state IN ('pending')` written plainly: the partial index of active tasks, read
    from end to end to find one task."""
    session, init = backlog
    task = Task.objects.filter(state="pending").exclude(id=init.id).first()
    update, params = statement_of(lambda: transitions.transition_task(
        task.id, "succeeded", allowed_from=("pending",), started=timezone.now(), alone=True))
    for kind, plan in plans(update, params).items():
        assert "task_active_state" not in plan and "tasks_app_task_pkey" in plan, f"{kind} plan:\n{plan}"

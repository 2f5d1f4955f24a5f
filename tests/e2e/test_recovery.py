"""Nothing lost, nothing run twice: recovery by the workers themselves, with no beat process.

The contract: a running task renews a short lease by heartbeat
(`RICLOUD_TASK_LEASE_SECONDS`, renewed every lease/4); every worker process runs the reaper in a
background thread every `RICLOUD_REAPER_INTERVAL_SECONDS`, one at a time under a Postgres advisory
lock; a pending task with no sign of its enqueue for `RICLOUD_PENDING_GRACE_SECONDS` is sent
again. No test here calls `reap()` to recover anything or starts beat.
"""
import time
from collections import Counter

import pytest
from django.db.models import Count

from tasks_app.models import Poll, Result, Task
from tasks_app.services.reaper import reap
from workers.handlers import mockdata

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LEASE = 3
# A worker that notices a dead worker's task quickly: short lease, a reaper pass every second.
RECOVERING = {"RICLOUD_TASK_LEASE_SECONDS": LEASE, "RICLOUD_REAPER_INTERVAL_SECONDS": 1,
              "RICLOUD_PENDING_GRACE_SECONDS": 1}
RICH = "john.appleseed@reincubate.com"


def state_of(task_id):
    return Task.objects.get(id=task_id).state


def succeeded_events(api) -> Counter:
    """How many `task.succeeded` events GET /events lists per task id."""
    events = api.get("/events", type="task", action="succeeded", limit=1000)
    assert not events["has_more"]
    return Counter(event["data"]["id"] for event in events["data"])


def test_a_killed_workers_task_is_run_again_by_another_worker(e2e_key, live_api, start_worker):
    """kill -9 mid-run: once the lease runs out, another worker's reaper has the task run again."""
    doomed = start_worker(RICLOUD_TASK_LEASE_SECONDS=LEASE)
    api = live_api(e2e_key)
    session = api.open_session("crash@example.com")
    poll = api.call("POST", "/polls", expect=201,
                    json={"session": session["id"], "payload": {"data_types": ["messages.sms"], "mock": {"delay": 60}}})
    (task_id,) = poll["tasks_pending"] + poll["tasks_processing"]
    wait_for(lambda: state_of(task_id) == "processing")

    doomed.kill()
    time.sleep(LEASE + 0.5)
    assert state_of(task_id) == "processing"  # no worker is left to notice

    Poll.objects.filter(id=poll["id"]).update(payload={})
    Task.objects.filter(id=task_id).update(payload={})  # the re-run need not be slow
    start_worker(**RECOVERING)
    wait_for(lambda: api.get(f"/tasks/{task_id}")["state"] in ("succeeded", "failed"), timeout=20)
    task = Task.objects.get(id=task_id)
    assert task.state == "succeeded" and task.attempts == 2
    assert Result.objects.filter(task=task).count() == 1
    assert api.get(f"/polls/{poll['id']}")["state"] == "completed"


def test_a_heartbeat_keeps_a_long_task_from_being_run_twice(e2e_key, live_api, start_worker, settings):
    """The task outlives its lease several times over while reapers watch: it runs once."""
    settings.RICLOUD_PENDING_GRACE_SECONDS = 0  # for the reap() below, in this process
    workers = [start_worker(**RECOVERING), start_worker(**RECOVERING)]  # one runs the task, one watches
    api = live_api(e2e_key)
    session = api.open_session("slow@example.com")
    poll = api.call("POST", "/polls", expect=201,
                    json={"session": session["id"], "payload": {"data_types": ["messages.sms"], "mock": {"delay": 8}}})
    (task_id,) = poll["tasks_pending"] + poll["tasks_processing"]
    wait_for(lambda: state_of(task_id) == "processing", interval=0.1)
    time.sleep(2 * LEASE)
    assert state_of(task_id) == "processing" and Task.objects.get(id=task_id).attempts == 1
    # Twice the lease after the claim: the lease was renewed, so a reaper pass has nothing to take over.
    outcome = reap()
    assert outcome["enqueued"] == 0 and outcome["failed"] == 0, outcome
    wait_for(lambda: state_of(task_id) in ("succeeded", "failed"), timeout=20)
    task = Task.objects.get(id=task_id)
    assert task.state == "succeeded" and task.attempts == 1
    assert Result.objects.filter(task=task).count() == 1
    assert succeeded_events(api)[task_id] == 1
    assert api.get(f"/polls/{poll['id']}")["state"] == "completed"
    assert all(worker.process.poll() is None for worker in workers)


def test_a_killed_worker_with_many_tasks_in_flight(e2e_key, live_api, start_worker):
    """kill -9 mid-stream: every task still ends, each exactly once."""
    doomed = start_worker(RICLOUD_TASK_LEASE_SECONDS=LEASE)
    api = live_api(e2e_key)
    session = api.open_session(RICH)
    files = mockdata.list_file_ids(mockdata.data_document(RICH, "photos"))
    files += mockdata.list_file_ids(mockdata.data_document(RICH, "ios_messages.messages"))
    polls = []
    for offset in range(3):
        chosen = (files[offset * 10:] + files[:offset * 10])[:40]
        polls.append(api.call("POST", "/polls", expect=201, json={
            "session": session["id"],
            "payload": {"files": chosen, "info_types": ["*"], "mock": {"delay": 0.1}},
        }))
    task_ids = {task for poll in polls for state in ("pending", "processing") for task in poll[f"tasks_{state}"]}
    assert len(task_ids) == 3 * 42
    wait_for(lambda: Task.objects.filter(state="succeeded", poll__isnull=False).count() >= 10)

    doomed.kill()
    time.sleep(0.5)
    in_flight = set(Task.objects.filter(id__in=task_ids, state="processing").values_list("id", flat=True))
    assert in_flight  # the kill caught tasks mid-run
    assert Task.objects.filter(id__in=task_ids).exclude(state="succeeded").count() > len(in_flight)  # and some queued

    start_worker(**RECOVERING)
    wait_for(lambda: not Task.objects.filter(id__in=task_ids, state__in=("pending", "processing", "suspended")).exists(),
             timeout=60, interval=0.5)
    tasks = Task.objects.filter(id__in=task_ids)
    assert tasks.count() == len(task_ids)
    assert dict(Counter(tasks.values_list("state", flat=True))) == {"succeeded": len(task_ids)}
    for task in tasks:
        assert task.attempts == (2 if task.id in in_flight else 1), (task.id, task.attempts, task.id in in_flight)
    results = Result.objects.filter(task__in=task_ids)
    assert results.count() == len(task_ids)
    assert not results.values("task").annotate(n=Count("id")).filter(n__gt=1).exists()
    events = succeeded_events(api)
    assert {task_id: events[task_id] for task_id in task_ids} == {task_id: 1 for task_id in task_ids}
    for poll in polls:
        body = api.get(f"/polls/{poll['id']}")
        assert body["state"] == "completed" and len(body["tasks_succeeded"]) == 42 and not body["errors"]
        assert body["results"]["total_count"] == 42


def test_a_lost_enqueue_is_sent_again(e2e_key, live_api, start_worker):
    """Rows committed while the broker message never arrived: a worker's reaper sends them again."""
    api = live_api(e2e_key)
    session = api.open_session("lost@example.com", wait=False)
    # No worker was running: drop the message to simulate a lost enqueue.
    from ricloud_server.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("tasks")
    task = Task.objects.get(session_id=session["id"])
    assert task.state == "pending"
    start_worker(**RECOVERING)
    wait_for(lambda: state_of(task.id) == "succeeded", timeout=20)
    assert api.get(f"/sessions/{session['id']}")["state"] == "active"
    task.refresh_from_db()
    assert task.attempts == 1

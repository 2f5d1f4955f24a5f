"""A worker told to stop hands its running tasks back: `processing → pending` at once (not after
the lease), then another worker runs them, once.

Two ways a stop arrives: SIGTERM to the worker's whole process group (what honcho does on
Ctrl-C under `make run`, and systemd or docker with an init), and SIGINT (Ctrl-C) or SIGTERM to
the main process only (`kill <pid>`, docker without an init).
"""
import os
import signal
import time
from collections import Counter

import pytest

from tasks_app.models import Poll, Result, Task

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# A long lease: recovering the task by the lease would take 30 s; the hand-back must not wait for it.
LEASE = 30
FAST_REAPER = {"RICLOUD_REAPER_INTERVAL_SECONDS": 1, "RICLOUD_PENDING_GRACE_SECONDS": 1}


def slow_task(api, identifier):
    session = api.open_session(identifier)
    poll = api.call("POST", "/polls", expect=201, json={
        "session": session["id"], "payload": {"data_types": ["messages.sms"], "mock": {"delay": 120}}})
    (task_id,) = poll["tasks_pending"] + poll["tasks_processing"]
    wait_for(lambda: Task.objects.get(id=task_id).state == "processing", interval=0.1)
    return poll, task_id


def assert_handed_back_then_run_once(api, poll, task_id, stopping, start_worker, stop):
    started = time.monotonic()
    stop(stopping.process.pid)
    wait_for(lambda: Task.objects.get(id=task_id).state == "pending", timeout=5, interval=0.05)
    handed_back = time.monotonic() - started
    task = Task.objects.get(id=task_id)
    assert task.attempts == 0 and task.lease_expires is None, (task.attempts, task.lease_expires)
    stopping.process.wait(15)  # the worker stops promptly too: nothing is left to wait for
    assert time.monotonic() - started < 15
    assert handed_back < 5

    # The re-run need not be slow; a new worker takes the task at once (its message was sent again).
    Poll.objects.filter(id=poll["id"]).update(payload={})
    Task.objects.filter(id=task_id).update(payload={})
    start_worker(RICLOUD_TASK_LEASE_SECONDS=LEASE, **FAST_REAPER)
    wait_for(lambda: Task.objects.get(id=task_id).state in ("succeeded", "failed"), timeout=20)
    task = Task.objects.get(id=task_id)
    assert task.state == "succeeded" and task.attempts == 1, (task.state, task.error, task.attempts)
    assert Result.objects.filter(task=task).count() == 1
    events = api.get("/events", type="task", action="succeeded", limit=1000)
    assert Counter(event["data"]["id"] for event in events["data"])[task_id] == 1
    assert api.get(f"/polls/{poll['id']}")["state"] == "completed"


def test_sigterm_to_the_process_group_hands_the_running_task_back(e2e_key, live_api, start_worker):
    """As honcho stops `make run`: every process of the worker's group gets SIGTERM."""
    api = live_api(e2e_key)
    stopping = start_worker(RICLOUD_TASK_LEASE_SECONDS=LEASE, **FAST_REAPER)
    poll, task_id = slow_task(api, "sigterm@example.com")
    assert_handed_back_then_run_once(api, poll, task_id, stopping, start_worker,
                                     lambda pid: os.killpg(pid, signal.SIGTERM))
    assert b"handed back" in stopping.log_path.read_bytes()


def test_ctrl_c_to_the_main_process_hands_the_running_task_back(e2e_key, live_api, start_worker):
    """SIGINT to the main process only: it tells its busy pool processes to stop."""
    api = live_api(e2e_key)
    stopping = start_worker(RICLOUD_TASK_LEASE_SECONDS=LEASE, **FAST_REAPER)
    poll, task_id = slow_task(api, "sigint@example.com")
    assert_handed_back_then_run_once(api, poll, task_id, stopping, start_worker,
                                     lambda pid: os.kill(pid, signal.SIGINT))

"""Nothing lost: a task whose worker is killed mid-run is recovered by the reaper."""
import time

import pytest

from tasks_app.models import Poll, Result, Task, User
from tasks_app.services.polls import create_poll
from tasks_app.services.reaper import reap
from tasks_app.services.sessions import create_session

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def state_of(task_id):
    return Task.objects.get(id=task_id).state


def test_the_reaper_recovers_a_killed_workers_task(e2e_key, start_worker, settings):
    settings.RICLOUD_PENDING_GRACE_SECONDS = 0
    lease = 3
    doomed = start_worker(RICLOUD_TASK_LEASE_SECONDS=lease)
    user = User.objects.create(organisation=e2e_key.organisation, key=e2e_key, identifier="crash@example.com")
    session = create_session(key=e2e_key, user=user, source_type="mocks.mock", identifier="crash@example.com",
                             payload={"password": "pw"})
    wait_for(lambda: Task.objects.get(session=session, type="session.init").state == "succeeded")
    poll = create_poll(key=e2e_key, session=session, source=None,
                       payload={"data_types": ["messages.sms"], "mock": {"delay": 60}})
    task = poll.tasks.get()
    wait_for(lambda: state_of(task.id) == "processing")

    doomed.kill()
    time.sleep(lease + 0.5)
    assert state_of(task.id) == "processing"  # nobody else knows the worker died

    start_worker()
    Poll.objects.filter(id=poll.id).update(payload={})
    Task.objects.filter(id=task.id).update(payload={})  # the retry need not be slow
    assert reap()["enqueued"] == 1
    wait_for(lambda: state_of(task.id) == "succeeded", timeout=30)
    task.refresh_from_db()
    assert task.attempts == 2
    assert Result.objects.filter(task=task).count() == 1
    assert Poll.objects.get(id=poll.id).state == "completed"


def test_a_lost_enqueue_is_sent_again(e2e_key, start_worker, settings):
    """Rows committed while the broker message never arrived: the reaper sends them again."""
    settings.RICLOUD_PENDING_GRACE_SECONDS = 0
    user = User.objects.create(organisation=e2e_key.organisation, key=e2e_key, identifier="lost@example.com")
    session = create_session(key=e2e_key, user=user, source_type="mocks.mock", identifier="lost@example.com",
                             payload={"password": "pw"})
    # No worker was running: drop the message to simulate a lost enqueue.
    from ricloud_server.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("tasks")
    start_worker()
    task = Task.objects.get(session=session)
    time.sleep(0.5)
    assert state_of(task.id) == "pending"
    assert reap()["enqueued"] == 1
    wait_for(lambda: state_of(task.id) == "succeeded")

"""workers/shutdown.py in one process: hand_back() and run_interruptibly(). The signal paths of a
real worker are tested end to end in tests/e2e/test_shutdown.py."""
import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks_app.models import Task, User
from tasks_app.services.reaper import reap
from tasks_app.services.sessions import create_session
from tasks_app.services.transitions import claim_task
from workers import runner, shutdown

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"


@pytest.fixture(autouse=True)
def fresh_process_state():
    yield
    shutdown._stopping[0] = shutdown._running[0] = False


@pytest.fixture
def sent(monkeypatch):
    """The task ids sent to the broker."""
    calls = []
    monkeypatch.setattr("tasks_app.services.dispatch.send_run_task", lambda task_id: calls.append(str(task_id)) or True)
    return calls


@pytest.fixture
def task(key):
    user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
    session = create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com",
                             payload={"password": "x"})
    return Task.objects.get(session=session, type="session.init")


def test_a_running_task_is_handed_back_and_sent_again(task, sent):
    assert claim_task(task.id).attempts == 1
    assert shutdown.hand_back(task.id) == "handed-back"
    task.refresh_from_db()
    assert (task.state, task.attempts, task.lease_expires) == ("pending", 0, None)
    assert task.date_enqueued is not None
    assert sent == [str(task.id)]


def test_with_the_broker_gone_the_first_reaper_pass_sends_it(task, monkeypatch):
    monkeypatch.setattr("tasks_app.services.dispatch.send_run_task", lambda task_id: False)
    claim_task(task.id)
    assert shutdown.hand_back(task.id) == "handed-back"
    task.refresh_from_db()
    assert task.state == "pending" and task.date_enqueued is None  # not "sent just now": no grace to wait
    sends = []
    monkeypatch.setattr("tasks_app.services.reaper.send_on_commit", sends.extend)
    assert reap()["enqueued"] == 1 and [str(task_id).replace("-", "") for task_id in sends] == [task.id.hex]


def test_a_task_whose_lease_ran_out_is_left_to_whoever_took_it_over(task, sent):
    claim_task(task.id)
    Task.objects.filter(id=task.id).update(lease_expires=timezone.now() - timedelta(seconds=1))
    assert shutdown.hand_back(task.id) == "stopped"
    assert Task.objects.get(id=task.id).state == "processing" and sent == []


def test_an_ended_task_stays_ended(task, sent):
    assert runner.run(task.id, max_attempts=5) == "succeeded"
    assert shutdown.hand_back(task.id) == "stopped"
    assert Task.objects.get(id=task.id).state == "succeeded" and sent == []


def test_a_task_interrupted_before_its_claim_is_sent_again(task, sent):
    assert shutdown.hand_back(task.id) == "handed-back"
    assert Task.objects.get(id=task.id).state == "pending" and sent == [str(task.id)]


def test_sigterm_during_a_run_interrupts_it_and_hands_the_task_back(task, sent):
    def run_until_stopped():
        claim_task(task.id)
        shutdown._on_sigterm(signal.SIGTERM, None)  # what the pool process's handler does mid-run
        raise AssertionError("not interrupted")

    assert shutdown.run_interruptibly(task.id, run_until_stopped) == "handed-back"
    assert Task.objects.get(id=task.id).state == "pending"
    # A second SIGTERM while handing back is ignored (it must not cut the hand-back short).
    shutdown._running[0] = True
    shutdown._on_sigterm(signal.SIGTERM, None)
    shutdown._running[0] = False
    # The process is stopping: a task it is given now is handed back without being run.
    assert shutdown.run_interruptibly(task.id, lambda: pytest.fail("ran while stopping")) == "handed-back"
    assert Task.objects.get(id=task.id).attempts == 0

"""The runner and the Celery task: idempotent, compare-and-set claims, blockers, parents."""
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks_app.models import Event, Poll, Result, Session, Task, User
from tasks_app.services.polls import create_poll
from tasks_app.services.reaper import reap
from tasks_app.services.sessions import create_session
from workers import runner
from workers.tasks import run_task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    return tmp_path


@pytest.fixture
def empty_queue():
    """The broker's tasks queue emptied before and after: the reaper compares a task with the
    oldest message queued, and messages other tests left unconsumed (a suite run's first ones
    can be minutes old) would make a lost message look like a backlog."""
    from ricloud_server.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("tasks")
    yield app
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("tasks")


def run(task_id):
    return runner.run(task_id, max_attempts=5)


@pytest.fixture
def session(key):
    user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
    return create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com", payload={"password": "x"})


def init_task(session):
    return Task.objects.get(session=session, type="session.init")


def snapshot():
    return (
        sorted(Task.objects.values_list("id", "state", "error", "attempts", "date_completed")),
        sorted(Result.objects.values_list("id", "identifier", "checksum")),
        Event.objects.count(),
    )


def test_running_a_task_twice_changes_nothing_the_second_time(session):
    assert run(init_task(session).id) == "succeeded"
    before = snapshot()
    assert run(init_task(session).id) == "lost"
    assert snapshot() == before


def test_running_the_celery_task_twice_changes_nothing_the_second_time(session, key):
    run(init_task(session).id)
    poll = create_poll(key=key, session=session, source=None, payload={"data_types": ["messages.sms"]})
    task = poll.tasks.get()
    assert run_task.apply(args=[str(task.id)]).get() == "succeeded"
    before = snapshot()
    assert run_task.apply(args=[str(task.id)]).get() == "lost"
    assert snapshot() == before
    assert Result.objects.filter(task=task).count() == 1


def test_a_lost_claim_is_a_no_op(session):
    task = init_task(session)
    lease = timezone.now() + timedelta(minutes=5)
    Task.objects.filter(id=task.id).update(state="processing", lease_expires=lease, attempts=1)
    before = snapshot()
    assert run(task.id) == "lost"
    assert snapshot() == before


def test_an_expired_lease_is_taken_over(session):
    task = init_task(session)
    Task.objects.filter(id=task.id).update(state="processing", lease_expires=timezone.now() - timedelta(seconds=1), attempts=1)
    assert run(task.id) == "succeeded"
    task.refresh_from_db()
    assert task.attempts == 2 and task.state == "succeeded"


def test_session_init_success_activates_session_and_source(session):
    run(init_task(session).id)
    session.refresh_from_db()
    assert session.state == "active" and session.source.state == "active"
    assert session.source.info["full_name"]
    events = list(Event.objects.filter(object_id=str(session.id)).values_list("type", "action"))
    assert events == [("session", "created"), ("session", "active")]


def test_poll_tasks_wait_for_the_session_and_the_poll_completes(session, key):
    poll = create_poll(key=key, session=session, source=None, payload={"info_types": ["*"], "data_types": ["photos"]})
    tasks = list(poll.tasks.all())
    assert len(tasks) == 3
    for task in tasks:
        assert run(task.id) == "suspended"
    assert set(Task.objects.filter(poll=poll).values_list("state", flat=True)) == {"suspended"}
    assert Poll.objects.get(id=poll.id).state == "processing"
    run(init_task(session).id)
    for task in tasks:
        assert run(task.id) == "succeeded"
    poll.refresh_from_db()
    assert poll.state == "completed" and poll.date_completed >= poll.date_started
    assert Result.objects.filter(poll=poll).count() == 3
    assert Event.objects.filter(type="poll", action="completed", object_id=str(poll.id)).count() == 1


def test_a_failed_session_fails_the_waiting_poll_tasks(key):
    user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
    session = create_session(key=key, user=user, source_type="mocks.mock", identifier="x", payload={"password": "wrong-password"})
    poll = create_poll(key=key, session=session, source=None, payload={"data_types": ["photos"]})
    task = poll.tasks.get()
    assert run(task.id) == "suspended"
    assert run(init_task(session).id) == "failed"
    assert Session.objects.get(id=session.id).error == "invalid-credentials"
    assert run(task.id) == "failed"
    task.refresh_from_db()
    assert task.error == "session-failed"
    assert Poll.objects.get(id=poll.id).state == "completed"


def test_file_tasks_wait_for_the_data_tasks_of_their_poll(session, key):
    run(init_task(session).id)
    poll = create_poll(key=key, session=session, source=None, payload={"data_types": ["photos"], "files": ["nope"]})
    data_task, file_task = poll.tasks.get(type="data"), poll.tasks.get(type="file")
    assert list(file_task.blocked_by.all()) == [data_task]
    assert run(file_task.id) == "suspended"
    assert run(data_task.id) == "succeeded"
    assert run(file_task.id) == "failed"
    assert Task.objects.get(id=file_task.id).error == "file-not-found"


def test_the_reaper_re_enqueues_lost_and_dead_work_and_fails_exhausted_tasks(session, settings, empty_queue,
                                                                             django_capture_on_commit_callbacks):
    settings.RICLOUD_PENDING_GRACE_SECONDS = 0
    settings.RICLOUD_TASK_MAX_ATTEMPTS = 2
    task = init_task(session)
    long_ago = timezone.now() - timedelta(minutes=10)
    Task.objects.filter(id=task.id).update(date_enqueued=long_ago)
    with django_capture_on_commit_callbacks() as callbacks:
        assert reap() == {"enqueued": 1, "failed": 0}
    assert len(callbacks) == 1
    Task.objects.filter(id=task.id).update(state="processing", attempts=2, lease_expires=long_ago, date_enqueued=long_ago)
    assert reap() == {"enqueued": 0, "failed": 1}
    task.refresh_from_db()
    assert task.state == "failed" and task.error == "worker-lost"
    assert Session.objects.get(id=session.id).state == "failed"


def test_reaping_twice_enqueues_once(session, empty_queue, django_capture_on_commit_callbacks):
    Task.objects.filter(session=session).update(date_enqueued=timezone.now() - timedelta(minutes=10))
    with django_capture_on_commit_callbacks() as callbacks:
        assert reap() == {"enqueued": 1, "failed": 0}
        assert reap() == {"enqueued": 0, "failed": 0}
    assert len(callbacks) == 1


def test_tasks_still_within_their_grace_or_lease_are_left_alone(session, empty_queue):
    task = init_task(session)
    assert reap() == {"enqueued": 0, "failed": 0}
    Task.objects.filter(id=task.id).update(
        state="processing", lease_expires=timezone.now() + timedelta(minutes=1), date_enqueued=timezone.now() - timedelta(hours=1)
    )
    assert reap() == {"enqueued": 0, "failed": 0}


class TestTheReaperTellsABacklogFromALoss:
    """A waiting task is sent again only when its message cannot still be in the queue."""

    @pytest.fixture
    def queue(self, empty_queue):
        return empty_queue

    def test_the_oldest_queued_message_says_when_it_was_sent(self, queue):
        from tasks_app.services.dispatch import send_run_task
        from tasks_app.services.reaper import oldest_queued

        assert oldest_queued() is None
        before = timezone.now()
        send_run_task("01a20c8f-35f2-73ad-9e1b-eaed901b1098")
        send_run_task("01a20c8f-35f2-73ad-9e1b-eaed901b1099")
        sent = oldest_queued()
        assert before - timedelta(seconds=1) <= sent <= timezone.now()

    def test_a_task_behind_a_backlog_is_left_alone_and_a_lost_one_is_sent(self, queue, session, settings,
                                                                        django_capture_on_commit_callbacks):
        from tasks_app.services.dispatch import send_run_task

        settings.RICLOUD_PENDING_GRACE_SECONDS = 1
        task = init_task(session)
        # Enqueued a minute ago, while an older message still waits in the queue: a backlog.
        Task.objects.filter(id=task.id).update(date_enqueued=timezone.now() - timedelta(minutes=1))
        # A message sent five minutes ago is still waiting: the queue is a backlog.
        old = (timezone.now() - timedelta(minutes=5)).timestamp()
        queue.send_task("ricloud.run_task", args=["01a20c8f-35f2-73ad-9e1b-eaed901b1098"], queue="tasks",
                        headers={"ricloud_sent": old})
        assert reap() == {"enqueued": 0, "failed": 0}
        # The queue has moved past it (its oldest message is newer): its message was lost.
        with queue.connection_for_write() as conn:
            conn.default_channel.queue_purge("tasks")
        send_run_task("01a20c8f-35f2-73ad-9e1b-eaed901b1098")
        with django_capture_on_commit_callbacks() as callbacks:
            assert reap() == {"enqueued": 1, "failed": 0}
        assert len(callbacks) == 1


def test_transitions_run_with_and_without_prepared_statements(session, settings):
    """RICLOUD_PREPARED_STATEMENTS=0 (a transaction-mode pooler) gives the same outcome."""
    settings.RICLOUD_PREPARED_STATEMENTS = False
    assert run(init_task(session).id) == "succeeded"
    settings.RICLOUD_PREPARED_STATEMENTS = True
    poll = create_poll(key=session.key, session=Session.objects.get(id=session.id), source=None,
                       payload={"info_types": ["account.info"]})
    assert run(poll.tasks.get().id) == "succeeded"
    assert Poll.objects.get(id=poll.id).state == "completed"


class TestRunsWithoutAClaim:
    """A pending task whose run cannot wait ends in one statement, `pending → succeeded | failed`;
    anything that may wait, was claimed before, or was sent again by the reaper is claimed."""

    @pytest.fixture
    def poll(self, session, key):
        run(init_task(session).id)
        return create_poll(key=key, session=session, source=None,
                           payload={"info_types": ["account.info"], "data_types": ["messages.sms"]})

    def test_it_records_its_start_and_attempt_and_starts_its_poll(self, poll):
        from tasks_app.services.transitions import read_task

        first, second = poll.tasks.order_by("id")
        assert runner._runs_at_once(read_task(first.id)) and runner._runs_at_once(read_task(second.id))
        assert run(first.id) == "succeeded"
        first.refresh_from_db()
        assert (first.state, first.attempts, first.lease_expires) == ("succeeded", 1, None)
        assert first.date_created <= first.date_started <= first.date_completed
        assert Result.objects.filter(task=first).count() == 1
        poll.refresh_from_db()
        assert poll.state == "processing" and poll.date_started is not None and poll.date_completed is None
        assert run(second.id) == "succeeded"
        poll.refresh_from_db()
        assert poll.state == "completed" and poll.date_completed >= poll.date_started
        assert Event.objects.filter(type="poll", action="completed", object_id=str(poll.id)).count() == 1

    def test_a_worker_that_claimed_it_meanwhile_wins(self, poll):
        from tasks_app.services.transitions import claim_task, read_task

        task = poll.tasks.order_by("id").first()
        read = read_task(task.id)
        assert runner._runs_at_once(read)
        assert claim_task(task.id) is not None  # another worker, between our read and our ending
        assert runner._execute(read, unclaimed=timezone.now()) == "lost"
        task.refresh_from_db()
        assert (task.state, task.attempts) == ("processing", 1)
        assert not Result.objects.filter(task=task).exists() and not Event.objects.filter(
            type="task", object_id=str(task.id)).exclude(action="created").exists()

    def test_a_failure_without_a_claim_is_one_ending_too(self, session, key):
        run(init_task(session).id)
        poll = create_poll(key=key, session=session, source=None,
                           payload={"info_types": ["account.info"], "mock": {"fail": True}})
        task = poll.tasks.get()
        assert run(task.id) == "failed"
        task.refresh_from_db()
        assert (task.state, task.error, task.attempts) == ("failed", "mock-failure", 1)
        assert task.date_started is not None and Poll.objects.get(id=poll.id).state == "completed"

    def test_runs_that_may_wait_or_were_sent_again_are_claimed(self, session, key, settings):
        from tasks_app.services.transitions import read_task

        run(init_task(session).id)
        delayed = create_poll(key=key, session=session, source=None,
                              payload={"info_types": ["account.info"], "mock": {"delay": 0.01}}).tasks.get()
        assert not runner._runs_at_once(read_task(delayed.id))
        plain = create_poll(key=key, session=session, source=None, payload={"info_types": ["account.info"]}).tasks.get()
        assert runner._runs_at_once(read_task(plain.id))
        # Its message was lost (or its run killed the worker): the reaper's re-send is claimed.
        settings.RICLOUD_PENDING_GRACE_SECONDS = 0
        Task.objects.filter(id=plain.id).update(date_enqueued=timezone.now() - timedelta(minutes=10))
        assert reap()["enqueued"] >= 1
        assert not runner._runs_at_once(read_task(plain.id))
        assert run(plain.id) == "succeeded"
        plain.refresh_from_db()
        assert (plain.state, plain.attempts, plain.lease_expires) == ("succeeded", 1, None)


class TestRowsInMessages:
    """A poll's task that will run at once is sent with its row (services/transitions.py
    `run_row`), and its worker runs it from that row without reading it first."""

    @staticmethod
    def create(session, key, monkeypatch, django_capture_on_commit_callbacks, **payload):
        from tasks_app.services import dispatch

        sent = {}
        monkeypatch.setattr(dispatch, "send_run_tasks",
                            lambda ids, rows=None: sent.update({i: (rows or {}).get(i) for i in ids}) or True)
        with django_capture_on_commit_callbacks(execute=True):
            poll = create_poll(key=key, session=session, source=None, payload=payload or {"info_types": ["account.info"]})
        return poll, sent

    def test_its_row_is_what_its_worker_would_read(self, session, key, monkeypatch, django_capture_on_commit_callbacks):
        from tasks_app.services.transitions import ROW_COLUMNS, read_task, task_from_row

        run(init_task(session).id)
        poll, sent = self.create(session, key, monkeypatch, django_capture_on_commit_callbacks)
        task = poll.tasks.get()
        row = sent[str(task.id)]
        assert row is not None and json.loads(json.dumps(row)) == row  # it travels as JSON
        read, carried = read_task(task.id), task_from_row(row)
        for name in ROW_COLUMNS + ("state", "attempts", "lease_expires", "secrets", "active_blockers",
                                   "failed_blockers", "failed_init_error", "storage_config_ref", "poll_state"):
            assert getattr(carried, name) == getattr(read, name), name
        assert runner._runs_at_once(carried)

    def test_its_worker_does_not_read_it(self, session, key, monkeypatch, django_capture_on_commit_callbacks):
        run(init_task(session).id)
        poll, sent = self.create(session, key, monkeypatch, django_capture_on_commit_callbacks)
        task = poll.tasks.get()
        monkeypatch.setattr(runner, "read_task", lambda task_id: pytest.fail("read the task"))
        assert runner.run(task.id, max_attempts=5, row=sent[str(task.id)]) == "succeeded"
        task.refresh_from_db()
        assert (task.state, task.attempts) == ("succeeded", 1) and task.date_started is not None
        assert Result.objects.filter(task=task).count() == 1
        assert Poll.objects.get(id=poll.id).state == "completed"

    def test_a_stale_row_changes_nothing(self, session, key, monkeypatch, django_capture_on_commit_callbacks):
        run(init_task(session).id)
        poll, sent = self.create(session, key, monkeypatch, django_capture_on_commit_callbacks)
        task = poll.tasks.get()
        assert run(task.id) == "succeeded"  # read from the database, as a redelivered message is
        before = snapshot()
        assert runner.run(task.id, max_attempts=5, row=sent[str(task.id)]) == "lost"
        assert snapshot() == before

    def test_tasks_that_cannot_run_at_once_carry_no_row(self, session, key, monkeypatch,
                                                        django_capture_on_commit_callbacks):
        from tasks_app.models import StorageConfig

        waiting, sent = self.create(session, key, monkeypatch, django_capture_on_commit_callbacks)
        assert list(sent.values()) == [None]  # blocked by the session's init: it will read its blockers
        assert waiting.tasks.get().blocked_by.exists()
        run(init_task(session).id)
        _, sent = self.create(session, key, monkeypatch, django_capture_on_commit_callbacks,
                              info_types=["account.info"], mock={"delay": 0.01})
        assert list(sent.values()) == [None]  # a run that may wait is claimed
        key.storage_config = StorageConfig.objects.create(organisation=key.organisation, url="local:///tmp/unused")
        _, sent = self.create(session, key, monkeypatch, django_capture_on_commit_callbacks)
        assert list(sent.values()) == [None]  # whether a storage config is valid, only the database knows


def test_only_a_fresh_first_delivery_may_stand_for_its_task():
    from types import SimpleNamespace

    from workers.tasks import ROW_FRESH_SECONDS, _fresh

    def request(**changes):
        return SimpleNamespace(**{"retries": 0, "delivery_info": {}, "ricloud_sent": time.time(), **changes})

    assert _fresh(request())
    assert not _fresh(request(ricloud_sent=time.time() - ROW_FRESH_SECONDS - 1))  # queued behind a backlog
    assert not _fresh(request(retries=1))
    assert not _fresh(request(delivery_info={"redelivered": True}))  # a dead worker's message, restored
    assert not _fresh(request(redelivered=True))
    assert not _fresh(request(ricloud_sent=None))

"""POST /polls on an active session is one statement, its own transaction
(services/polls.py `create_poll_at_once`): what a client sees is what the locked transaction
(`create_poll`) gives, errors included, whatever changed since the process first read the session.

Transactional tests: inside a test's wrapping transaction the view always takes `create_poll`.
"""
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasks_app.models import Event, Poll, Session, Task
from tasks_app.services import dispatch, polls
from tasks_app.services.transitions import ROW_COLUMNS, read_task, task_from_row
from tests.tasks_app.test_sessions_polls import create_session, init_task
from workers import runner

pytestmark = pytest.mark.django_db(transaction=True)

INFO = {"info_types": ["account.info"]}
VOLATILE = {"id", "url", "date_created", "date_started", "date_completed"}


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test starts as a process that has read no session yet."""
    monkeypatch.setattr(polls, "_known_sessions", {})


@pytest.fixture
def sent(monkeypatch):
    """The ids (and rows) the requests send to the broker."""
    messages = {}
    monkeypatch.setattr(dispatch, "send_run_tasks",
                        lambda ids, rows=None: messages.update({i: (rows or {}).get(i) for i in ids}) or True)
    return messages


@pytest.fixture
def user(api):
    return api.post_json("/users", {"identifier": "u1"}).json()


@pytest.fixture
def active(api, user):
    session = create_session(api, user["id"])
    assert runner.run(init_task(session).id, max_attempts=5) == "succeeded"
    return session


def post_poll(api, session, payload=INFO):
    return api.post_json("/polls", {"session": session["id"], "payload": payload})


def shape(body):
    """A poll body without what differs between two polls (ids, times)."""
    if isinstance(body, dict):
        return {name: len(value) if name.startswith("tasks_") else shape(value)
                for name, value in body.items() if name not in VOLATILE}
    if isinstance(body, list):
        return [shape(value) for value in body]
    return body


def transaction_path(monkeypatch):
    """Make the view take create_poll (the locked transaction), as it does for larger polls."""
    monkeypatch.setattr(polls, "AT_ONCE_MAX_TASKS", 0)


def test_a_poll_on_a_known_active_session_is_one_statement(api, active, sent):
    payload = {"info_types": ["account.info"], "data_types": ["photos"]}
    assert post_poll(api, active, payload).status_code == 201  # reads the session, prepares the statement
    with CaptureQueriesContext(connection) as queries:
        response = post_poll(api, active, payload)
    assert response.status_code == 201, response.content
    assert len(queries) == 1, [q["sql"][:300] for q in queries]
    body = response.json()
    assert body["state"] == "pending" and len(body["tasks_pending"]) == 2
    assert sorted(Task.objects.filter(poll_id=body["id"]).values_list("type", flat=True)) == ["data", "info"]
    assert sorted(Event.objects.filter(object_id__in=[body["id"], *body["tasks_pending"]])
                  .values_list("type", "action")) == [("poll", "created")] + [("task", "created")] * 2
    assert set(body["tasks_pending"]) <= set(sent)


def test_it_answers_what_the_transaction_answers(api, active, sent, monkeypatch):
    payload = {"info_types": ["account.info"], "files": ["file-1"], "mock": {"delay": 0}}
    once = post_poll(api, active, payload)
    transaction_path(monkeypatch)
    locked = post_poll(api, active, payload)
    assert once.status_code == locked.status_code == 201
    assert shape(once.json()) == shape(locked.json())
    assert {str(t.id) for t in Poll.objects.get(id=once.json()["id"]).tasks.all()} == set(once.json()["tasks_pending"])
    # The tasks are counted as any others (the insert trigger fires in the statement).
    listed = api.get("/tasks", {"state": "pending", "limit": 1}).json()
    assert listed["total_count"] == 4


def test_its_messages_carry_the_rows_their_workers_would_read(api, active, sent):
    body = post_poll(api, active).json()
    [task_id] = body["tasks_pending"]
    row = sent[task_id]
    assert row is not None and json.loads(json.dumps(row)) == row
    read, carried = read_task(task_id), task_from_row(row)
    for name in ROW_COLUMNS + ("state", "attempts", "lease_expires", "active_blockers", "failed_blockers"):
        assert getattr(carried, name) == getattr(read, name), name
    assert runner.run(task_id, max_attempts=5, row=row) == "succeeded"
    assert api.get(f"/polls/{body['id']}").json()["state"] == "completed"


@pytest.mark.parametrize("how", ["expired", "deleted"])
def test_a_session_changed_since_it_was_read_gets_the_transaction_s_answer(api, active, sent, monkeypatch, how):
    assert post_poll(api, active).status_code == 201  # known to the process as active
    if how == "expired":
        assert api.delete(f"/sessions/{active['id']}").status_code == 200
    else:  # e.g. by an operator's clean-up
        Session.objects.filter(id=active["id"]).delete()
    polls_before = Poll.objects.count()
    once = post_poll(api, active)
    assert not polls._known_sessions  # its statement found it changed, and forgot it
    transaction_path(monkeypatch)
    locked = post_poll(api, active)
    assert once.status_code == locked.status_code and once.status_code in (400, 404), once.content
    assert once.json() == locked.json()
    assert Poll.objects.count() == polls_before  # the guard wrote nothing


def test_an_invalid_payload_gets_the_transaction_s_answer(api, active, sent, monkeypatch):
    assert post_poll(api, active).status_code == 201
    bad = {"info_types": ["no.such.type"]}
    once = post_poll(api, active, bad)
    transaction_path(monkeypatch)
    locked = post_poll(api, active, bad)
    assert once.status_code == locked.status_code == 400
    assert once.json() == locked.json()


def test_a_pending_session_takes_the_transaction(api, user, sent):
    """Its tasks wait for the session's init: they are blocked, and their messages carry no row."""
    pending = create_session(api, user["id"])
    body = post_poll(api, pending).json()
    [task_id] = body["tasks_pending"]
    task = Task.objects.get(id=task_id)
    assert list(task.blocked_by.values_list("type", flat=True)) == ["session.init"]
    assert task_id in sent and sent[task_id] is None


def test_a_session_id_reused_for_another_user_and_source_writes_theirs(api, active, sent):
    """A reset test backend (RICLOUD_DETERMINISTIC) may give a new session an id the process knew
    with another user and source: the statement writes only for the session as it was read."""
    assert post_poll(api, active).status_code == 201  # known with its user and source
    other_user = api.post_json("/users", {"identifier": "u2"}).json()
    other = create_session(api, other_user["id"], "b@example.com")
    user_id, source_id = other["user"], other["source"]["id"]
    Session.objects.filter(id=active["id"]).update(user_id=user_id, source_id=source_id)
    body = post_poll(api, active).json()
    assert (body["user"], body["source"]) == (user_id, source_id)
    assert Task.objects.filter(poll_id=body["id"]).get().source_id == source_id
    assert not polls._known_sessions  # the statement found it changed, and forgot it


# A held POST /polls does not wait for its own WAL flush: its answer reveals the poll only once
# something made it durable (docs/DECISIONS.md 153).

def post_held(api, session, seconds="1"):
    return api.post_json("/polls", {"session": session["id"], "payload": INFO}, HTTP_RICLOUD_AWAIT=seconds)


def test_a_held_poll_s_deadline_answer_flushes_before_it_reads(api, active, sent):
    assert post_poll(api, active).status_code == 201  # reads the session, prepares the statement
    with CaptureQueriesContext(connection) as queries:
        response = post_held(api, active)
    assert response.status_code == 201, response.content
    assert response.json()["state"] == "pending"  # no worker ran: the deadline answered
    sqls = [query["sql"] for query in queries]
    [create] = [number for number, sql in enumerate(sqls) if sql.startswith(polls.NO_FLUSH)]
    flush = sqls.index(polls.FLUSH_WAL)
    reads = [number for number, sql in enumerate(sqls) if '"tasks_app_poll"' in sql]
    assert create < flush < reads[-1]  # the answer's read comes after the flush
    assert Poll.objects.filter(id=response.json()["id"]).exists()


def test_a_held_poll_completed_by_its_worker_answers_without_another_flush(api, active, monkeypatch):
    """The ending that completed it committed synchronously after the create, and the WAL is
    flushed in order: the create is durable when the answer can tell of it."""
    def run_at_once(ids, rows=None):
        for task_id in ids:
            assert runner.run(task_id, max_attempts=5, row=(rows or {}).get(task_id)) == "succeeded"
        return True

    monkeypatch.setattr(dispatch, "send_run_tasks", run_at_once)
    assert post_poll(api, active).status_code == 201
    with CaptureQueriesContext(connection) as queries:
        response = post_held(api, active, "10")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == "completed" and len(body["tasks_succeeded"]) == 1
    assert [query for query in queries if query["sql"].startswith(polls.NO_FLUSH)]
    assert polls.FLUSH_WAL not in [query["sql"] for query in queries]


def test_a_poll_that_is_not_held_waits_for_its_flush(api, active, sent):
    assert post_poll(api, active).status_code == 201
    with CaptureQueriesContext(connection) as queries:
        assert post_poll(api, active).status_code == 201
    assert not [query for query in queries if polls.NO_FLUSH.strip() in query["sql"] or query["sql"] == polls.FLUSH_WAL]

"""The ending that completes a poll of one task sends the completed poll to its waiters
(transitions.py `_completion_notice`), and a held `POST /polls` answers from that message
(polls.py `poll_from_notice`) exactly what it would have read (`completed_poll`)."""
import json

import pytest

from tasks_app.api.serializers import render_poll
from tasks_app.services import transitions
from tasks_app.services.awaiting import poll_channel
from tasks_app.services.polls import completed_poll, create_poll, poll_from_notice
from tests.tasks_app.test_sessions_polls import create_session, init_task
from workers import runner


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"


@pytest.fixture
def notices(monkeypatch):
    """What transitions send on poll channels: channel → messages."""
    sent = {}
    monkeypatch.setattr(transitions, "notify_on_commit",
                        lambda channel, message="1": sent.setdefault(channel, []).append(message))
    return sent


@pytest.fixture
def active(api, key):
    from tasks_app.models import Session

    user = api.post_json("/users", {"identifier": "u1"}).json()
    session = create_session(api, user["id"])
    assert runner.run(init_task(session).id, max_attempts=5) == "succeeded"
    return Session.objects.select_related("source", "user").get(id=session["id"])


def run_poll(key, session, payload):
    poll = create_poll(key=key, session=session, source=None, payload=payload)
    for task in poll.created_tasks:
        runner.run(task.id, max_attempts=5)
    return poll


def rendered(rows) -> dict:
    return json.loads(json.dumps(render_poll(*rows)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("payload", [{"info_types": ["account.info"]}, {"data_types": ["photos"]},
                                     {"info_types": ["account.info"], "mock": {"fail": True}}],
                         ids=["info", "data", "failed"])
def test_a_poll_of_one_task_is_sent_completed_as_it_would_be_read(key, active, notices, payload):
    """Its task ends in one statement of its own (no transaction around it)."""
    poll = run_poll(key, active, payload)
    [message] = notices[poll_channel(poll.id)]
    assert message != "1"
    from_notice = poll_from_notice(message.encode(), poll.id)
    assert from_notice is not None
    assert rendered(from_notice) == rendered(completed_poll(poll.id))
    assert rendered(from_notice)["state"] == "completed"


@pytest.mark.django_db
def test_an_ending_inside_a_transaction_sends_the_poll_too(key, active, notices):
    poll = run_poll(key, active, {"info_types": ["account.info"]})
    [message] = notices[poll_channel(poll.id)]
    assert rendered(poll_from_notice(message, poll.id)) == rendered(completed_poll(poll.id))


@pytest.mark.django_db(transaction=True)
def test_a_poll_of_several_tasks_is_only_woken(key, active, notices):
    """Its last ending does not know the other tasks' final rows: waiters read the poll."""
    poll = run_poll(key, active, {"info_types": ["account.info"], "data_types": ["photos"]})
    assert notices[poll_channel(poll.id)] == ["1"]
    assert poll_from_notice("1", poll.id) is None
    assert completed_poll(poll.id) is not None


@pytest.mark.django_db(transaction=True)
def test_results_written_apart_from_the_ending_are_not_sent(key, active, notices, monkeypatch):
    """More rows than ride in the ending's statement are inserted after it: the poll is only woken."""
    monkeypatch.setattr(transitions, "ROWS_IN_STATEMENT", 0)
    poll = run_poll(key, active, {"info_types": ["account.info"]})
    assert notices[poll_channel(poll.id)] == ["1"]


@pytest.mark.django_db
@pytest.mark.parametrize("message", [b"1", b"", b"{", b"[]", b"[[1], [], []]", b'"x"', b"[null, null, null]"])
def test_anything_else_is_not_taken_for_a_completed_poll(message, key, active):
    assert poll_from_notice(message, "01a20f35-d229-7160-97d1-a9ed1c0cacb3") is None


@pytest.mark.django_db(transaction=True)
def test_another_poll_s_message_is_not_taken(key, active, notices):
    first = run_poll(key, active, {"info_types": ["account.info"]})
    second = create_poll(key=key, session=active, source=None, payload={"info_types": ["account.info"]})
    [message] = notices[poll_channel(first.id)]
    assert poll_from_notice(message, second.id) is None

"""RICLOUD_DETERMINISTIC's hooks (tasks_app/determinism.py, docs/DECISIONS.md 114-115), in process:
the id sequence, ids derived in a worker's run, the poll.completed trigger, rendered timestamps."""
import uuid

import pytest
from django.db import connection

from tasks_app import determinism, ids
from tasks_app.models import Event, Subscription
from tasks_app.notify import get_redis
from workers.tasks import run_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def deterministic():
    get_redis().delete(determinism.TICK_KEY)
    determinism.configure(True)
    yield
    determinism.configure(False)
    determinism._in_worker[0] = False
    with connection.cursor() as cursor:
        determinism.sync_database(cursor)


def tick(value: uuid.UUID) -> int:
    return (value.int >> 80) - determinism.EPOCH_MS


def test_off_ids_are_random_and_times_real():
    assert ids.deterministic is None and determinism.ON is False
    assert ids.uuid7() != ids.uuid7()
    assert tick(ids.uuid7()) > 10**11


def test_request_ids_follow_one_sequence_restarted_by_deleting_its_counter(deterministic):
    first = [ids.uuid7() for _ in range(3)]
    assert [tick(value) for value in first] == [1, 2, 3]
    assert all(value.version == 7 for value in first)
    get_redis().delete(determinism.TICK_KEY)
    assert [ids.uuid7() for _ in range(3)] == first


def test_ids_made_in_a_task_run_derive_from_the_task(deterministic):
    task_id = ids.uuid7()
    determinism._task_started(sender=run_task, args=[str(task_id)])
    try:
        made = [ids.uuid7() for _ in range(3)]
    finally:
        determinism._task_ended()
    assert made == [determinism.derived_id(task_id, rank) for rank in (1, 2, 3)]
    assert all(tick(value) == tick(task_id) for value in made) and sorted(made) == made > [task_id]
    # Outside a run, a worker process (the reaper, subscriptions) makes random ids, never a tick.
    assert tick(ids.uuid7()) > 10**11 and get_redis().get(determinism.TICK_KEY) == b"1"


def test_poll_completed_gets_the_polls_derived_id_whoever_writes_it(deterministic, org):
    organisation, key = org
    poll_id = ids.uuid7()
    with connection.cursor() as cursor:
        determinism.sync_database(cursor)
        cursor.execute(
            "INSERT INTO tasks_app_event (id, organisation_id, key_id, type, action, object_id, state, retries,"
            " date_created) VALUES (%s, %s, %s, 'poll', 'completed', %s, 'pending', 0, now())",
            [uuid.uuid4(), organisation.id, key.id, str(poll_id)])
    expected = determinism.derived_id(poll_id, "poll.completed")
    assert Event.objects.get(object_id=str(poll_id)).id == expected
    other = ids.uuid7()
    event = Event.objects.create(organisation=organisation, key=key, type="poll", action="completed",
                                 object_id=str(other))
    assert event.id == determinism.derived_id(other, "poll.completed")


def test_server_stamped_times_render_as_the_epoch_client_dates_as_given(deterministic, api, key):
    user = api.post_json("/users", {"identifier": "me@example.com"}).json()
    assert user["date_created"] == "2020-01-01T00:00:00Z"
    session = api.post_json("/sessions", {"source": {"user": user["id"], "type": "mocks.mock", "identifier": "a@b"},
                                          "payload": {"password": "x"}}).json()
    assert session["date_created"] == "2020-01-01T00:00:00Z" and session["date_expired"] is None
    assert tick(uuid.UUID(session["id"])) >= 1
    subscription = Subscription.objects.create(
        organisation_id=key.organisation_id, key=key, user_id=user["id"], source_id=session["source"]["id"],
        session_id=session["id"], date_start="2031-05-06T07:08:09Z")
    body = api.get(f"/subscriptions/{subscription.id}").json()
    assert body["date_start"] == "2031-05-06T07:08:09Z" and body["date_created"] == "2020-01-01T00:00:00Z"

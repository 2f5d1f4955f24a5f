"""What an aschannel stream sends on each wake-up (asapi_app/stream.py `scan`, shared by the
threaded and the event-loop stream), and consumption whatever the order of commits."""
import json

import pytest

from asapi_app.stream import scan
from tasks_app.models import Delivery, Task

from .test_endpoints import register, run_submitted, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"


def task_ids(frames_by_delivery) -> list[str]:
    ids = []
    for _, frames in frames_by_delivery:
        head = frames[0].split(b"\r\n")[1]
        ids.append(json.loads(head)["task_id"])
    return ids


def delivered_tasks(v2, count):
    register(v2)
    return [run_submitted(submit(v2, "perform-2fa-challenge", device="0")) for _ in range(count)]


def test_a_delivery_that_appears_below_what_was_sent_is_sent_next(v2, key):
    """Delivery ids are taken when a transaction inserts, and transactions commit in any order: a
    delivery can become visible with an id below one this connection already sent."""
    first, late = delivered_tasks(v2, 2)
    late_row = Delivery.objects.get(task_id=late)
    Delivery.objects.filter(id=late_row.id).delete()  # not committed yet, as far as readers know
    sent = set()
    assert task_ids(scan(key.stream, sent)) == [first]
    # It commits now, with an id below the one just sent.
    lower = Delivery.objects.get(task_id=first).id - 1
    Delivery.objects.create(id=lower, organisation_id=late_row.organisation_id, stream=late_row.stream,
                            task_id=late_row.task_id, result_id=late_row.result_id)
    assert task_ids(scan(key.stream, sent)) == [late]
    assert scan(key.stream, sent) == []  # each delivery once per connection


def test_consumed_deliveries_leave_the_sent_set_and_a_new_connection_gets_the_rest(v2, key):
    consumed, kept = delivered_tasks(v2, 2)
    sent = set()
    assert task_ids(scan(key.stream, sent)) == [consumed, kept]
    assert v2.post("/results-consumed/", {"task_ids": consumed}).json() == {"success": True}
    assert scan(key.stream, sent) == [] and len(sent) == 1
    assert task_ids(scan(key.stream, set())) == [kept]  # a reconnecting client is sent what is pending


def test_a_result_is_delivered_and_marked_in_the_commit_that_ends_the_task(v2):
    """A client can only see a delivery once the task's ending committed, and `has_results` is set
    by that same statement: results-consumed right after the first frame always marks the task."""
    (task_id,) = delivered_tasks(v2, 1)
    task = Task.objects.get(id=task_id)
    assert task.state == "succeeded" and task.has_results
    assert v2.post("/results-consumed/", {"task_ids": task_id}).json() == {"success": True}
    assert v2.post("/task-status/", {"task_ids": task_id}).json()[task_id]["result_retrieved"] is True

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


def test_a_wake_up_that_arrives_during_a_scan_is_not_lost(settings):
    """The event-loop stream (asapi_app/astream.py): a notification that comes while a scan runs
    (its delivery committed after the scan's query) must cause another scan at once, not wait for
    the next heartbeat (30 s here) or another notification."""
    import asyncio
    from types import SimpleNamespace

    from asapi_app.astream import serve_stream

    settings.RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS = 30
    wake = asyncio.Event()
    scans = []

    async def in_request(fn, stream, sent):
        scans.append(stream)
        if len(scans) == 1:
            wake.set()  # the notification of a delivery committed just after this scan's query
            return []
        return [(7, [b"the late delivery"])]

    server = SimpleNamespace(in_request=in_request, hub=SimpleNamespace(up=True, unwatch=lambda *_: None))
    marker = SimpleNamespace(key=SimpleNamespace(stream="stream-x"), sent=set(), first=[], items=lambda: [],
                             request=None)
    sent_bodies = []
    delivered = asyncio.Event()

    async def send(message):
        sent_bodies.append(message.get("body", b""))
        if message.get("body") == b"the late delivery":
            delivered.set()

    async def receive():
        await asyncio.Event().wait()  # the client stays connected

    async def scenario():
        task = asyncio.ensure_future(serve_stream(server, marker, receive, send, wake, ["ricloud:aschannel:stream-x"]))
        wake.set()  # a first notification: the stream scans
        try:
            await asyncio.wait_for(delivered.wait(), 3)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert len(scans) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_consumers_of_overlapping_ids_all_succeed(v2, key):
    """Several streams of one key report the same deliveries consumed at about the same time (the
    2.x client posts results-consumed per stream): every call succeeds and every task is marked."""
    import random
    import threading

    from django.db import connection as db_connection

    from tasks_app.services.accounts import consume_results

    ids = delivered_tasks(v2, 40)
    errors = []

    def consumer(seed):
        rng = random.Random(seed)
        try:
            for _ in range(8):
                chosen = rng.sample(ids, 25)
                consume_results(key=key, task_ids=chosen)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=consumer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    consume_results(key=key, task_ids=ids)
    assert Task.objects.filter(id__in=ids, results_consumed=True).count() == 40
    assert not Delivery.objects.filter(task_id__in=ids, state="pending").exists()

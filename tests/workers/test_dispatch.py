"""Messages pushed straight to the Redis broker are the ones Celery's producer writes."""
import base64
import json

import pytest
from django.conf import settings

from ricloud_server.celery import app
from ricloud_server.metrics import PUBLISHED_AT_HEADER
from ricloud_server.requestlog import CELERY_HEADER, request_id_var
from tasks_app.services.dispatch import RUN_TASK, SENT_HEADER, TASKS_QUEUE, broker_client, send_run_tasks

pytestmark = pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith(("redis", "unix")),
                                reason="the hand-written messages are for the Redis transport")

TASK_ID = "01a20c8f-35f2-73ad-9e1b-eaed901b1098"
# Set per message or per process by the producer: not part of the format.
VARYING = {"delivery_tag", "reply_to", "origin", SENT_HEADER, PUBLISHED_AT_HEADER}


@pytest.fixture
def queue():
    client = broker_client()
    client.delete(TASKS_QUEUE)
    yield client
    client.delete(TASKS_QUEUE)


def fields(raw: bytes) -> dict:
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    for part in ("headers", "properties"):
        message[part] = {name: value for name, value in message[part].items() if name not in VARYING}
    return message


def test_a_pushed_message_is_field_for_field_what_celery_sends(queue):
    app.send_task(RUN_TASK, args=[TASK_ID], queue=TASKS_QUEUE, task_id=TASK_ID, headers={SENT_HEADER: 1.0})
    celerys = queue.rpop(TASKS_QUEUE)
    assert send_run_tasks([TASK_ID])
    ours = queue.rpop(TASKS_QUEUE)
    assert fields(ours) == fields(celerys)
    assert json.loads(ours)["headers"][SENT_HEADER] > 0


def test_the_request_id_travels_in_both(queue):
    token = request_id_var.set("req-dispatch-1")
    try:
        app.send_task(RUN_TASK, args=[TASK_ID], queue=TASKS_QUEUE, task_id=TASK_ID, headers={SENT_HEADER: 1.0})
        celerys = queue.rpop(TASKS_QUEUE)
        assert send_run_tasks([TASK_ID])
        ours = queue.rpop(TASKS_QUEUE)
    finally:
        request_id_var.reset(token)
    assert fields(ours) == fields(celerys)
    assert json.loads(ours)["headers"][CELERY_HEADER] == "req-dispatch-1"


def test_a_batch_is_pushed_in_order(queue):
    ids = [f"01a20c8f-35f2-73ad-9e1b-eaed901b10{n:02d}" for n in range(5)]
    assert send_run_tasks(ids)
    popped = [json.loads(queue.rpop(TASKS_QUEUE))["headers"]["id"] for _ in ids]
    assert popped == ids


def test_a_message_with_a_row_is_what_celery_sends_with_that_keyword(queue):
    row = {"id": TASK_ID, "type": "info", "payload": {"mock": {"x": 1}}}
    app.send_task(RUN_TASK, args=[TASK_ID], kwargs={"row": row}, queue=TASKS_QUEUE, task_id=TASK_ID,
                  headers={SENT_HEADER: 1.0})
    celerys = queue.rpop(TASKS_QUEUE)
    assert send_run_tasks([TASK_ID], {TASK_ID: row})
    ours = queue.rpop(TASKS_QUEUE)
    body = json.loads(base64.b64decode(json.loads(ours)["body"]))
    assert body == json.loads(base64.b64decode(json.loads(celerys)["body"]))
    assert body[:2] == [[TASK_ID], {"row": row}]

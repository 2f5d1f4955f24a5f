"""Test-backend mode against the production web process and a real Celery worker (docs/DECISIONS.md
110-116): a reset while the worker runs tasks, and one scenario run twice on freshly reset
servers, byte for byte the same with RICLOUD_DETERMINISTIC=1 (and not without it)."""
import json
import time
import uuid

import pytest
import requests

from tasks_app.models import Event, Poll, Result, Session, Task
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACCOUNT = "john.appleseed@reincubate.com"


class Recorder:
    """Plain HTTP as one key; every answer is kept as (method, path, status, body bytes)."""

    def __init__(self, base: str, token: str):
        self.base, self.exchanges = base, []
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, expect: int | tuple = 200, record: bool = True, **kwargs):
        response = self.http.request(method, self.base + path, timeout=60, **kwargs)
        expected = expect if isinstance(expect, tuple) else (expect,)
        assert response.status_code in expected, (method, path, response.status_code, response.text[:2000])
        if record:
            self.exchanges.append((method, path, response.status_code, response.content))
        return response.json()


def difference(one: bytes, other: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(one, other, strict=False)) if a != b), min(len(one), len(other)))
    return f"first difference at byte {at}:\n{one[max(0, at - 300):at + 200]}\n{other[max(0, at - 300):at + 200]}"


def scenario(api: Recorder) -> list:
    """Sessions, polls with several tasks and results, events, a v2 submit: one request at a time."""
    api("POST", "/_ricloud/reset", record=False)
    user = api("POST", "/users", 201, json={"identifier": "me@example.com"})
    session = api("POST", "/sessions", 201, headers={"Ricloud-Await": "10"}, json={
        "source": {"user": user["id"], "type": "mocks.mock", "identifier": ACCOUNT}, "payload": {"password": "x"}})
    assert session["state"] == "active", session
    data = api("POST", "/polls", 201, headers={"Ricloud-Await": "10"}, json={
        "session": session["id"], "payload": {"data_types": ["photos", "ios_messages.messages", "notes.notes",
                                                             "contacts.contacts"]}})
    assert data["state"] == "completed" and len(data["results"]["data"]) == 4, data
    info = api("POST", "/polls", 201, headers={"Ricloud-Await": "10"}, json={
        "session": session["id"], "payload": {"info_types": ["*"]}})
    assert info["state"] == "completed", info
    api("GET", f"/polls/{data['id']}")
    api("GET", f"/tasks?poll={data['id']}&limit=100")
    api("GET", "/results?limit=100")
    api("GET", f"/sessions/{session['id']}")
    api("GET", f"/sources/{session['source']['id']}")
    account = api("POST", "/register-account/", data={"service": "iCloud", "username": ACCOUNT})
    assert account["success"], account
    login = api("POST", "/submit-task/", data={"service": "iCloud", "action": "log-in", "account": ACCOUNT,
                                                "password": "x"})
    wait_for(lambda: api("GET", f"/tasks/{login['task_id']}", record=False)["state"] in ("succeeded", "failed"))
    api("POST", "/task-status/", data={"task_ids": login["task_id"]})
    api("GET", f"/tasks/{login['task_id']}")
    api("GET", "/events?limit=1000")
    api("GET", "/tasks?limit=1000")
    return api.exchanges


def test_a_scenario_is_byte_identical_on_two_reset_servers_in_deterministic_mode(start_web, start_worker, e2e_key):
    web = start_web(RICLOUD_RESET_ENABLED=1, RICLOUD_DETERMINISTIC=1)
    worker = start_worker(RICLOUD_DETERMINISTIC=1)
    first = scenario(Recorder(web.url, e2e_key.plaintext_token))
    second = scenario(Recorder(web.url, e2e_key.plaintext_token))
    assert len(first) == len(second) == 15
    for one, other in zip(first, second, strict=True):
        assert one == other, difference(one[3], other[3])
    assert b'"date_created":"2020-01-01T00:00:00Z"' in first[1][3]  # the session
    worker.stop()

    # Without the mode the same scenario answers other ids (the comparison above can fail).
    web = start_web(RICLOUD_RESET_ENABLED=1)
    start_worker()
    first = scenario(Recorder(web.url, e2e_key.plaintext_token))
    second = scenario(Recorder(web.url, e2e_key.plaintext_token))
    assert json.loads(first[0][3])["id"] == json.loads(second[0][3])["id"] == 1  # ids restart at every reset
    assert json.loads(first[1][3])["id"] != json.loads(second[1][3])["id"]  # the session: another UUID
    assert first[1][3] != second[1][3]


def test_reset_while_the_worker_runs_tasks(start_web, start_worker, e2e_key):
    web = start_web(RICLOUD_RESET_ENABLED=1)
    worker = start_worker()
    api = Recorder(web.url, e2e_key.plaintext_token)
    user = api("POST", "/users", 201, json={"identifier": "me@example.com"})
    session = api("POST", "/sessions", 201, headers={"Ricloud-Await": "10"}, json={
        "source": {"user": user["id"], "type": "mocks.mock", "identifier": ACCOUNT}, "payload": {"password": "x"}})
    for _ in range(3):
        api("POST", "/polls", 201, json={"session": session["id"], "payload": {
            "data_types": ["photos", "notes.notes", "contacts.contacts"], "mock": {"delay": 1}}})
    wait_for(lambda: Task.objects.filter(state="processing").exists(), timeout=20, interval=0.05)

    reset = api("POST", "/_ricloud/reset")

    assert reset["cleared"]["rows"]["tasks_app_task"] == 10 and reset["kept"]["keys"] >= 1
    print(f"\nreset with tasks running: {reset['seconds'] * 1000:.1f} ms")
    time.sleep(3)  # the running tasks' delays end: their endings find no row
    assert (Task.objects.count(), Poll.objects.count(), Result.objects.count(), Event.objects.count(),
            Session.objects.count()) == (0, 0, 0, 0, 0)
    # The worker keeps working, and the token still works.
    user = api("POST", "/users", 201, json={"identifier": "again@example.com"})
    session = api("POST", "/sessions", 201, headers={"Ricloud-Await": "10"}, json={
        "source": {"user": user["id"], "type": "mocks.mock", "identifier": ACCOUNT}, "payload": {"password": "x"}})
    assert session["state"] == "active"
    poll = api("POST", "/polls", 201, headers={"Ricloud-Await": "10"},
               json={"session": session["id"], "payload": {"data_types": ["notes.notes"]}})
    assert poll["state"] == "completed" and poll["tasks_succeeded"], poll
    assert all(status < 500 for _, _, status, _ in api.exchanges)
    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert ": 'lost'" in log, log[-3000:]  # the tasks that were running ended finding no row
    uuid.UUID(poll["id"])

"""`Ricloud-Await` against a live server and a real worker (API.md §1.10)."""
import time

import pytest
import requests

from tasks_app.models import Session, Task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def http(live_server, e2e_key):
    session = requests.Session()
    session.headers["Authorization"] = f"Token {e2e_key.plaintext_token}"

    def post(path, body, wait=None):
        headers = {} if wait is None else {"Ricloud-Await": wait}
        started = time.monotonic()
        response = session.post(f"{live_server.url}{path}", json=body, headers=headers, timeout=30)
        assert response.status_code in (200, 201), response.content
        return response.json(), time.monotonic() - started

    post.user = session.post(f"{live_server.url}/users", json={"identifier": "await"}).json()["id"]
    return post


def session_body(user, identifier="await@example.com"):
    return {"source": {"user": user, "type": "mocks.mock", "identifier": identifier}, "payload": {"password": "x"}}


def test_it_returns_as_soon_as_the_session_settles(http, worker):
    body, elapsed = http("/sessions", session_body(http.user), wait="8")
    assert body["state"] == "active" and elapsed < 4
    changed = Session.objects.get(id=body["id"])
    init = Task.objects.get(session=changed)
    assert init.date_completed is not None


def test_it_honours_the_cap_and_returns_the_current_state(http, worker):
    session, _ = http("/sessions", session_body(http.user), wait="8")
    body, elapsed = http("/polls", {"session": session["id"], "payload": {"data_types": ["photos"], "mock": {"delay": 20}}},
                         wait="1.5")
    assert body["state"] in ("pending", "processing") and 1.4 < elapsed < 4


@pytest.mark.parametrize("wait", ["0", "-3", "soon", "nan", None])
def test_zero_negative_or_garbage_means_no_wait(http, wait):
    body, elapsed = http("/sessions", session_body(http.user), wait=wait)  # no worker: it would never settle
    assert body["state"] == "pending" and elapsed < 1


def test_a_poll_waits_for_completion(http, worker):
    session, _ = http("/sessions", session_body(http.user, "poll-await@example.com"), wait="8")
    body, elapsed = http("/polls", {"session": session["id"], "payload": {"info_types": ["*"]}}, wait="8")
    assert body["state"] == "completed" and len(body["tasks_succeeded"]) == 2 and elapsed < 4

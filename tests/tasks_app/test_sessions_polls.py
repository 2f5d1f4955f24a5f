"""API.md §2.5 sessions and §2.6 polls: creation, validation, expiry, and the task lifecycle behind them."""
import hashlib
import json
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest

from tasks_app.models import Poll, Session, Source, Task
from tasks_app.sealing import unseal
from tests.tasks_app.test_conventions import assert_error
from workers.handlers.mockdata import INFO_TYPES
from workers.runner import run

pytestmark = pytest.mark.django_db

SESSION_FIELDS = {"id", "resource", "organisation", "key", "user", "source", "state", "error", "date_created", "date_expired"}
POLL_FIELDS = {
    "id", "resource", "organisation", "key", "user", "source", "session", "subscription", "requestor", "results", "errors",
    "state", "date_created", "date_started", "date_completed", "tasks_pending", "tasks_processing", "tasks_suspended",
    "tasks_succeeded", "tasks_failed",
}
INVALID = "One or more parameters failed validation."


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    return tmp_path


def run_task(task_id):
    return run(task_id, max_attempts=5)


def init_task(session) -> Task:
    return Task.objects.get(session_id=session["id"], type="session.init")


@pytest.fixture
def user(api):
    return api.post_json("/users", {"identifier": "u1"}).json()


def session_body(user_id, identifier="a@example.com", *, type="mocks.mock", payload=None):
    return {"source": {"user": user_id, "type": type, "identifier": identifier}, "payload": payload or {"password": "x"}}


def create_session(client, user_id, identifier="a@example.com", **kwargs):
    response = client.post_json("/sessions", session_body(user_id, identifier, **kwargs))
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def session(api, user):
    """A pending session (its init task not run)."""
    return create_session(api, user["id"])


@pytest.fixture
def active_session(api, session):
    assert run_task(init_task(session).id) == "succeeded"
    return api.get(f"/sessions/{session['id']}").json()


def create_poll(client, session, payload):
    response = client.post_json("/polls", {"session": session["id"], "payload": payload})
    assert response.status_code == 201, response.content
    return response.json()


def get_poll(client, poll):
    return client.get(f"/polls/{poll['id']}").json()


def poll_tasks(poll) -> list[Task]:
    return list(Task.objects.filter(poll_id=poll["id"]).order_by("id"))


def read_result(result: dict) -> bytes:
    with open(urlsplit(result["url"]).path, "rb") as handle:
        return handle.read()


# --- sessions: creation --------------------------------------------------------------------------


class TestCreateSession:
    def test_it_creates_a_pending_session_with_its_source(self, api, key, user):
        response = api.post_json("/sessions", session_body(user["id"]))
        assert response.status_code == 201
        body = response.json()
        session = Session.objects.get()
        source = Source.objects.get()
        assert body == {
            "id": str(session.id),
            "resource": "session",
            "organisation": key.organisation_id,
            "key": key.id,
            "user": user["id"],
            "source": {
                "id": source.id,
                "resource": "source",
                "user": user["id"],
                "type": "mocks.mock",
                "identifier": "a@example.com",
                "info": None,
                "parent": None,
                "children": {"resource": "list", "data": [], "has_more": False, "total_count": 0,
                             "url": f"/sources/{source.id}/children"},
                "state": "unvalidated",
                "date_created": body["source"]["date_created"],
            },
            "state": "pending",
            "error": None,
            "date_created": body["date_created"],
            "date_expired": None,
        }
        assert unseal(session.credentials) == {"password": "x"}  # stored sealed, for session.init

    def test_it_never_renders_the_credentials(self, api, user):
        body = api.post_json("/sessions", session_body(user["id"], payload={"password": "s3cret"})).json()
        assert "s3cret" not in json.dumps(body)
        assert "s3cret" not in api.get(f"/sessions/{body['id']}").content.decode()

    @pytest.mark.parametrize("source_type", ["mocks.mock", "icloud.account"])
    def test_it_queues_exactly_one_session_init_task(self, api, key, user, source_type):
        body = create_session(api, user["id"], type=source_type)
        task = Task.objects.get()
        assert (task.type, task.source_type, task.state, task.target) == ("session.init", source_type, "pending", None)
        assert (str(task.session_id), task.source_id, task.user_id, task.key_id, task.poll_id) == (
            body["id"], body["source"]["id"], user["id"], key.id, None
        )
        listed = api.get("/tasks", {"session": body["id"]}).json()["data"]
        assert [item["id"] for item in listed] == [str(task.id)]

    @pytest.mark.parametrize("user_id", [lambda u: u["id"], lambda u: str(u["id"])])
    def test_user_ids_may_be_numbers_or_strings(self, api, user, user_id):
        body = create_session(api, user_id(user))
        assert body["user"] == user["id"] and body["source"]["user"] == user["id"]

    @pytest.mark.parametrize(
        "body, params",
        [
            ({"payload": {}}, {"source": ["This field is required."]}),
            ({"source": "a@example.com", "payload": {}},
             {"source": {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}}),
            ({"source": ["a"], "payload": {}},
             {"source": {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}}),
            ({"source": {"user": "{user}", "type": "mocks.mock", "identifier": "a"}},
             {"payload": ["This field is required."]}),
            ({"source": {"user": "{user}", "type": "mocks.mock", "identifier": "a"}, "payload": ["x"]},
             {"payload": ['Expected a dictionary of items but got type "list".']}),
            ({"source": {"user": "{user}", "type": "mocks.mock", "identifier": "a"}, "payload": "x"},
             {"payload": ['Expected a dictionary of items but got type "str".']}),
            ({"source": {"type": "mocks.mock", "identifier": "a"}, "payload": {}},
             {"source": {"user": ["This field is required."]}}),
            ({"source": {"user": "abc", "type": "mocks.mock", "identifier": "a"}, "payload": {}},
             {"source": {"user": ["A valid integer is required."]}}),
            ({"source": {"user": "{user}", "identifier": "a"}, "payload": {}},
             {"source": {"type": ["This field is required."]}}),
            ({"source": {"user": "{user}", "type": "mocks.mock"}, "payload": {}},
             {"source": {"identifier": ["This field is required."]}}),
            ({"source": {"user": "{user}", "type": "mocks.mock", "identifier": ""}, "payload": {}},
             {"source": {"identifier": ["This field may not be blank."]}}),
            ({"source": {"user": "{user}", "type": "mocks.mock", "identifier": 5}, "payload": {}},
             {"source": {"identifier": ["Not a valid string."]}}),
            ({"source": {"user": "{user}", "type": "nope.nope", "identifier": "a"}, "payload": {}},
             {"source": {"type": ["Unsupported source type; supported: icloud.account, mocks.mock."]}}),
        ],
    )
    def test_it_validates(self, api, user, body, params):
        body = json.loads(json.dumps(body).replace('"{user}"', str(user["id"])))
        response = api.post_json("/sessions", body)
        assert assert_error(response, 400, "invalid-parameter")["params"] == params
        assert not Session.objects.exists() and not Source.objects.exists() and not Task.objects.exists()

    def test_an_unknown_user_is_rejected(self, api, user):
        response = api.post_json("/sessions", session_body(999999))
        assert assert_error(response, 400, "invalid-parameter")["params"] == {"source": ["No user with id 999999."]}
        assert not Session.objects.exists()

    def test_a_user_of_another_organisation_is_rejected(self, api, other_api):
        theirs = other_api.post_json("/users", {"identifier": "u"}).json()
        response = api.post_json("/sessions", session_body(theirs["id"]))
        assert assert_error(response, 400, "invalid-parameter")["params"] == {"source": [f"No user with id {theirs['id']}."]}
        assert not Session.objects.exists() and not Source.objects.exists()


# --- sessions: lifecycle -------------------------------------------------------------------------


class TestSessionLifecycle:
    def test_a_successful_init_activates_the_session_and_its_source(self, api, session):
        assert run_task(init_task(session).id) == "succeeded"
        body = api.get(f"/sessions/{session['id']}").json()
        assert body["state"] == "active" and body["error"] is None and body["date_expired"] is None
        assert body["source"]["state"] == "active"
        assert set(body["source"]["info"]) == {"name", "first_name", "last_name", "full_name", "country"}
        task = api.get(f"/tasks/{init_task(session).id}").json()
        assert task["state"] == "succeeded" and task["error"] is None and task["results"]["data"] == []

    @pytest.mark.parametrize(
        "identifier, payload, error, source_state",
        [
            ("a@example.com", {"password": "wrong-password"}, "invalid-credentials", "unvalidated"),
            ("2fa@example.com", {"password": "x"}, "code-required", "unvalidated"),
            ("2fa@example.com", {"password": "x", "code": ""}, "code-required", "unvalidated"),
            ("2fa@example.com", {"password": "x", "code": "000000"}, "code-invalid", "unvalidated"),
            ("locked@example.com", {"password": "x"}, "source-locked", "locked"),
        ],
    )
    def test_a_failed_init_fails_the_session_with_its_code(self, api, user, identifier, payload, error, source_state):
        session = create_session(api, user["id"], identifier, payload=payload)
        assert run_task(init_task(session).id) == "failed"
        body = api.get(f"/sessions/{session['id']}").json()
        assert (body["state"], body["error"], body["date_expired"]) == ("failed", error, None)
        assert body["source"]["state"] == source_state
        task = api.get(f"/tasks/{init_task(session).id}").json()
        assert (task["state"], task["error"]) == ("failed", error)

    def test_the_2fa_retry_activates_a_second_session_on_the_same_source(self, api, user):
        first = create_session(api, user["id"], "2fa@example.com", payload={"password": "x"})
        run_task(init_task(first).id)
        assert api.get(f"/sessions/{first['id']}").json()["error"] == "code-required"
        second = create_session(api, user["id"], "2fa@example.com", payload={"password": "x", "code": "123456"})
        assert second["state"] == "pending" and second["source"]["id"] == first["source"]["id"]
        assert run_task(init_task(second).id) == "succeeded"
        body = api.get(f"/sessions/{second['id']}").json()
        assert body["state"] == "active" and body["source"]["state"] == "active"
        assert api.get(f"/sessions/{first['id']}").json()["state"] == "failed"
        assert Source.objects.count() == 1

    def test_a_failed_session_refuses_polls(self, api, user):
        session = create_session(api, user["id"], payload={"password": "wrong-password"})
        run_task(init_task(session).id)
        response = api.post_json("/polls", {"session": session["id"], "payload": {"data_types": ["photos"]}})
        body = assert_error(response, 400, "invalid-parameter")
        assert set(body["params"]) == {"session"}
        assert not Poll.objects.exists()

    def test_poll_tasks_waiting_for_a_failed_init_fail(self, api, user):
        session = create_session(api, user["id"], payload={"password": "wrong-password"})
        poll = create_poll(api, session, {"data_types": ["photos"]})
        (task,) = poll_tasks(poll)
        assert run_task(task.id) == "suspended"
        assert run_task(init_task(session).id) == "failed"
        assert run_task(task.id) == "failed"
        body = get_poll(api, poll)
        assert body["state"] == "completed" and body["tasks_failed"] == [str(task.id)]
        assert body["errors"] == [{"task": str(task.id), "type": "data", "target": "photos", "error": "session-failed"}]


class TestExpireSession:
    def test_delete_expires_a_pending_session_and_fails_its_waiting_tasks(self, api, session):
        poll = create_poll(api, session, {"data_types": ["photos", "messages.sms"]})
        tasks = poll_tasks(poll)
        assert run_task(tasks[0].id) == "suspended"
        response = api.delete(f"/sessions/{session['id']}")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == SESSION_FIELDS
        assert (body["id"], body["state"], body["error"]) == (session["id"], "expired", "organisation")
        assert body["date_expired"] is not None and body["date_expired"].endswith("Z")
        assert body["source"]["id"] == session["source"]["id"]
        states = {t.id: (t.state, t.error) for t in Task.objects.filter(session_id=session["id"])}
        assert states == {task.id: ("failed", "session-expired") for task in [init_task(session), *tasks]}
        assert api.get(f"/sessions/{session['id']}").json() == body
        poll_body = get_poll(api, poll)
        assert poll_body["tasks_failed"] == [str(t.id) for t in tasks]
        assert poll_body["tasks_pending"] == [] and poll_body["tasks_suspended"] == []

    def test_delete_expires_an_active_session(self, api, active_session):
        poll = create_poll(api, active_session, {"data_types": ["photos"]})
        body = api.delete(f"/sessions/{active_session['id']}").json()
        assert (body["state"], body["error"]) == ("expired", "organisation")
        task = api.get(f"/tasks/{poll['tasks_pending'][0]}").json()
        assert (task["state"], task["error"]) == ("failed", "session-expired")
        # Succeeded work is history: it is not rewritten.
        assert init_task(active_session).state == "succeeded"
        assert body["source"]["state"] == "active"

    def test_delete_twice_changes_nothing(self, api, session):
        first = api.delete(f"/sessions/{session['id']}").json()
        second = api.delete(f"/sessions/{session['id']}")
        assert second.status_code == 200 and second.json() == first

    def test_delete_leaves_a_failed_session_failed(self, api, user):
        session = create_session(api, user["id"], payload={"password": "wrong-password"})
        run_task(init_task(session).id)
        body = api.delete(f"/sessions/{session['id']}").json()
        assert (body["state"], body["error"], body["date_expired"]) == ("failed", "invalid-credentials", None)

    def test_an_expired_session_refuses_polls(self, api, active_session):
        api.delete(f"/sessions/{active_session['id']}")
        response = api.post_json("/polls", {"session": active_session["id"], "payload": {"data_types": ["photos"]}})
        assert_error(response, 400, "session-expired")
        assert not Poll.objects.exists()

    def test_a_foreign_session_is_404(self, other_api, session):
        assert_error(other_api.delete(f"/sessions/{session['id']}"), 404, "not-found")
        assert_error(other_api.get(f"/sessions/{session['id']}"), 404, "not-found")
        assert Session.objects.get(id=session["id"]).state == "pending"


class TestListSessions:
    @pytest.fixture
    def sessions(self, api, user):
        bob = api.post_json("/users", {"identifier": "bob"}).json()
        a = create_session(api, user["id"], "a@example.com")
        b = create_session(api, user["id"], "b@example.com", payload={"password": "wrong-password"})
        c = create_session(api, bob["id"], "c@example.com")
        run_task(init_task(a).id)
        run_task(init_task(b).id)
        api.delete(f"/sessions/{c['id']}")
        for name, session in (("a", a), ("b", b), ("c", c)):
            day = {"a": 1, "b": 2, "c": 3}[name]
            Session.objects.filter(id=session["id"]).update(date_created=datetime(2024, 1, day, tzinfo=timezone.utc))
        Session.objects.filter(id=c["id"]).update(date_expired=datetime(2024, 2, 1, tzinfo=timezone.utc))
        return {"a": a, "b": b, "c": c, "alice": user["id"], "bob": bob["id"]}

    def test_it_lists_newest_first(self, api, sessions):
        body = api.get("/sessions").json()
        assert [item["id"] for item in body["data"]] == [sessions[n]["id"] for n in "cba"]
        assert body["url"] == "/sessions" and body["total_count"] == 3
        assert all(set(item) == SESSION_FIELDS for item in body["data"])

    @pytest.mark.parametrize(
        "params, expected",
        [
            (lambda s: {"source": s["a"]["source"]["id"]}, "a"),
            (lambda s: {"user": s["alice"]}, "ba"),
            (lambda s: {"user": s["bob"]}, "c"),
            (lambda s: {"state": "active"}, "a"),
            (lambda s: {"state": "failed"}, "b"),
            (lambda s: {"state": "expired"}, "c"),
            (lambda s: {"state": "pending"}, ""),
            (lambda s: {"source": s["a"]["source"]["id"], "state": "active", "limit": 1}, "a"),
            (lambda s: {"date_created": "2024-01-02T00:00:00Z"}, "b"),
            (lambda s: {"date_created__gte": "2024-01-02T00:00:00Z"}, "cb"),
            (lambda s: {"date_created__lt": "2024-01-02T00:00:00"}, "a"),
            (lambda s: {"date_expired__gte": "2024-01-15T00:00:00.000Z"}, "c"),
        ],
    )
    def test_filters(self, api, sessions, params, expected):
        response = api.get("/sessions", params(sessions))
        assert response.status_code == 200, response.content
        assert [item["id"] for item in response.json()["data"]] == [sessions[n]["id"] for n in expected]

    @pytest.mark.parametrize("params", [{"state": "bogus"}, {"source": "x"}, {"user": "-1"}, {"date_created__gt": "soon"}])
    def test_bad_filter_values_are_400(self, api, sessions, params):
        body = assert_error(api.get("/sessions", params), 400, "invalid-parameter")
        assert set(body["params"]) == set(params)

    def test_sessions_of_other_organisations_are_not_listed(self, other_api, sessions):
        assert other_api.get("/sessions").json()["data"] == []

    def test_the_list_takes_a_constant_number_of_queries(self, api, user, sessions, django_assert_num_queries):
        for i in range(4):
            create_session(api, user["id"], f"more{i}@example.com")
        # 1. count 2. sessions joined to their sources 3. the sources' children (the key is cached)
        with django_assert_num_queries(3):
            body = api.get("/sessions").json()
        assert len(body["data"]) == 7


# --- polls: creation -----------------------------------------------------------------------------


class TestCreatePoll:
    def test_it_creates_one_task_per_item(self, api, key, session):
        payload = {"info_types": ["*"], "data_types": ["ios_messages.messages", "whatsapp.messages"], "files": ["f1", "f2"]}
        response = api.post_json("/polls", {"session": session["id"], "payload": payload})
        assert response.status_code == 201
        body = response.json()
        poll = Poll.objects.get()
        tasks = poll_tasks(body)
        assert body == {
            "id": str(poll.id),
            "resource": "poll",
            "organisation": key.organisation_id,
            "key": key.id,
            "user": session["user"],
            "source": session["source"]["id"],
            "session": session["id"],
            "subscription": None,
            "requestor": "api",
            "results": {"resource": "list", "data": [], "has_more": False, "total_count": 0,
                        "url": f"/results?poll={poll.id}"},
            "errors": [],
            "state": "pending",
            "date_created": body["date_created"],
            "date_started": None,
            "date_completed": None,
            "tasks_pending": [str(t.id) for t in tasks],
            "tasks_processing": [],
            "tasks_suspended": [],
            "tasks_succeeded": [],
            "tasks_failed": [],
        }
        assert [(t.type, t.target) for t in tasks] == [
            ("info", INFO_TYPES[0]), ("info", INFO_TYPES[1]),
            ("data", "ios_messages.messages"), ("data", "whatsapp.messages"),
            ("file", "f1"), ("file", "f2"),
        ]
        assert INFO_TYPES == ("account.info", "account.devices")
        for task in tasks:
            assert (task.source_type, str(task.session_id), task.source_id, task.user_id, task.key_id, task.state) == (
                "mocks.mock", session["id"], session["source"]["id"], session["user"], key.id, "pending"
            )

    def test_duplicates_are_requested_once(self, api, active_session):
        poll = create_poll(api, active_session, {"info_types": ["account.info", "account.info"],
                                                 "data_types": ["photos", "photos"], "files": ["f", "f"]})
        assert [(t.type, t.target) for t in poll_tasks(poll)] == [("info", "account.info"), ("data", "photos"), ("file", "f")]

    def test_tasks_of_a_pending_session_wait_for_its_init(self, api, session):
        poll = create_poll(api, session, {"data_types": ["photos", "messages.sms"]})
        init = init_task(session)
        tasks = poll_tasks(poll)
        assert all(list(task.blocked_by.all()) == [init] for task in tasks)
        for task in tasks:
            assert run_task(task.id) == "suspended"
        body = get_poll(api, poll)
        assert body["tasks_suspended"] == [str(t.id) for t in tasks] and body["tasks_pending"] == []
        assert api.get(f"/tasks/{tasks[0].id}").json()["state"] == "suspended"
        assert run_task(init.id) == "succeeded"
        for task in tasks:
            assert run_task(task.id) == "succeeded"
        body = get_poll(api, poll)
        assert body["state"] == "completed" and body["tasks_succeeded"] == [str(t.id) for t in tasks]
        assert [r["identifier"] for r in body["results"]["data"]] == ["photos", "messages.sms"]

    def test_tasks_of_an_active_session_do_not_wait(self, api, active_session):
        poll = create_poll(api, active_session, {"data_types": ["photos"]})
        (task,) = poll_tasks(poll)
        assert list(task.blocked_by.all()) == []
        assert run_task(task.id) == "succeeded"

    def test_the_poll_goes_pending_processing_completed(self, api, active_session):
        poll = create_poll(api, active_session, {"info_types": ["account.info"], "data_types": ["messages.sms"]})
        assert (poll["state"], poll["date_started"], poll["date_completed"]) == ("pending", None, None)
        first, second = poll_tasks(poll)
        assert run_task(first.id) == "succeeded"
        body = get_poll(api, poll)
        assert body["state"] == "processing" and body["date_started"] is not None and body["date_completed"] is None
        assert body["tasks_succeeded"] == [str(first.id)] and body["tasks_pending"] == [str(second.id)]
        assert [r["identifier"] for r in body["results"]["data"]] == ["account.info"]
        assert run_task(second.id) == "succeeded"
        body = get_poll(api, poll)
        assert body["state"] == "completed" and body["date_completed"] >= body["date_started"]
        assert body["tasks_succeeded"] == [str(first.id), str(second.id)] and body["errors"] == []
        assert body["results"]["total_count"] == 2
        assert {(r["task"], r["poll"], r["identifier"], r["type"]) for r in body["results"]["data"]} == {
            (str(first.id), poll["id"], "account.info", "json"), (str(second.id), poll["id"], "messages.sms", "json")
        }

    def test_a_claimed_task_is_listed_as_processing(self, api, active_session):
        from tasks_app.services.transitions import claim_task

        poll = create_poll(api, active_session, {"data_types": ["photos", "messages.sms"]})
        first, second = poll_tasks(poll)
        assert claim_task(first.id) is not None
        body = get_poll(api, poll)
        assert body["state"] == "processing"
        assert body["tasks_processing"] == [str(first.id)] and body["tasks_pending"] == [str(second.id)]
        assert api.get(f"/tasks/{first.id}").json()["state"] == "processing"

    def test_a_failing_data_task_still_completes_the_poll(self, api, active_session):
        poll = create_poll(api, active_session, {"data_types": ["messages.sms", "whatsapp.messages"],
                                                 "mock": {"fail": ["whatsapp.messages"]}})
        sms, whatsapp = poll_tasks(poll)
        assert run_task(sms.id) == "succeeded"
        assert run_task(whatsapp.id) == "failed"
        body = get_poll(api, poll)
        assert body["state"] == "completed"
        assert body["tasks_succeeded"] == [str(sms.id)] and body["tasks_failed"] == [str(whatsapp.id)]
        assert body["errors"] == [{"task": str(whatsapp.id), "type": "data", "target": "whatsapp.messages",
                                   "error": "mock-failure"}]
        assert [r["identifier"] for r in body["results"]["data"]] == ["messages.sms"]
        task = api.get(f"/tasks/{whatsapp.id}").json()
        assert (task["state"], task["error"], task["results"]["data"]) == ("failed", "mock-failure", [])

    def test_fail_true_fails_every_task(self, api, active_session):
        poll = create_poll(api, active_session, {"info_types": ["*"], "mock": {"fail": True}})
        for task in poll_tasks(poll):
            assert run_task(task.id) == "failed"
        body = get_poll(api, poll)
        assert body["state"] == "completed" and len(body["tasks_failed"]) == 2
        assert [e["error"] for e in body["errors"]] == ["mock-failure", "mock-failure"]
        assert body["results"]["data"] == []

    def test_result_size_pads_the_document(self, api, active_session):
        poll = create_poll(api, active_session, {"data_types": ["messages.sms"], "mock": {"result_size": 50000}})
        run_task(poll["tasks_pending"][0])
        (result,) = get_poll(api, poll)["results"]["data"]
        assert result["size"] == 50000 == len(read_result(result))

    @pytest.mark.parametrize("since", ["2023-07-01T00:00:00Z", "2023-07-01T00:00:00", "2023-07-01T01:00:00+01:00"])
    def test_since_and_until_limit_the_data(self, api, active_session, since):
        poll = create_poll(api, active_session, {"data_types": ["messages.sms"], "since": since,
                                                 "until": "2023-10-01T00:00:00.000Z"})
        assert Poll.objects.get(id=poll["id"]).payload["since"] == "2023-07-01T00:00:00Z"
        run_task(poll["tasks_pending"][0])
        (result,) = get_poll(api, poll)["results"]["data"]
        document = json.loads(read_result(result))
        assert document["metadata"]["since"] == "2023-07-01T00:00:00Z"
        assert document["metadata"]["count"] == len(document["data"])
        assert all("2023-07-01T00:00:00Z" <= entry["date"] <= "2023-10-01T00:00:00Z" for entry in document["data"])

    def test_source_may_be_a_child_of_the_sessions_source(self, api, key, active_session):
        root = Source.objects.get(id=active_session["source"]["id"])
        child = Source.objects.create(organisation_id=key.organisation_id, user_id=root.user_id, type="mocks.mock",
                                      identifier="child@example.com", parent=root)
        response = api.post_json("/polls", {"session": active_session["id"], "source": child.id,
                                            "payload": {"data_types": ["photos"]}})
        assert response.status_code == 201, response.content
        assert response.json()["source"] == child.id
        assert Task.objects.get(poll_id=response.json()["id"]).source_id == child.id

    def test_source_must_belong_to_the_session(self, api, user, active_session):
        other = create_session(api, user["id"], "other@example.com")
        response = api.post_json("/polls", {"session": active_session["id"], "source": other["source"]["id"],
                                            "payload": {"data_types": ["photos"]}})
        assert set(assert_error(response, 400, "invalid-parameter")["params"]) == {"source"}
        assert not Poll.objects.exists()


class TestFilesPoll:
    @pytest.fixture
    def photos(self, api, active_session):
        """The `photos` data document of the session's source, read from storage."""
        poll = create_poll(api, active_session, {"data_types": ["photos"]})
        assert run_task(poll["tasks_pending"][0]) == "succeeded"
        (result,) = get_poll(api, poll)["results"]["data"]
        content = read_result(result)
        assert hashlib.md5(content).hexdigest() == result["checksum"] and len(content) == result["size"]
        return json.loads(content)

    def test_files_named_by_a_data_result_are_published(self, api, active_session, photos):
        files = {f["id"]: f for entry in photos["data"] for f in entry["files"]}
        wanted = list(files)[:3]
        poll = create_poll(api, active_session, {"files": wanted})
        tasks = poll_tasks(poll)
        assert [(t.type, t.target) for t in tasks] == [("file", file_id) for file_id in wanted]
        for task in tasks:
            assert run_task(task.id) == "succeeded"
        body = get_poll(api, poll)
        assert body["state"] == "completed" and body["errors"] == []
        results = {r["identifier"]: r for r in body["results"]["data"]}
        assert set(results) == set(wanted)
        for file_id in wanted:
            result, content = results[file_id], read_result(results[file_id])
            assert result["type"] == files[file_id]["extension"]
            assert result["checksum"] == hashlib.md5(content).hexdigest() == files[file_id]["checksum"]
            assert result["size"] == len(content) == files[file_id]["size"]

    def test_a_file_task_waiting_for_many_data_tasks_is_not_exhausted_by_waiting(self, api, active_session, photos):
        # Every finished blocker wakes the suspended file task (API.md §1.13); with Celery it may run
        # while the other data tasks are still going and suspend again. Waiting is not a failed attempt.
        file_id = photos["data"][0]["files"][0]["id"]
        poll = create_poll(api, active_session, {"data_types": ["*"], "files": [file_id]})
        tasks = poll_tasks(poll)
        data_tasks, file_task = tasks[:-1], tasks[-1]
        assert len(data_tasks) == 8 and file_task.type == "file"
        assert run_task(file_task.id) == "suspended"
        for data_task in data_tasks[:-1]:
            assert run_task(data_task.id) == "succeeded"
            assert run_task(file_task.id) == "suspended"
        assert run_task(data_tasks[-1].id) == "succeeded"
        assert run_task(file_task.id) == "succeeded"
        body = get_poll(api, poll)
        assert body["errors"] == [] and len(body["tasks_succeeded"]) == 9
        assert file_id in [r["identifier"] for r in body["results"]["data"]]

    @pytest.mark.parametrize("file_id", ["nonsense", "photo-0-0-deadbeef", "sms-0-a0-00000000"])
    def test_an_unknown_file_fails_its_task(self, api, active_session, photos, file_id):
        poll = create_poll(api, active_session, {"files": [file_id]})
        assert run_task(poll["tasks_pending"][0]) == "failed"
        body = get_poll(api, poll)
        assert body["state"] == "completed" and body["results"]["data"] == []
        assert body["errors"] == [{"task": poll["tasks_pending"][0], "type": "file", "target": file_id,
                                   "error": "file-not-found"}]

    def test_a_file_of_another_source_is_not_found(self, api, user, photos):
        other = create_session(api, user["id"], "someone.else@example.com")
        run_task(init_task(other).id)
        file_id = photos["data"][0]["files"][0]["id"]
        poll = create_poll(api, other, {"files": [file_id]})
        assert run_task(poll["tasks_pending"][0]) == "failed"
        assert Task.objects.get(id=poll["tasks_pending"][0]).error == "file-not-found"


class TestPollValidation:
    @pytest.mark.parametrize(
        "payload, params",
        [
            ({}, {"non_field_errors": ["Request at least one of info_types, data_types or files."]}),
            ({"data_types": []}, {"non_field_errors": ["Request at least one of info_types, data_types or files."]}),
            ({"data_types": "photos"}, {"data_types": ['Expected a list of items but got type "str".']}),
            ({"data_types": [1]}, {"data_types": {"0": ["Not a valid string."]}}),
            ({"info_types": {"a": 1}}, {"info_types": ['Expected a list of items but got type "dict".']}),
            ({"files": [None]}, {"files": {"0": ["This field may not be null."]}}),
            ({"files": ["f"] * 1001}, {"files": ["Ensure this field has no more than 1000 elements."]}),
            ({"data_types": ["photos"], "since": "yesterday"}, {"since": None}),
            ({"data_types": ["photos"], "until": 1700000000}, {"until": None}),
            ({"data_types": ["photos"], "mock": "x"},
             {"mock": {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}}),
            ({"data_types": ["photos"], "mock": {"fail": "yes"}},
             {"mock": {"fail": ["Must be true/false or a list of targets."]}}),
            ({"data_types": ["photos"], "mock": {"fail": [1]}},
             {"mock": {"fail": ["Must be true/false or a list of targets."]}}),
            ({"data_types": ["photos"], "mock": {"delay": "soon"}}, {"mock": {"delay": ["A valid number is required."]}}),
            ({"data_types": ["photos"], "mock": {"delay": -1}},
             {"mock": {"delay": ["Ensure this value is greater than or equal to 0."]}}),
            ({"data_types": ["photos"], "mock": {"result_size": "big"}},
             {"mock": {"result_size": ["A valid integer is required."]}}),
            ({"data_types": ["photos"], "mock": {"result_size": -5}},
             {"mock": {"result_size": ["Ensure this value is greater than or equal to 0."]}}),
        ],
    )
    def test_it_validates_the_payload(self, api, active_session, payload, params):
        response = api.post_json("/polls", {"session": active_session["id"], "payload": payload})
        body = assert_error(response, 400, "invalid-parameter")
        if None in params.values():
            assert set(body["params"]["payload"]) == set(params)
        else:
            assert body["params"] == {"payload": params}
        assert not Poll.objects.exists() and Task.objects.filter(poll__isnull=False).count() == 0

    def test_a_boolean_delay_is_not_a_number(self, api, active_session):
        payload = {"data_types": ["photos"], "mock": {"delay": True}}
        body = assert_error(api.post_json("/polls", {"session": active_session["id"], "payload": payload}),
                            400, "invalid-parameter")
        assert list(body["params"]) == ["payload"] and list(body["params"]["payload"]["mock"]) == ["delay"]
        assert not Poll.objects.exists()

    def test_unknown_data_and_info_types_are_rejected(self, api, active_session):
        response = api.post_json("/polls", {"session": active_session["id"], "payload": {"data_types": ["photos", "nope"]}})
        body = assert_error(response, 400, "invalid-parameter")
        assert list(body["params"]) == ["payload"] and list(body["params"]["payload"]) == ["data_types"]
        assert body["params"]["payload"]["data_types"][0].startswith("Unknown for this source type: nope.")
        response = api.post_json("/polls", {"session": active_session["id"], "payload": {"info_types": ["account.nope"]}})
        body = assert_error(response, 400, "invalid-parameter")
        assert list(body["params"]["payload"]) == ["info_types"]
        assert not Poll.objects.exists()

    def test_more_than_1000_items_in_total_are_rejected(self, api, active_session):
        payload = {"info_types": ["*"], "files": [f"f{i}" for i in range(999)]}
        body = assert_error(api.post_json("/polls", {"session": active_session["id"], "payload": payload}),
                            400, "invalid-parameter")
        assert body["params"] == {"payload": {"non_field_errors": ["A poll may request at most 1000 items; got 1001."]}}
        assert not Poll.objects.exists()

    def test_exactly_1000_items_are_accepted(self, api, active_session):
        payload = {"info_types": ["*"], "files": [f"f{i}" for i in range(998)]}
        poll = create_poll(api, active_session, payload)
        assert len(poll["tasks_pending"]) == 1000

    @pytest.mark.parametrize(
        "body, params",
        [
            ({"payload": {"data_types": ["photos"]}}, {"session": ["This field is required."]}),
            ({"session": "not-a-uuid", "payload": {"data_types": ["photos"]}}, {"session": ["Must be a valid UUID."]}),
            ({"session": "{session}"}, {"payload": ["This field is required."]}),
            ({"session": "{session}", "payload": ["photos"]},
             {"payload": {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}}),
        ],
    )
    def test_it_validates_the_body(self, api, active_session, body, params):
        body = json.loads(json.dumps(body).replace("{session}", active_session["id"]))
        assert assert_error(api.post_json("/polls", body), 400, "invalid-parameter")["params"] == params

    def test_an_unknown_session_is_rejected(self, api, active_session):
        unknown = str(uuid.uuid4())
        response = api.post_json("/polls", {"session": unknown, "payload": {"data_types": ["photos"]}})
        assert assert_error(response, 400, "invalid-parameter")["params"] == {"session": [f"No session with id {unknown}."]}

    def test_a_session_of_another_organisation_is_rejected(self, other_api, active_session):
        response = other_api.post_json("/polls", {"session": active_session["id"], "payload": {"data_types": ["photos"]}})
        body = assert_error(response, 400, "invalid-parameter")
        assert body["params"] == {"session": [f"No session with id {active_session['id']}."]}
        assert not Poll.objects.exists()


class TestListPolls:
    @pytest.fixture
    def polls(self, api, user, active_session):
        other = create_session(api, user["id"], "b@example.com")
        run_task(init_task(other).id)
        a = create_poll(api, active_session, {"data_types": ["photos"]})
        b = create_poll(api, active_session, {"data_types": ["messages.sms"]})
        c = create_poll(api, other, {"info_types": ["*"]})
        run_task(a["tasks_pending"][0])
        run_task(c["tasks_pending"][0])
        return {"a": a["id"], "b": b["id"], "c": c["id"], "s1": active_session["id"], "s2": other["id"]}

    def test_it_lists_newest_first(self, api, polls):
        body = api.get("/polls").json()
        assert [item["id"] for item in body["data"]] == [polls[n] for n in "cba"]
        assert body["url"] == "/polls" and body["total_count"] == 3
        assert all(set(item) == POLL_FIELDS for item in body["data"])

    @pytest.mark.parametrize(
        "params, expected",
        [
            (lambda p: {"session": p["s1"]}, "ba"),
            (lambda p: {"session": p["s2"]}, "c"),
            (lambda p: {"session": p["s1"], "limit": 1}, "b"),
            (lambda p: {"state": "completed"}, "a"),
            (lambda p: {"state": "processing"}, "c"),
            (lambda p: {"state": "pending"}, "b"),
            (lambda p: {"session": p["s2"], "state": "pending"}, ""),
            (lambda p: {"requestor": "api"}, "cba"),
            (lambda p: {"requestor": "subscription"}, ""),
        ],
    )
    def test_filters(self, api, polls, params, expected):
        response = api.get("/polls", params(polls))
        assert response.status_code == 200, response.content
        assert [item["id"] for item in response.json()["data"]] == [polls[n] for n in expected]

    @pytest.mark.parametrize("params", [{"session": "nope"}, {"state": "failed"}, {"date_completed__lte": "later"}])
    def test_bad_filter_values_are_400(self, api, polls, params):
        body = assert_error(api.get("/polls", params), 400, "invalid-parameter")
        assert set(body["params"]) == set(params)

    def test_polls_of_other_organisations_are_invisible(self, other_api, polls):
        assert other_api.get("/polls").json()["data"] == []
        assert other_api.get("/polls", {"session": polls["s1"]}).json()["data"] == []
        assert_error(other_api.get(f"/polls/{polls['a']}"), 404, "not-found")

    @pytest.mark.parametrize("count", [2, 6])
    def test_the_list_takes_a_constant_number_of_queries(self, api, active_session, count, django_assert_num_queries):
        for _ in range(count):
            poll = create_poll(api, active_session, {"data_types": ["photos", "messages.sms"]})
            for task_id in poll["tasks_pending"]:
                run_task(task_id)
        # 1. count 2. polls 3. their tasks 4. their results (the key comes from the auth cache)
        with django_assert_num_queries(4):
            body = api.get("/polls").json()
        assert len(body["data"]) == count
        assert all(len(item["results"]["data"]) == 2 and len(item["tasks_succeeded"]) == 2 for item in body["data"])


class TestBodiesTheDatabaseCannotStore:
    """Credentials and payloads are stored as jsonb: what it cannot hold must be a 400, not a 500."""

    @pytest.fixture(autouse=True)
    def no_raise(self, api):
        api.raise_request_exception = False

    @pytest.mark.parametrize(
        "payload",
        [
            '{"password": "a\\u0000b"}',
            '{"password": NaN}',
            '{"password": Infinity}',
            '{"password": 1e400}',
        ],
        ids=["nul-character", "nan", "infinity", "overflowing-number"],
    )
    def test_session_payloads(self, api, user, payload):
        body = '{"source": {"user": %d, "type": "mocks.mock", "identifier": "a"}, "payload": %s}' % (user["id"], payload)
        response = api.generic("POST", "/sessions", body, content_type="")
        assert response.status_code == 400, response.content
        assert response.json()["error"] in ("invalid-body", "invalid-parameter")
        assert not Session.objects.exists()

    @pytest.mark.parametrize(
        "extra",
        ['"mock": {"fail": ["a\\u0000"]}', '"note": "a\\u0000"', '"note": NaN', '"note": -Infinity'],
        ids=["nul-in-mock-fail", "nul-in-extra-key", "nan-in-extra-key", "infinity-in-extra-key"],
    )
    def test_poll_payloads(self, api, active_session, extra):
        body = '{"session": "%s", "payload": {"data_types": ["photos"], %s}}' % (active_session["id"], extra)
        response = api.generic("POST", "/polls", body, content_type="")
        assert response.status_code == 400, response.content
        assert response.json()["error"] in ("invalid-body", "invalid-parameter")
        assert not Poll.objects.exists()

    def test_a_deeply_nested_body_is_invalid(self, api, user):
        body = '{"source": {"user": %d, "type": "mocks.mock", "identifier": "a"}, "payload": {"a": %s}}' % (
            user["id"], "[" * 100000
        )
        response = api.generic("POST", "/sessions", body, content_type="")
        assert response.status_code == 400, response.content
        assert response.json()["error"] == "invalid-body"

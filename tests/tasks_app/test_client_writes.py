"""The client-only writes of ricloud-py 3.2.0: `Source.update` (`POST /sources/{id}`) and
`Task.create` (`POST /tasks`) (docs/DECISIONS.md 134-136)."""
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tasks_app.models import Event, Poll, Result, Source, Task, User
from tasks_app.services.sessions import create_session
from tests.tasks_app.test_conventions import assert_error
from tests.tasks_app.test_results import make_session
from workers.runner import run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"


class TestSourceUpdate:
    def test_deactivate_then_reactivate(self, api, key):
        session = make_session(key)
        source_id = session.source_id
        body = api.post_json(f"/sources/{source_id}", {"state": "deactivated"}).json()
        assert body["resource"] == "source" and body["id"] == source_id and body["state"] == "deactivated"
        assert Source.objects.get(id=source_id).state == "deactivated"
        # A deactivated source takes no new session.
        refused = api.post_json("/sessions", {"source": {"user": session.user_id, "type": "mocks.mock",
                                "identifier": "a@example.com"}, "payload": {"password": "x"}})
        assert_error(refused, 400, "invalid-parameter")
        # Lifting it: `active` again, since one of its sessions is active.
        assert api.post_json(f"/sources/{source_id}", {"state": "active"}).json()["state"] == "active"

    def test_reactivating_a_never_validated_source_makes_it_unvalidated(self, api, key):
        user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
        source = api.post_json("/sources", {"user": user.id, "type": "mocks.mock", "identifier": "x@example.com"}).json()
        assert source["state"] == "unvalidated"
        api.post_json(f"/sources/{source['id']}", {"state": "deactivated"})
        assert api.post_json(f"/sources/{source['id']}", {"state": "active"}).json()["state"] == "unvalidated"

    def test_an_active_source_asked_active_stays_active(self, api, key):
        source_id = make_session(key).source_id
        assert api.post_json(f"/sources/{source_id}", {"state": "active"}).json()["state"] == "active"

    def test_a_blocked_source_stays_blocked(self, api, key):
        source_id = make_session(key).source_id
        Source.objects.filter(id=source_id).update(state="blocked")
        body = assert_error(api.post_json(f"/sources/{source_id}", {"state": "deactivated"}), 400, "invalid-parameter")
        assert list(body["params"]) == ["state"]
        assert Source.objects.get(id=source_id).state == "blocked"

    @pytest.mark.parametrize("body, field", [
        ({"identifier": "other@example.com"}, "identifier"),
        ({"state": "active", "type": "icloud.account"}, "type"),
        ({"state": "blocked"}, "state"),
        ({"state": "locked"}, "state"),
        ({}, "state"),
        ({"state": 1}, "state"),
    ])
    def test_invalid_updates_are_400_and_change_nothing(self, api, key, body, field):
        source = Source.objects.get(id=make_session(key).source_id)
        response = assert_error(api.post_json(f"/sources/{source.id}", body), 400, "invalid-parameter")
        assert field in response["params"]
        assert Source.objects.get(id=source.id).state == "active" and Source.objects.get(id=source.id).identifier == source.identifier

    def test_a_non_object_body_is_400(self, api, key):
        source_id = make_session(key).source_id
        assert api.post_json(f"/sources/{source_id}", ["state"]).status_code == 400

    def test_another_organisations_source_is_404(self, api, other_api, key):
        source_id = make_session(key).source_id
        assert_error(other_api.post_json(f"/sources/{source_id}", {"state": "deactivated"}), 404, "not-found")
        assert Source.objects.get(id=source_id).state == "active"


class TestTaskCreate:
    def test_a_data_task_runs_like_a_polls(self, api, key):
        session = make_session(key)
        response = api.post_json("/tasks", {"session": str(session.id), "type": "data", "target": "messages.sms"})
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["resource"] == "task" and body["type"] == "data" and body["target"] == "messages.sms"
        assert body["state"] == "pending" and body["session"] == str(session.id) and body["source"] == session.source_id
        assert body["source_type"] == "mocks.mock" and body["key"] == key.id and body["results"]["data"] == []
        task = Task.objects.get(id=body["id"])
        # Made as a poll of that one item: the poll's events and counts are the engine's own.
        poll = Poll.objects.get(id=body["poll"])
        assert list(poll.tasks.values_list("id", flat=True)) == [task.id]
        assert Event.objects.filter(type="task", action="created", object_id=str(task.id)).count() == 1
        assert run(task.id, max_attempts=5) == "succeeded"
        done = api.get(f"/tasks/{task.id}").json()
        assert done["state"] == "succeeded" and [r["identifier"] for r in done["results"]["data"]] == ["messages.sms"]
        assert api.get(f"/polls/{poll.id}").json()["state"] == "completed"

    def test_info_and_file_tasks_and_payload_controls(self, api, key):
        session = make_session(key)
        info = api.post_json("/tasks", {"session": str(session.id), "type": "info", "target": "account.info",
                                        "payload": {"mock": {"fail": True}}}).json()
        assert info["type"] == "info" and run(info["id"], max_attempts=5) == "failed"
        assert Task.objects.get(id=info["id"]).error == "mock-failure"
        data = api.post_json("/tasks", {"session": str(session.id), "type": "data", "target": "photos"}).json()
        run(data["id"], max_attempts=5)
        document = Result.objects.get(task_id=data["id"])
        file_id = json.loads(Path(urlsplit(document.url).path).read_bytes())["data"][0]["files"][0]["id"]
        file_task = api.post_json("/tasks", {"session": str(session.id), "type": "file", "target": file_id,
                                             "payload": {"since": "2020-01-01T00:00:00Z"}}).json()
        assert file_task["target"] == file_id and run(file_task["id"], max_attempts=5) == "succeeded"
        assert Task.objects.get(id=file_task["id"]).payload == {"since": "2020-01-01T00:00:00Z"}

    def test_payload_keys_other_than_the_controls_are_ignored(self, api, key):
        """A poll payload's item lists must not turn one task into several (it was a 500)."""
        session = make_session(key)
        response = api.post_json("/tasks", {"session": str(session.id), "type": "data", "target": "photos",
                                            "payload": {"data_types": ["*"], "info_types": ["*"], "files": ["x"]}})
        assert response.status_code == 201, response.content
        assert Task.objects.filter(poll_id=response.json()["poll"]).count() == 1

    def test_a_task_on_a_pending_session_waits_for_its_init(self, api, key):
        user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="w@example.com",
                                 payload={"password": "x"})
        body = api.post_json("/tasks", {"session": str(session.id), "type": "data", "target": "notes.notes"}).json()
        init = Task.objects.get(session=session, type="session.init")
        assert list(Task.objects.get(id=body["id"]).blocked_by.all()) == [init]

    @pytest.mark.parametrize("body, field", [
        ({"type": "data", "target": "messages.sms"}, "session"),
        ({"session": "SESSION", "type": "session.init", "target": "x"}, "type"),
        ({"session": "SESSION", "type": "data"}, "target"),
        ({"session": "SESSION", "type": "data", "target": "no.such.type"}, "target"),
        ({"session": "SESSION", "type": "info", "target": "*"}, "target"),
        ({"session": "SESSION", "type": "data", "target": "photos", "poll": "x"}, "poll"),
        ({"session": "SESSION", "type": "data", "target": 5}, "target"),
        ({"session": "SESSION", "type": "data", "target": "photos", "payload": {"mock": {"delay": -1}}}, "payload"),
        ({"session": "0190c8e0-0000-7000-8000-000000000000", "type": "data", "target": "photos"}, "session"),
        ({"session": "SESSION", "type": "data", "target": "photos", "payload": {"since": "yesterday"}}, "payload"),
        ({"session": "SESSION", "type": "data", "target": "photos", "source": 987654}, "source"),
    ])
    def test_bad_input_is_400_and_creates_nothing(self, api, key, body, field):
        session = make_session(key)
        before = Task.objects.count()
        body = {name: str(session.id) if value == "SESSION" else value for name, value in body.items()}
        response = assert_error(api.post_json("/tasks", body), 400, "invalid-parameter")
        assert field in response["params"], response
        assert Task.objects.count() == before

    def test_an_expired_session_is_refused(self, api, key):
        session = make_session(key)
        api.delete(f"/sessions/{session.id}")
        response = api.post_json("/tasks", {"session": str(session.id), "type": "data", "target": "photos"})
        assert_error(response, 400, "session-expired")

    def test_another_organisations_session_is_unknown(self, api, other_api, key):
        session = make_session(key)
        response = other_api.post_json("/tasks", {"session": str(session.id), "type": "data", "target": "photos"})
        assert list(assert_error(response, 400, "invalid-parameter")["params"]) == ["session"]

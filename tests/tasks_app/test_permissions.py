"""Permissions: scopes with wildcards on sessions and polls, count limits (API.md §2.13)."""
import pytest

from tasks_app.models import Permissions, Task, User
from tasks_app.services.sessions import create_session
from workers.runner import run

pytestmark = pytest.mark.django_db


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["error"] == code
    return response.json()


@pytest.fixture
def user(api):
    return api.post_json("/users", {"identifier": "perm@example.com"}).json()


def session_body(user, source_type="mocks.mock", identifier="a@example.com"):
    return {"source": {"user": user["id"], "type": source_type, "identifier": identifier}, "payload": {}}


def base(key):
    return Permissions.objects.get(organisation_id=key.organisation_id, key__isnull=True, user__isnull=True)


def test_the_organisation_has_default_permissions(api, key):
    body = api.get("/organisation").json()["permissions"]
    assert body["resource"] == "permissions" and body["identifier"] == "default"
    assert set(body["scopes"]) == {"source_type:*", "task_type:*", "data_type:*", "file_type:*"}
    listed = api.get("/permissions").json()
    assert listed["total_count"] == 1 and listed["data"][0]["id"] == body["id"]


def test_a_source_type_outside_the_scopes_is_missing_scope(api, key, user):
    permissions = base(key)
    permissions.scopes = {"source_type:icloud.*": [], "task_type:*": [], "data_type:*": []}
    permissions.save()
    body = assert_error(api.post_json("/sessions", session_body(user)), 403, "missing-scope")
    assert body["params"] == {"scope": ["source_type:mocks.mock"]}
    assert api.post_json("/sessions", session_body(user, "icloud.account")).status_code == 201


def test_a_key_narrows_its_organisation(api, key, user):
    response = api.post_json("/permissions", {"key": key.id, "identifier": "narrow",
                                              "scopes": {"source_type:mocks.mock": [], "task_type:mocks.info": [],
                                                         "data_type:account.*": []}})
    assert response.status_code == 201 and response.json()["key"] == key.id
    session = api.post_json("/sessions", session_body(user)).json()
    run(Task.objects.get(session_id=session["id"]).id, max_attempts=5)
    assert api.post_json("/polls", {"session": session["id"], "payload": {"info_types": ["*"]}}).status_code == 201
    body = assert_error(api.post_json("/polls", {"session": session["id"], "payload": {"data_types": ["photos"]}}), 403,
                        "missing-scope")
    assert body["params"]["scope"] == ["task_type:mocks.data"]
    assert_error(api.post_json("/sessions", session_body(user, "icloud.account")), 403, "missing-scope")


def test_a_key_cannot_exceed_its_organisation(api, key):
    permissions = base(key)
    permissions.scopes = {"source_type:icloud.*": []}
    permissions.save()
    body = assert_error(api.post_json("/permissions", {"key": key.id, "scopes": {"source_type:mocks.mock": []}}), 400,
                        "invalid-parameter")
    assert "scopes" in body["params"]


@pytest.mark.parametrize("scopes", [{"colour:blue": []}, {"source_type:*": "three"},
                                    {"source_type:*": [{"level": "planet", "type": "count", "value": 1}]}, []])
def test_malformed_scopes_are_400(api, scopes):
    assert_error(api.post_json("/permissions", {"scopes": scopes}), 400, "invalid-parameter")


def test_count_limits_per_user(api, key, user):
    permissions = base(key)
    permissions.scopes = {**permissions.scopes, "source_type:*": [{"level": "user", "type": "count", "value": 2}]}
    permissions.save()
    assert api.post_json("/sessions", session_body(user, identifier="one")).status_code == 201
    assert api.post_json("/sessions", session_body(user, identifier="two")).status_code == 201
    assert api.post_json("/sessions", session_body(user, identifier="one")).status_code == 201  # existing source
    assert_error(api.post_json("/sessions", session_body(user, identifier="three")), 403, "limit-exceeded")
    other = api.post_json("/users", {"identifier": "other"}).json()
    assert api.post_json("/sessions", session_body(other, identifier="three")).status_code == 201


def test_update_and_isolation(api, other_api, key):
    permissions = api.post_json("/permissions", {"identifier": "extra", "scopes": {"data_type:photos": []}}).json()
    updated = api.post_json(f"/permissions/{permissions['id']}", {"scopes": {"data_type:notes.notes": []}}).json()
    assert updated["scopes"] == {"data_type:notes.notes": []}
    assert_error(other_api.get(f"/permissions/{permissions['id']}"), 404, "not-found")
    assert_error(other_api.post_json(f"/permissions/{permissions['id']}", {"scopes": {}}), 404, "not-found")
    assert_error(other_api.post_json("/permissions", {"key": key.id, "scopes": {}}), 400, "invalid-parameter")


def test_organisations_without_permission_rows_are_unrestricted(key):
    Permissions.objects.filter(organisation_id=key.organisation_id).delete()
    user = User.objects.create(organisation=key.organisation, key=key, identifier="free")
    assert create_session(key=key, user=user, source_type="mocks.mock", identifier="x", payload={}).state == "pending"

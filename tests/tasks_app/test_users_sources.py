"""API.md §2.3 users (get-or-create, filters, updates) and §2.4 sources (created by sessions, the tree)."""
from datetime import datetime, timezone

import pytest

from tasks_app.models import Session, Source, Task, User
from tests.tasks_app.test_conventions import assert_error
from workers.runner import run

pytestmark = pytest.mark.django_db

USER_FIELDS = {"id", "resource", "organisation", "key", "identifier", "state", "date_created"}
SOURCE_FIELDS = {"id", "resource", "user", "type", "identifier", "info", "parent", "children", "state", "date_created"}
CHILD_FIELDS = SOURCE_FIELDS - {"children"}


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    return tmp_path


def create_user(client, identifier="u1"):
    response = client.post_json("/users", {"identifier": identifier})
    assert response.status_code == 201, response.content
    return response.json()


def create_session(client, user_id, identifier="a@example.com", *, type="mocks.mock", payload=None):
    body = {"source": {"user": user_id, "type": type, "identifier": identifier}, "payload": payload or {"password": "x"}}
    response = client.post_json("/sessions", body)
    assert response.status_code == 201, response.content
    return response.json()


def run_init(session):
    return run(Task.objects.get(session_id=session["id"], type="session.init").id, max_attempts=5)


def ids(response):
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["data"]]


# --- users ---------------------------------------------------------------------------------------


class TestCreateUser:
    def test_it_creates(self, api, key):
        response = api.post_json("/users", {"identifier": "alice@example.com"})
        assert response.status_code == 201
        body = response.json()
        user = User.objects.get()
        assert body == {
            "id": user.id,
            "resource": "user",
            "organisation": key.organisation_id,
            "key": key.id,
            "identifier": "alice@example.com",
            "state": "active",
            "date_created": body["date_created"],
        }
        assert body["date_created"].endswith("Z")
        assert user.key_id == key.id and user.organisation_id == key.organisation_id

    def test_the_same_identifier_returns_the_existing_user(self, api):
        first = api.post_json("/users", {"identifier": "alice"})
        second = api.post_json("/users", {"identifier": "alice"})
        assert (first.status_code, second.status_code) == (201, 200)
        assert second.json() == first.json()
        assert User.objects.count() == 1

    def test_the_same_identifier_in_another_organisation_is_another_user(self, api, other_api):
        mine = create_user(api, "alice")
        theirs = create_user(other_api, "alice")
        assert mine["id"] != theirs["id"]
        assert theirs["organisation"] == other_api.key.organisation_id

    @pytest.mark.parametrize(
        "body, message",
        [
            ({}, "This field is required."),
            ({"identifier": ""}, "This field may not be blank."),
            ({"identifier": None}, "This field may not be null."),
            ({"identifier": 42}, "Not a valid string."),
            ({"identifier": ["a"]}, "Not a valid string."),
            ({"identifier": {"a": 1}}, "Not a valid string."),
            ({"identifier": "x" * 256}, "Ensure this field has no more than 255 characters."),
        ],
    )
    def test_it_validates_the_identifier(self, api, body, message):
        body = assert_error(api.post_json("/users", body), 400, "invalid-parameter")
        assert body["params"] == {"identifier": [message]}
        assert not User.objects.exists()

    def test_an_organisation_other_than_the_callers_is_403(self, api, other_api):
        response = api.post_json("/users", {"identifier": "a", "organisation": other_api.key.organisation_id})
        assert_error(response, 403, "missing-scope")
        assert not User.objects.exists()

    def test_the_callers_own_organisation_is_accepted(self, api, key):
        response = api.post_json("/users", {"identifier": "a", "organisation": str(key.organisation_id)})
        assert response.status_code == 201
        assert response.json()["organisation"] == key.organisation_id

    def test_a_key_of_another_organisation_is_rejected(self, api, other_api):
        response = api.post_json("/users", {"identifier": "a", "key": other_api.key.id})
        body = assert_error(response, 400, "invalid-parameter")
        assert set(body["params"]) == {"key"}
        assert not User.objects.exists()


class TestRetrieveUser:
    def test_it_retrieves(self, api):
        created = create_user(api, "alice")
        response = api.get(f"/users/{created['id']}")
        assert response.status_code == 200
        assert response.json() == created
        assert set(response.json()) == USER_FIELDS

    def test_a_user_of_another_organisation_is_404(self, api, other_api):
        created = create_user(api, "alice")
        assert_error(other_api.get(f"/users/{created['id']}"), 404, "not-found")


class TestListUsers:
    @pytest.fixture
    def users(self, api):
        users = [create_user(api, name) for name in ("alice", "bob", "carol")]
        User.objects.filter(id=users[0]["id"]).update(date_created=datetime(2024, 1, 1, tzinfo=timezone.utc))
        User.objects.filter(id=users[1]["id"]).update(state="deactivated", date_created=datetime(2024, 6, 1, tzinfo=timezone.utc))
        return {user["identifier"]: user["id"] for user in users}

    def test_it_lists_newest_first(self, api, users):
        body = api.get("/users").json()
        assert [item["id"] for item in body["data"]] == [users["carol"], users["bob"], users["alice"]]
        assert {tuple(sorted(item)) for item in body["data"]} == {tuple(sorted(USER_FIELDS))}
        assert body["total_count"] == 3 and body["has_more"] is False and body["url"] == "/users"

    @pytest.mark.parametrize(
        "params, expected",
        [
            ({"identifier": "bob"}, ["bob"]),
            ({"identifier": "nobody"}, []),
            ({"state": "deactivated"}, ["bob"]),
            ({"state": "active"}, ["carol", "alice"]),
            ({"date_created__gte": "2024-03-01T00:00:00Z"}, ["carol", "bob"]),
            ({"date_created__lt": "2024-06-01T00:00:00Z"}, ["alice"]),
            ({"date_created": "2024-06-01T00:00:00Z"}, ["bob"]),
            ({"state": "active", "date_created__gte": "2024-03-01"}, ["carol"]),
        ],
    )
    def test_filters(self, api, users, params, expected):
        assert ids(api.get("/users", params)) == [users[name] for name in expected]

    def test_it_filters_by_key(self, api, users, key):
        assert ids(api.get("/users", {"key": key.id})) == [users["carol"], users["bob"], users["alice"]]
        assert ids(api.get("/users", {"key": key.id + 1000})) == []

    @pytest.mark.parametrize(
        "params", [{"state": "bogus"}, {"key": "abc"}, {"date_created__gte": "yesterday"}, {"key": "99999999999999999999"}]
    )
    def test_bad_filter_values_are_400(self, api, users, params):
        body = assert_error(api.get("/users", params), 400, "invalid-parameter")
        assert set(body["params"]) == set(params)

    def test_users_of_other_organisations_are_not_listed(self, api, other_api, users):
        theirs = create_user(other_api, "alice")
        assert ids(other_api.get("/users")) == [theirs["id"]]
        assert ids(api.get("/users")) == [users["carol"], users["bob"], users["alice"]]
        assert ids(other_api.get("/users", {"identifier": "bob"})) == []


class TestUpdateUser:
    def test_it_updates_the_identifier(self, api):
        user = create_user(api, "alice")
        response = api.post_json(f"/users/{user['id']}", {"identifier": "alice2"})
        assert response.status_code == 200
        assert response.json() == {**user, "identifier": "alice2"}
        assert User.objects.get(id=user["id"]).identifier == "alice2"

    def test_it_updates_the_state(self, api):
        user = create_user(api, "alice")
        response = api.post_json(f"/users/{user['id']}", {"state": "deactivated"})
        assert response.status_code == 200
        assert response.json() == {**user, "state": "deactivated"}
        response = api.post_json(f"/users/{user['id']}", {"state": "active"})
        assert response.json()["state"] == "active"

    def test_an_empty_update_changes_nothing(self, api):
        user = create_user(api, "alice")
        response = api.generic("POST", f"/users/{user['id']}", "null", content_type="")
        assert response.status_code == 200
        assert response.json() == user

    @pytest.mark.parametrize(
        "body, field",
        [({"state": "blocked"}, "state"), ({"state": "bogus"}, "state"), ({"identifier": ""}, "identifier"),
         ({"identifier": 5}, "identifier")],
    )
    def test_it_validates(self, api, body, field):
        user = create_user(api, "alice")
        body = assert_error(api.post_json(f"/users/{user['id']}", body), 400, "invalid-parameter")
        assert set(body["params"]) == {field}
        assert api.get(f"/users/{user['id']}").json() == user

    def test_an_identifier_in_use_is_a_conflict(self, api):
        alice, bob = create_user(api, "alice"), create_user(api, "bob")
        body = assert_error(api.post_json(f"/users/{bob['id']}", {"identifier": "alice"}), 400, "invalid-parameter")
        assert body["params"] == {"identifier": ["Already in use for this key."]}
        assert User.objects.get(id=bob["id"]).identifier == "bob"
        # The failed update left the connection usable.
        assert api.get(f"/users/{alice['id']}").json() == alice

    def test_a_user_of_another_organisation_is_404(self, api, other_api):
        user = create_user(api, "alice")
        assert_error(other_api.post_json(f"/users/{user['id']}", {"identifier": "x"}), 404, "not-found")
        assert User.objects.get(id=user["id"]).identifier == "alice"


# --- sources -------------------------------------------------------------------------------------


def source_body(source_id, user_id, identifier, *, type="mocks.mock", state="unvalidated", children=(), info=None,
                parent=None, date_created=None):
    return {
        "id": source_id,
        "resource": "source",
        "user": user_id,
        "type": type,
        "identifier": identifier,
        "info": info,
        "parent": parent,
        "children": {
            "resource": "list",
            "data": list(children),
            "has_more": False,
            "total_count": len(children),
            "url": f"/sources/{source_id}/children",
        },
        "state": state,
        "date_created": date_created,
    }


class TestSourcesFromSessions:
    def test_a_session_creates_its_source(self, api):
        user = create_user(api)
        session = create_session(api, user["id"], "a@example.com")
        source = Source.objects.get()
        response = api.get(f"/sources/{source.id}")
        assert response.status_code == 200
        body = response.json()
        assert body == source_body(source.id, user["id"], "a@example.com", date_created=body["date_created"])
        assert set(body) == SOURCE_FIELDS
        assert session["source"] == body

    def test_two_sessions_share_one_source(self, api):
        user = create_user(api)
        first = create_session(api, user["id"], "a@example.com")
        second = create_session(api, user["id"], "a@example.com", payload={"password": "other"})
        assert first["id"] != second["id"]
        assert first["source"]["id"] == second["source"]["id"]
        assert Source.objects.count() == 1 and Session.objects.count() == 2

    def test_another_type_user_or_identifier_is_another_source(self, api):
        alice, bob = create_user(api, "alice"), create_user(api, "bob")
        sources = {
            create_session(api, alice["id"], "a@example.com")["source"]["id"],
            create_session(api, alice["id"], "a@example.com", type="icloud.account")["source"]["id"],
            create_session(api, alice["id"], "b@example.com")["source"]["id"],
            create_session(api, bob["id"], "a@example.com")["source"]["id"],
        }
        assert len(sources) == 4 == Source.objects.count()

    def test_a_successful_session_init_activates_the_source(self, api):
        user = create_user(api)
        session = create_session(api, user["id"], "jane.doe@example.com")
        assert run_init(session) == "succeeded"
        body = api.get(f"/sources/{session['source']['id']}").json()
        assert body["state"] == "active"
        assert body["info"] == {
            "name": "Jane Doe", "first_name": "Jane", "last_name": "Doe", "full_name": "Jane Doe", "country": body["info"]["country"]
        }

    def test_a_locked_identifier_locks_the_source(self, api):
        user = create_user(api)
        session = create_session(api, user["id"], "locked@example.com")
        assert run_init(session) == "failed"
        assert api.get(f"/sources/{session['source']['id']}").json()["state"] == "locked"

    def test_rejected_credentials_leave_the_source_unvalidated(self, api):
        user = create_user(api)
        session = create_session(api, user["id"], "a@example.com", payload={"password": "wrong-password"})
        assert run_init(session) == "failed"
        body = api.get(f"/sources/{session['source']['id']}").json()
        assert body["state"] == "unvalidated" and body["info"] is None

    def test_an_active_source_stays_active_after_a_later_failed_session(self, api):
        user = create_user(api)
        assert run_init(create_session(api, user["id"], "a@example.com")) == "succeeded"
        session = create_session(api, user["id"], "a@example.com", payload={"password": "wrong-password"})
        assert run_init(session) == "failed"
        assert api.get(f"/sources/{session['source']['id']}").json()["state"] == "active"


class TestSourceTree:
    @pytest.fixture
    def tree(self, api, key):
        user = create_user(api)
        root = Source.objects.get(id=create_session(api, user["id"], "a@example.com")["source"]["id"])
        children = [
            Source.objects.create(organisation_id=key.organisation_id, user_id=user["id"], type="mocks.device",
                                  identifier=f"device-{i}", parent=root)
            for i in range(2)
        ]
        return root, children

    def test_children_are_nested_as_a_list_object(self, api, tree):
        root, (first, second) = tree
        body = api.get(f"/sources/{root.id}").json()
        assert body["children"]["resource"] == "list"
        assert body["children"]["url"] == f"/sources/{root.id}/children"
        assert body["children"]["total_count"] == 2 and body["children"]["has_more"] is False
        child = next(item for item in body["children"]["data"] if item["id"] == first.id)
        assert set(child) == CHILD_FIELDS
        assert child == {
            "id": first.id, "resource": "source", "user": root.user_id, "type": "mocks.device", "identifier": "device-0",
            "info": None, "parent": root.id, "state": "unvalidated", "date_created": child["date_created"],
        }

    def test_the_children_endpoint_lists_them(self, api, tree):
        root, (first, second) = tree
        response = api.get(f"/sources/{root.id}/children")
        assert response.status_code == 200
        body = response.json()
        assert body["resource"] == "list" and body["url"] == f"/sources/{root.id}/children"
        assert [item["id"] for item in body["data"]] == [second.id, first.id]
        assert body["total_count"] == 2 and body["has_more"] is False
        assert body["data"][0]["parent"] == root.id

    def test_the_children_endpoint_paginates(self, api, tree):
        root, (first, second) = tree
        body = api.get(f"/sources/{root.id}/children", {"limit": 1}).json()
        assert [item["id"] for item in body["data"]] == [second.id] and body["has_more"] is True
        body = api.get(f"/sources/{root.id}/children", {"limit": 1, "after_id": second.id}).json()
        assert [item["id"] for item in body["data"]] == [first.id] and body["has_more"] is False

    @pytest.mark.parametrize("params, expected", [({"identifier": "device-0"}, [0]), ({"state": "unvalidated"}, [1, 0]),
                                                  ({"type": "mocks.device"}, [1, 0]), ({"type": "mocks.mock"}, [])])
    def test_the_children_endpoint_filters_the_children_not_the_parent(self, api, tree, params, expected):
        root, children = tree
        Source.objects.filter(id=root.id).update(state="active")
        assert ids(api.get(f"/sources/{root.id}/children", params)) == [children[i].id for i in expected]

    def test_a_leaf_has_no_children(self, api, tree):
        _, (first, _) = tree
        body = api.get(f"/sources/{first.id}/children").json()
        assert body["data"] == [] and body["total_count"] == 0
        assert api.get(f"/sources/{first.id}").json()["children"]["data"] == []

    def test_children_of_a_foreign_source_are_404(self, other_api, tree):
        root, _ = tree
        assert_error(other_api.get(f"/sources/{root.id}/children"), 404, "not-found")


class TestListSources:
    @pytest.fixture
    def sources(self, api, key):
        alice, bob = create_user(api, "alice"), create_user(api, "bob")
        org = key.organisation_id

        def make(user, type, identifier, state="unvalidated", parent=None):
            return Source.objects.create(organisation_id=org, user_id=user["id"], type=type, identifier=identifier,
                                         state=state, parent=parent)

        a = make(alice, "mocks.mock", "a@example.com", "active")
        b = make(alice, "icloud.account", "a@example.com", "locked")
        c = make(bob, "mocks.mock", "b@example.com")
        d = make(bob, "mocks.device", "device-1", parent=c)
        return {"alice": alice["id"], "bob": bob["id"], "a": a.id, "b": b.id, "c": c.id, "d": d.id}

    def test_it_lists_newest_first(self, api, sources):
        body = api.get("/sources").json()
        assert [item["id"] for item in body["data"]] == [sources[n] for n in "dcba"]
        assert body["url"] == "/sources" and body["total_count"] == 4
        assert all(set(item) == SOURCE_FIELDS for item in body["data"])

    @pytest.mark.parametrize(
        "params, expected",
        [
            (lambda s: {"user": s["alice"]}, "ba"),
            (lambda s: {"user": str(s["bob"])}, "dc"),
            (lambda s: {"identifier": "a@example.com"}, "ba"),
            (lambda s: {"identifier": "nobody"}, ""),
            (lambda s: {"type": "mocks.mock"}, "ca"),
            (lambda s: {"type": "icloud.account"}, "b"),
            (lambda s: {"state": "locked"}, "b"),
            (lambda s: {"state": "unvalidated"}, "dc"),
            (lambda s: {"parent": s["c"]}, "d"),
            (lambda s: {"parent": s["a"]}, ""),
            (lambda s: {"user": s["alice"], "type": "mocks.mock"}, "a"),
        ],
    )
    def test_filters(self, api, sources, params, expected):
        assert ids(api.get("/sources", params(sources))) == [sources[n] for n in expected]

    @pytest.mark.parametrize(
        "params",
        [{"user": "abc"}, {"user": "0"}, {"parent": "x"}, {"state": "bogus"}, {"date_created__gte": "yesterday"},
         {"user": "99999999999999999999"}],
    )
    def test_bad_filter_values_are_400(self, api, sources, params):
        body = assert_error(api.get("/sources", params), 400, "invalid-parameter")
        assert set(body["params"]) == set(params)

    def test_sources_of_other_organisations_are_invisible(self, api, other_api, sources):
        assert ids(other_api.get("/sources")) == []
        assert ids(other_api.get("/sources", {"user": sources["alice"]})) == []
        assert_error(other_api.get(f"/sources/{sources['a']}"), 404, "not-found")

    def test_the_list_takes_a_constant_number_of_queries(self, api, key, sources, django_assert_num_queries):
        root = Source.objects.get(id=sources["a"])
        Source.objects.bulk_create(
            Source(organisation_id=key.organisation_id, user_id=root.user_id, type="mocks.device", identifier=f"d{i}",
                   parent=root)
            for i in range(5)
        )
        # 1. count 2. sources 3. their children (the key comes from the auth cache)
        with django_assert_num_queries(3):
            body = api.get("/sources", {"limit": 100}).json()
        assert len(body["data"]) == 9
        assert next(item for item in body["data"] if item["id"] == root.id)["children"]["total_count"] == 5

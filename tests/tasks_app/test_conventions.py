"""API.md §1 and the §7 checklist: auth, bodies, slashes, error envelopes, pagination."""
import pytest

from tasks_app.models import User

pytestmark = pytest.mark.django_db

ENVELOPE_KEYS = {"error", "message"}


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert ENVELOPE_KEYS <= set(body) and body["error"] == code, body
    return body


@pytest.mark.parametrize("path", ["/tasks", "/organisation", "/key", "/users", "/sessions", "/results/ack"])
def test_it_requires_a_token(anon, path):
    response = anon.get(path)
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"] == "Token"


def test_it_rejects_a_wrong_token(anon):
    anon.credentials(HTTP_AUTHORIZATION="Token nope")
    assert_error(anon.get("/tasks"), 401, "unauthorized")


def test_it_rejects_a_deactivated_key(api, key):
    key.state = "deactivated"
    key.save()
    assert_error(api.get("/tasks"), 401, "unauthorized")


def test_it_stores_tokens_hashed(key):
    from tasks_app.models import Key

    stored = Key.objects.get(id=key.id)
    assert key.plaintext_token not in stored.token_hash and len(stored.token_hash) == 64


def test_it_parses_json_without_content_type_and_latin1(api):
    body = '{"identifier": "café"}'.encode("latin-1")
    response = api.generic("POST", "/users", body, content_type="")
    assert response.status_code == 201
    assert response.json()["identifier"] == "café"


def test_it_parses_json_with_any_content_type(api):
    response = api.generic("POST", "/users", '{"identifier": "x"}', content_type="text/plain")
    assert response.status_code == 201


def test_null_body_means_no_parameters(api):
    body = assert_error(api.generic("POST", "/users", "null", content_type=""), 400, "invalid-parameter")
    assert body["params"] == {"identifier": ["This field is required."]}


@pytest.mark.parametrize("body", ["{bad", "[1, 2]", '"text"'])
def test_malformed_json_is_invalid_body(api, body):
    assert_error(api.generic("POST", "/users", body, content_type=""), 400, "invalid-body")


@pytest.mark.parametrize("path", ["/tasks", "/tasks/", "/organisation", "/organisation/", "/users/", "/key/"])
def test_both_slash_forms_answer_without_redirect(api, path):
    assert api.get(path).status_code == 200


def test_unknown_path_is_a_json_404(api):
    assert_error(api.get("/no-such-thing"), 404, "not-found")


def test_wrong_method_is_a_json_405(api):
    assert_error(api.delete("/tasks"), 405, "method-not-allowed")
    assert_error(api.post_json("/results", {}), 405, "method-not-allowed")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_updates_are_post_only(api, method):
    """PUT was routed to the update as an undocumented alias of POST; /schema lists POST only."""
    user = api.post_json("/users", {"identifier": "u"}).json()
    response = api.generic(method, f"/users/{user['id']}", '{"state": "deactivated"}', content_type="")
    assert_error(response, 405, "method-not-allowed")
    assert User.objects.get(id=user["id"]).state == "active"


@pytest.mark.parametrize("path", ["/polls", "/tasks", "/users/1", "/organisation", "/results/ack"])
def test_options_names_the_view_and_the_contract(api, path):
    """OPTIONS /polls was a 500 (DRF described the fields of the hand-rendered PollSerializer)."""
    response = api.options(path)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["schema"] == "/schema" and "actions" not in body


@pytest.mark.parametrize("path", ["/tasks/not-a-uuid", "/users/abc", "/users/99999999999999999999999", "/users/-1"])
def test_malformed_ids_are_404(api, path):
    assert_error(api.get(path), 404, "not-found")


def test_datetimes_are_utc_with_z(api):
    body = api.post_json("/users", {"identifier": "a"}).json()
    assert body["date_created"].endswith("Z") and "T" in body["date_created"]


class TestPagination:
    @pytest.fixture
    def users(self, key):
        return [User.objects.create(organisation=key.organisation, key=key, identifier=f"u{i}") for i in range(25)]

    def test_list_envelope_and_default_limit(self, api, users):
        body = api.get("/users").json()
        assert set(body) == {"resource", "data", "has_more", "total_count", "url"}
        assert body["resource"] == "list" and body["url"] == "/users"
        assert body["total_count"] == 25 and body["has_more"] is True
        assert [item["id"] for item in body["data"]] == [u.id for u in reversed(users)][:10]

    def test_after_id_walks_to_the_end(self, api, users):
        seen, after = [], None
        while True:
            body = api.get("/users", {"limit": 7, **({"after_id": after} if after else {})}).json()
            seen += [item["id"] for item in body["data"]]
            if not body["has_more"]:
                break
            after = seen[-1]
        assert seen == [u.id for u in reversed(users)]

    def test_before_id_returns_the_newer_neighbours(self, api, users):
        body = api.get("/users", {"limit": 3, "before_id": users[10].id}).json()
        assert [item["id"] for item in body["data"]] == [users[13].id, users[12].id, users[11].id]
        assert body["has_more"] is True

    @pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"after_id": "x"},
                                        {"before_id": "1.5"}])
    def test_bad_pagination_parameters_are_400(self, api, users, params):
        assert_error(api.get("/users", params), 400, "invalid-parameter")

    def test_limit_1000_is_allowed(self, api, users):
        assert len(api.get("/users", {"limit": 1000}).json()["data"]) == 25

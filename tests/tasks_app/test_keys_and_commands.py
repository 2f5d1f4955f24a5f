"""Keys (create, list, retrieve, update, rotate) and the management commands."""
import io

import pytest
from django.core.management import CommandError, call_command

from tasks_app.models import Key, Organisation, hash_token

pytestmark = pytest.mark.django_db


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["error"] == code


def test_create_shows_the_token_once(api, anon):
    response = api.post_json("/keys", {"retrieval_protocol": "asstore"})
    assert response.status_code == 201
    body = response.json()
    assert body["resource"] == "key" and body["token"] and body["retrieval_protocol"] == "asstore"
    assert api.get(f"/keys/{body['id']}").json()["token"] is None
    anon.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert anon.get("/key").json()["id"] == body["id"]
    assert Key.objects.get(id=body["id"]).token_hash == hash_token(body["token"])


def test_list_update_and_validation(api, key):
    created = api.post_json("/keys", None).json()
    assert created["retrieval_protocol"] == "aschannel"
    assert {k["id"] for k in api.get("/keys").json()["data"]} == {key.id, created["id"]}
    updated = api.post_json(f"/keys/{created['id']}", {"state": "deactivated"}).json()
    assert updated["state"] == "deactivated"
    assert_error(api.post_json("/keys", {"retrieval_protocol": "carrier-pigeon"}), 400, "invalid-parameter")
    assert_error(api.post_json("/keys", {"webhook_config": 999}), 400, "invalid-parameter")


def test_rotate_replaces_the_token_at_once(api, anon):
    created = api.post_json("/keys", {}).json()
    rotated = api.post_json(f"/keys/{created['id']}/rotate", {}).json()
    assert rotated["token"] and rotated["token"] != created["token"] and rotated["id"] == created["id"]
    anon.credentials(HTTP_AUTHORIZATION=f"Token {created['token']}")
    assert_error(anon.get("/key"), 401, "unauthorized")
    anon.credentials(HTTP_AUTHORIZATION=f"Token {rotated['token']}")
    assert anon.get("/key").status_code == 200


def test_keys_of_another_organisation_are_404(api, other_api, key):
    assert_error(other_api.get(f"/keys/{key.id}"), 404, "not-found")
    assert_error(other_api.post_json(f"/keys/{key.id}", {"state": "deactivated"}), 404, "not-found")
    assert_error(other_api.post_json(f"/keys/{key.id}/rotate", {}), 404, "not-found")
    assert key.id not in {k["id"] for k in other_api.get("/keys").json()["data"]}


def test_createorganisation_prints_the_token_last(anon):
    out = io.StringIO()
    call_command("createorganisation", "Acme Ltd", "--retrieval-protocol", "asstore", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    key = Key.objects.get(token_hash=hash_token(token))
    assert key.organisation.name == "Acme Ltd" and key.retrieval_protocol == "asstore"
    assert f"stream_endpoint): {key.stream}\n" in out.getvalue()  # the v2 stream name (DECISIONS 71)
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon.get("/organisation").json()["name"] == "Acme Ltd"


def test_createorganisation_with_a_given_token():
    out = io.StringIO()
    call_command("createorganisation", "Fixture", "--token", "fixture-token-0123456789", stdout=out)
    assert out.getvalue().strip().splitlines()[-1] == "fixture-token-0123456789"
    with pytest.raises(CommandError, match="already exists"):
        call_command("createorganisation", "Again", "--token", "fixture-token-0123456789", stdout=io.StringIO())


def test_demo_creates_the_organisation_once(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    first, second = io.StringIO(), io.StringIO()
    call_command("demo", stdout=first)
    call_command("demo", stdout=second)
    assert Organisation.objects.filter(name="Demo").count() == 1
    token = (tmp_path / "demo-token").read_text().strip()
    assert f"Authorization: Token {token}" in first.getvalue() and first.getvalue() == second.getvalue()


def test_post_sources_is_get_or_create(api, other_api):
    user = api.post_json("/users", {"identifier": "owner"}).json()
    body = {"user": user["id"], "type": "mocks.mock", "identifier": "direct@example.com"}
    created = api.post_json("/sources", body)
    assert created.status_code == 201
    source = created.json()
    assert source["resource"] == "source" and source["state"] == "unvalidated" and source["children"]["data"] == []
    again = api.post_json("/sources", body)
    assert again.status_code == 200 and again.json()["id"] == source["id"]
    session = api.post_json("/sessions", {"source": body, "payload": {}}).json()
    assert session["source"]["id"] == source["id"]
    assert_error(api.post_json("/sources", {**body, "type": "myspace.profile"}), 400, "invalid-parameter")
    assert_error(api.post_json("/sources", {"type": "mocks.mock", "identifier": "x"}), 400, "invalid-parameter")
    assert_error(other_api.post_json("/sources", body), 400, "invalid-parameter")


class TestAuthCache:
    """Keys are cached per process; every change is seen by the very next request."""

    def test_a_deactivated_key_is_refused_at_once(self, api, key):
        assert api.get("/key").status_code == 200
        api.post("/keys/" + str(key.id), {"state": "deactivated"}, format="json")
        assert api.get("/key").status_code == 401

    def test_a_change_in_another_process_is_seen_through_the_generation(self, api, key):
        from tasks_app import authcache

        assert api.get("/organisation").json()["name"] == key.organisation.name
        # As another process would: change the row and bump the shared generation only.
        Organisation.objects.filter(id=key.organisation_id).update(name="Renamed elsewhere")
        assert api.get("/organisation").json()["name"] == key.organisation.name  # still cached here
        authcache._incr()
        assert api.get("/organisation").json()["name"] == "Renamed elsewhere"

"""The Django admin at /admin/ (tasks_app/admin.py, ricloud_server/adminsite.py; docs/DECISIONS.md 137-139)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasks_app.models import Event, Key, Organisation, Permissions, Result, Task, WebhookDelivery, hash_token
from tasks_app.sealing import seal
from tasks_app.services.organisations import create_key
from tasks_app.services.webhooks import create_webhook_config
from tests.tasks_app.test_conventions import assert_error
from tests.tasks_app.test_results import make_session, run_poll

pytestmark = pytest.mark.django_db

MODELS = ("organisation", "key", "task", "event", "webhookdelivery", "result")
TOKEN = re.compile(r'<code class="token">([0-9a-f]{40})</code>')


@pytest.fixture
def world(key, settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
    config, _ = create_webhook_config(key=key, url="http://127.0.0.1:9/hooks")
    poll = run_poll(key, make_session(key), {"data_types": ["messages.sms"]})
    WebhookDelivery.objects.create(event=Event.objects.filter(organisation=key.organisation).first(), config=config)
    return poll


def token_works(client, token: str) -> bool:
    return client.get("/key", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


@pytest.mark.parametrize("model", MODELS)
def test_every_list_page_answers(admin_client, world, model):
    response = admin_client.get(f"/admin/tasks_app/{model}/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("model", MODELS)
def test_list_pages_never_scan_a_table_for_filter_values(admin_client, world, model):
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(f"/admin/tasks_app/{model}/").status_code == 200
    assert not [q["sql"] for q in queries if "DISTINCT" in q["sql"].upper()]


def test_lists_search_and_filter(admin_client, world):
    task = Task.objects.filter(type="data").get()
    page = admin_client.get("/admin/tasks_app/task/", {"q": str(task.id)}).content.decode()
    assert str(task.id) in page and "1 result" in page
    page = admin_client.get("/admin/tasks_app/task/", {"state__exact": "failed"}).content.decode()
    assert str(task.id) not in page
    result = Result.objects.get()
    assert str(result.id) in admin_client.get("/admin/tasks_app/result/", {"q": "messages.sms"}).content.decode()
    events = admin_client.get("/admin/tasks_app/event/", {"type": "task", "action": "created"}).content.decode()
    created = Event.objects.filter(type="task", action="created").first()
    assert str(created.id) in events
    assert str(created.id) not in admin_client.get("/admin/tasks_app/event/", {"action": "succeeded"}).content.decode()
    assert admin_client.get("/admin/tasks_app/task/", {"type": "data", "api_version": "3"}).status_code == 200


@pytest.mark.parametrize("model", ("task", "event", "webhookdelivery", "result"))
def test_engine_state_is_read_only(admin_client, world, model):
    obj = {"task": Task, "event": Event, "webhookdelivery": WebhookDelivery, "result": Result}[model].objects.first()
    assert obj is not None, model
    page = admin_client.get(f"/admin/tasks_app/{model}/{obj.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()  # a view page, no form to send
    assert admin_client.get(f"/admin/tasks_app/{model}/add/").status_code == 403
    assert admin_client.post(f"/admin/tasks_app/{model}/{obj.pk}/change/", {"state": "failed"}).status_code == 403
    assert admin_client.post(f"/admin/tasks_app/{model}/{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_a_task_page_never_shows_its_sealed_secrets(admin_client, world):
    task = Task.objects.filter(type="data").get()
    Task.objects.filter(id=task.id).update(secrets=seal({"code": "123456"}))
    page = admin_client.get(f"/admin/tasks_app/task/{task.id}/change/").content.decode()
    assert "field-payload" in page and "field-secrets" not in page


def test_rotate_action_shows_the_new_token_once_and_the_old_one_stops(admin_client, client, key):
    old = key.plaintext_token
    response = admin_client.post("/admin/tasks_app/key/", {"action": "rotate", "_selected_action": [key.id]})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    (token,) = TOKEN.findall(response.content.decode())
    assert Key.objects.get(id=key.id).token_hash == hash_token(token) != hash_token(old)
    assert token_works(client, token) and not token_works(client, old)
    # Never again: the key's own page shows no token.
    assert token not in admin_client.get(f"/admin/tasks_app/key/{key.id}/change/").content.decode()


def test_rotate_skips_keys_that_are_not_active(admin_client, key):
    other = create_key(organisation=key.organisation)
    Key.objects.filter(id=other.id).update(state="deactivated")
    response = admin_client.post("/admin/tasks_app/key/", {"action": "rotate", "_selected_action": [key.id, other.id]})
    assert len(TOKEN.findall(response.content.decode())) == 1
    assert Key.objects.get(id=other.id).token_hash == hash_token(other.plaintext_token)


def test_deactivate_action(admin_client, client, key):
    response = admin_client.post("/admin/tasks_app/key/", {"action": "deactivate", "_selected_action": [key.id]},
                                 follow=True)
    assert response.status_code == 200 and "Deactivated 1 key(s)." in response.content.decode()
    assert Key.objects.get(id=key.id).state == "deactivated"
    assert_error(client.get("/key", HTTP_AUTHORIZATION=f"Token {key.plaintext_token}"), 401, "unauthorized")


def test_adding_a_key_shows_its_token_once_and_stores_its_hash(admin_client, client, org):
    organisation, _ = org
    response = admin_client.post("/admin/tasks_app/key/add/", {"organisation": organisation.id,
                                                               "retrieval_protocol": "asstore"})
    assert response.status_code == 200
    (token,) = TOKEN.findall(response.content.decode())
    key = Key.objects.get(token_hash=hash_token(token))
    assert key.organisation_id == organisation.id and key.retrieval_protocol == "asstore"
    assert token_works(client, token)


def test_adding_an_organisation_makes_its_first_key(admin_client, client):
    response = admin_client.post("/admin/tasks_app/organisation/add/", {
        "name": "Made In Admin"})
    assert response.status_code == 200
    (token,) = TOKEN.findall(response.content.decode())
    organisation = Organisation.objects.get(name="Made In Admin")
    assert organisation.slug == "made-in-admin" and Permissions.objects.filter(organisation=organisation).exists()
    assert Key.objects.get(token_hash=hash_token(token)).organisation_id == organisation.id
    assert token_works(client, token)


def test_editing_a_key_goes_through_the_service(admin_client, client, key):
    response = admin_client.post(f"/admin/tasks_app/key/{key.id}/change/",
                                 {"state": "deactivated", "retrieval_protocol": "aschannel"})
    assert response.status_code == 302
    assert Key.objects.get(id=key.id).state == "deactivated"
    assert not token_works(client, key.plaintext_token)  # the auth cache was told at once


def test_admin_needs_a_staff_login(client, key):
    response = client.get("/admin/tasks_app/task/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    # An API token is not an admin credential.
    response = client.get("/admin/tasks_app/task/", HTTP_AUTHORIZATION=f"Token {key.plaintext_token}")
    assert response.status_code == 302


def test_api_requests_get_no_session_and_the_json_404_stays(client, admin_client, api):
    response = api.get("/organisation")
    assert response.status_code == 200 and "Set-Cookie" not in response and "sessionid" not in response.cookies
    assert_error(api.get("/administration"), 404, "not-found")
    assert admin_client.get("/admin/").status_code == 200


def test_the_admins_static_files_are_served(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/css")


def test_the_admin_can_be_turned_off():
    root = Path(__file__).resolve().parents[2]
    code = ("import django; django.setup(); from django.test import Client; "
            "r = Client().get('/admin/'); print(r.status_code, r.json()['error'])")
    env = {**os.environ, "RICLOUD_ADMIN_ENABLED": "0", "DJANGO_SETTINGS_MODULE": "ricloud_server.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["404", "not-found"], out.stderr

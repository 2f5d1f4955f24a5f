"""The test-backend reset (`POST /_ricloud/reset`, `manage.py reset`; docs/DECISIONS.md 110-111):
every kind of data goes, organisations, keys and their permissions stay, ids restart, and the
endpoint is a 404 unless RICLOUD_RESET_ENABLED."""
import io
import threading
import time

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from asmaster_app.models import Account, Device
from tasks_app.authcache import GENERATION_KEY
from tasks_app.models import Key, Organisation, Permissions, Result, StorageConfig, Task
from tasks_app.notify import get_redis
from tasks_app.services.counts import fold_task_counts
from tasks_app.services.dispatch import broker_client
from tasks_app.services.organisations import create_organisation
from tasks_app.services.reset import APPS
from tests.conftest import Client
from workers.runner import run

pytestmark = pytest.mark.django_db(transaction=True)

KEPT_TABLES = {model._meta.db_table for model in (Organisation, Key, Permissions)}


@pytest.fixture(autouse=True)
def test_backend(settings, tmp_path):
    settings.RICLOUD_RESET_ENABLED = True
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path / 'results'}"
    settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
    settings.RICLOUD_RATE_LIMIT_KEY = "100000/hour"
    broker_client().delete("tasks", "webhooks")
    return tmp_path / "results"


@pytest.fixture
def demo():
    organisation, key = create_organisation(name="Demo", token="a-demo-token-0123456789")
    client = Client()
    client.credentials(HTTP_AUTHORIZATION="Bearer a-demo-token-0123456789")
    return organisation, key, client


def data_counts() -> dict:
    tables = sorted({model._meta.db_table for model in apps.get_models(include_auto_created=True)
                     if model._meta.app_label in APPS} - KEPT_TABLES)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {table})" for table in tables))
        return dict(zip(tables, cursor.fetchone(), strict=True))


def run_pending():
    for _ in range(5):
        ids = list(Task.objects.filter(state__in=("pending", "suspended")).order_by("id").values_list("id", flat=True))
        for task_id in ids:
            run(task_id, max_attempts=5)


def fill(client, key) -> None:
    """One of everything the reset must clear, made through the API where there is one."""
    user = client.post_json("/users", {"identifier": "me@example.com"}).json()
    session = client.post_json("/sessions", {"source": {"user": user["id"], "type": "mocks.mock",
                                             "identifier": "john.appleseed@reincubate.com"},
                                             "payload": {"password": "x"}}).json()
    hook = client.post_json("/configs/webhook", {"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.content
    client.post_json("/organisation", {"webhook_config_default": hook.json()["id"]})
    # Made while the session is pending: its tasks are blocked by the session's init.
    poll = client.post_json("/polls", {"session": session["id"], "payload": {"data_types": ["photos", "notes.notes"]}})
    assert poll.status_code == 201, poll.content
    run_pending()
    subscription = client.post_json("/subscriptions", {"session": session["id"], "interval": 3600,
                                                       "poll_payload": {"data_types": ["notes.notes"]}})
    assert subscription.status_code == 201, subscription.content
    run_pending()
    storage = StorageConfig.objects.create(organisation_id=key.organisation_id, url="local:///tmp/x")
    Key.objects.filter(id=key.id).update(storage_config=storage)
    v2 = Client(HTTP_AUTHORIZATION=f"Token {key.plaintext_token}")
    assert v2.post("/register-account/", {"service": "iCloud", "username": "v2@example.com"}).status_code == 200
    submitted = v2.post("/submit-task/", {"service": "icloud", "action": "log-in", "account": "v2@example.com",
                                          "password": "x"})
    assert submitted.status_code == 200, submitted.content
    run_pending()
    account = Account.objects.create(organisation_id=key.organisation_id, key=key,
                                     source=Task.objects.filter(source__isnull=False).first().source,
                                     service="iCloud", username="m@example.com")
    Device.objects.create(account=account, device_tag="d1")
    fold_task_counts()
    queued = client.post_json("/polls", {"session": session["id"], "payload": {"info_types": ["*"]}})  # not run
    assert queued.status_code == 201, queued.content
    Permissions.objects.create(organisation_id=key.organisation_id, user_id=user["id"], scopes={})


def test_reset_clears_every_kind_of_data_and_keeps_organisations_keys_and_tokens(demo, test_backend):
    organisation, key, client = demo
    fill(client, key)
    before = data_counts()
    empty = sorted(table for table, n in before.items() if n == 0)
    assert empty == [], f"the fixture should fill every table: {empty}"
    assert [path for path in test_backend.rglob("*") if path.is_file()], "results were stored"
    assert broker_client().llen("tasks") > 0
    assert list(get_redis().scan_iter(match="ricloud:rate:*"))
    generation = int(get_redis().get(GENERATION_KEY) or 0)

    response = client.post("/_ricloud/reset")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["cleared"]["rows"] == before
    assert body["cleared"]["queued_messages"] > 0 and body["cleared"]["result_files"] is True
    assert body["kept"] == {"organisations": 1, "keys": 1} and body["deterministic"] is False
    assert 0 < body["seconds"] < 60
    print(f"\nreset of {sum(before.values())} rows: {body['seconds'] * 1000:.1f} ms")
    assert data_counts() == dict.fromkeys(before, 0)
    assert broker_client().llen("tasks") == 0
    assert [name for name in get_redis().scan_iter(match="ricloud:*") if name != GENERATION_KEY.encode()] == []
    assert int(get_redis().get(GENERATION_KEY)) > generation
    for thread in threading.enumerate():
        if thread.name == "ricloud-reset-rmtree":
            thread.join(10)
    assert test_backend.is_dir() and list(test_backend.rglob("*")) == []
    # The organisation, its key, token and base permissions are as they were; ids start again at 1.
    assert client.get("/organisation").json()["id"] == organisation.id
    assert client.get("/organisation").json()["webhook_config_default"] is None
    assert list(Permissions.objects.values_list("organisation_id", "user_id")) == [(organisation.id, None)]
    assert client.post_json("/users", {"identifier": "again@example.com"}).json()["id"] == 1
    assert client.get("/users").json()["total_count"] == 1


def test_manage_py_reset_is_the_same_function(demo):
    organisation, key, client = demo
    client.post_json("/users", {"identifier": "me@example.com"})
    out = io.StringIO()
    call_command("reset", "--noinput", stdout=out)
    assert '"tasks_app_user": 1' in out.getvalue()
    assert client.get("/users").json()["total_count"] == 0
    assert client.get("/key").status_code == 200


def test_reset_needs_a_valid_token(demo):
    response = Client().post("/_ricloud/reset")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    bad = Client(HTTP_AUTHORIZATION="Bearer not-a-token-at-all")
    assert bad.post("/_ricloud/reset").status_code == 401
    demo[2].post_json("/users", {"identifier": "me@example.com"})
    assert demo[2].get("/_ricloud/reset").status_code == 405
    assert demo[2].get("/users").json()["total_count"] == 1


def test_reset_disabled_is_absent(demo, settings):
    settings.RICLOUD_RESET_ENABLED = False
    demo[2].post_json("/users", {"identifier": "me@example.com"})
    for client in (demo[2], Client()):
        response = client.post("/_ricloud/reset")
        assert response.status_code == 404
        assert response.json() == {"error": "not-found", "message": "No such endpoint."}
    assert demo[2].get("/users").json()["total_count"] == 1


def test_reset_is_quick_with_a_few_thousand_tasks(demo):
    """Not a timing assertion: the figure is printed (and quoted in bench/README.md)."""
    organisation, key, client = demo
    user = client.post_json("/users", {"identifier": "me@example.com"}).json()
    session = client.post_json("/sessions", {"source": {"user": user["id"], "type": "mocks.mock",
                                             "identifier": "a@example.com"}, "payload": {"password": "x"}}).json()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tasks_app_task (id, organisation_id, key_id, session_id, type, api_version, has_results,"
            " results_consumed, payload, state, attempts, date_created)"
            " SELECT gen_random_uuid(), %s, %s, %s, 'mocks.data', 3, false, false, '{}', 'succeeded', 1, now()"
            " FROM generate_series(1, 5000)", [organisation.id, key.id, session["id"]])
        cursor.execute(
            "INSERT INTO tasks_app_event (id, organisation_id, key_id, type, action, object_id, state, retries,"
            " date_created) SELECT gen_random_uuid(), %s, %s, 'task', 'succeeded', id::text, 'pending', 0, now()"
            " FROM tasks_app_task", [organisation.id, key.id])
        cursor.execute(
            "INSERT INTO tasks_app_result (id, organisation_id, task_id, identifier, url, checksum, size, state,"
            " date_created) SELECT gen_random_uuid(), %s, id, 'x', 'local:///x', '', 1, 'available', now()"
            " FROM tasks_app_task", [organisation.id])
    started = time.perf_counter()
    body = client.post("/_ricloud/reset").json()
    elapsed = time.perf_counter() - started
    assert body["cleared"]["rows"]["tasks_app_task"] == 5001
    assert Task.objects.count() == 0 and Result.objects.count() == 0
    print(f"\nreset of 5,001 tasks, events and results: {body['seconds'] * 1000:.1f} ms in the service, "
          f"{elapsed * 1000:.1f} ms for the request ({connection.vendor}, broker {settings.CELERY_BROKER_URL})")

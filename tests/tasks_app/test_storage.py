"""Storage configs, S3 publishing against a moto server, signed URLs, result expiry (API.md §2.12, §5)."""
import hashlib
import os
from datetime import timedelta

import boto3
import pytest
import requests
from django.utils import timezone
from moto.server import ThreadedMotoServer

from tasks_app.models import Organisation, Result, Task, User
from tasks_app.services.polls import create_poll
from tasks_app.services.sessions import create_session
from tests.servers import free_port
from workers.runner import run
from workers.tasks import expire_results

pytestmark = pytest.mark.django_db

CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="customer-bucket")
    client.endpoint = endpoint
    yield client
    server.stop()


@pytest.fixture(autouse=True)
def server_storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path / 'server'}"
    settings.RICLOUD_LOCAL_STORAGE_ROOTS = [str(tmp_path / "allowed")]
    return tmp_path


def s3_config(s3, **extra):
    return {"url": "s3://customer-bucket/results", "credentials": {**CREDENTIALS, "endpoint_url": s3.endpoint}, **extra}


def run_test_task():
    task = Task.objects.filter(type="storage_config.test").latest("id")
    return run(task.id, max_attempts=5), Task.objects.get(id=task.id)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["error"] == code
    return response.json()


def publish_one(key, payload=None):
    user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
    session = create_session(key=key, user=user, source_type="mocks.mock", identifier="s3@example.com", payload={})
    run(Task.objects.get(session=session).id, max_attempts=5)
    poll = create_poll(key=key, session=session, source=None, payload=payload or {"data_types": ["messages.sms"]})
    for task in poll.tasks.all():
        run(task.id, max_attempts=5)
    return Result.objects.filter(poll=poll).get()


def test_an_s3_config_is_tested_and_activates_the_organisation(api, s3, key):
    assert api.get("/organisation").json()["state"] == "unconfigured"
    response = api.post_json("/configs/storage", s3_config(s3))
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "resource", "organisation", "type", "url", "credentials", "signed_urls_enabled",
                         "signed_urls_expiry", "state", "date_created"}
    assert (body["resource"], body["type"], body["state"]) == ("storage_config", "s3", "new")
    assert body["credentials"] == {"access_key_id": "********", "secret_access_key": "********", "endpoint_url": "********"}
    outcome, task = run_test_task()
    assert outcome == "succeeded" and task.target == str(body["id"])
    assert api.get(f"/configs/storage/{body['id']}").json()["state"] == "valid"
    organisation = api.get("/organisation").json()
    assert organisation["state"] == "active" and organisation["storage_config_default"] == body["id"]
    assert [c["id"] for c in organisation["storage_configs"]["data"]] == [body["id"]]
    assert s3.list_objects_v2(Bucket="customer-bucket").get("KeyCount") == 0  # the probe was deleted


def test_results_are_published_to_the_effective_s3_config(api, s3, key):
    api.post_json("/configs/storage", s3_config(s3))
    run_test_task()
    result = publish_one(key)
    assert result.url.startswith("s3://customer-bucket/results/")
    stored = s3.get_object(Bucket="customer-bucket", Key=result.url.split("/", 3)[3])["Body"].read()
    assert hashlib.md5(stored).hexdigest() == result.checksum and len(stored) == result.size
    assert api.get(f"/results/{result.id}").json()["signed_url"] is None


def test_signed_urls_when_enabled(api, s3, key):
    api.post_json("/configs/storage", s3_config(s3, signed_urls_enabled=True, signed_urls_expiry=600))
    run_test_task()
    result = publish_one(key)
    signed = api.get(f"/results/{result.id}").json()["signed_url"]
    assert set(signed) == {"url", "date_expires"} and signed["date_expires"].endswith("Z")
    download = requests.get(signed["url"], timeout=10)
    assert download.status_code == 200 and hashlib.md5(download.content).hexdigest() == result.checksum
    Result.objects.filter(id=result.id).update(signed_url_expires=timezone.now() - timedelta(seconds=1))
    assert api.get(f"/results/{result.id}").json()["signed_url"] is None


def test_a_missing_bucket_makes_the_config_invalid(api, s3):
    body = api.post_json("/configs/storage", {**s3_config(s3), "url": "s3://no-such-bucket/x"}).json()
    outcome, task = run_test_task()
    assert outcome == "failed" and task.error == "storage-test-failed"
    assert api.get(f"/configs/storage/{body['id']}").json()["state"] == "invalid"
    assert api.get("/organisation").json()["state"] == "unconfigured"


def test_an_invalid_config_is_not_used_for_publishing(api, s3, key, server_storage):
    api.post_json("/configs/storage", {**s3_config(s3), "url": "s3://no-such-bucket/x"})
    run_test_task()
    assert publish_one(key).url.startswith(f"local://{server_storage / 'server'}")


def test_local_configs_must_lie_under_an_allowed_root(api, server_storage):
    allowed = server_storage / "allowed" / "org"
    body = api.post_json("/configs/storage", {"url": f"local://{allowed}"}).json()
    assert body["type"] == "local"
    assert run_test_task()[0] == "succeeded"
    for url in ("local:///etc", f"local://{server_storage}/allowed/../elsewhere", "gs://bucket/x", "ftp://x", "s3://"):
        assert_error(api.post_json("/configs/storage", {"url": url}), 400, "invalid-parameter")


def test_update_retests_and_delete_deactivates(api, s3):
    body = api.post_json("/configs/storage", s3_config(s3)).json()
    run_test_task()
    updated = api.post_json(f"/configs/storage/{body['id']}", {"signed_urls_enabled": True}).json()
    assert updated["state"] == "new" and updated["signed_urls_enabled"] is True
    assert run_test_task()[0] == "succeeded"
    task = api.post_json(f"/configs/storage/{body['id']}/test", None).json()
    assert task["resource"] == "task" and task["type"] == "storage_config.test"
    assert api.delete(f"/configs/storage/{body['id']}").json()["state"] == "deactivated"


def test_isolation(api, other_api, s3):
    body = api.post_json("/configs/storage", s3_config(s3)).json()
    for response in (other_api.get(f"/configs/storage/{body['id']}"), other_api.delete(f"/configs/storage/{body['id']}"),
                     other_api.post_json(f"/configs/storage/{body['id']}/test", None)):
        assert_error(response, 404, "not-found")
    assert other_api.get("/configs/storage").json()["total_count"] == 0


def test_server_owned_results_expire_and_are_deleted(key, settings, server_storage):
    result = publish_one(key)
    path = result.url.removeprefix("local://")
    assert expire_results.apply().get() == 0
    Result.objects.filter(id=result.id).update(date_created=timezone.now() - timedelta(days=8))
    assert expire_results.apply().get() == 1
    result.refresh_from_db()
    assert result.state == "expired" and result.date_deleted is not None
    assert not os.path.exists(path)
    assert expire_results.apply().get() == 0


def test_results_in_customer_storage_never_expire(api, s3, key):
    api.post_json("/configs/storage", s3_config(s3))
    run_test_task()
    result = publish_one(key)
    Result.objects.filter(id=result.id).update(date_created=timezone.now() - timedelta(days=30))
    assert expire_results.apply().get() == 0
    assert Organisation.objects.get(id=key.organisation_id).state == "active"


def test_local_puts_write_in_place_once_and_replace_on_a_rerun(tmp_path):
    """A task's first result lands in a directory of its own, written in place; a rerun (or a
    second result of the task) replaces atomically; nothing temporary is left; only the owner
    may read the files."""
    from workers.publishers.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    first = storage.put("1/poll/task/account.info", b'{"a": 1}')
    again = storage.put("1/poll/task/account.info", b'{"a": 22}')
    other = storage.put("1/poll/task/account.devices", b"[]")
    path = tmp_path / "1/poll/task/account.info"
    assert first.url == again.url == f"local://{path}" and storage.get(again.url) == b'{"a": 22}'
    assert (first.size, again.size, other.size) == (8, 9, 2) and first.checksum != again.checksum
    assert sorted(p.name for p in path.parent.iterdir()) == ["account.devices", "account.info"]
    assert {p.stat().st_mode & 0o777 for p in path.parent.iterdir()} == {0o600}


def test_local_names_share_a_directory_per_organisation_and_hours_of_task_ids(tmp_path):
    from tasks_app.ids import uuid7
    from workers.publishers.storage import LocalStorage

    first, second = uuid7(), uuid7()
    names = [LocalStorage.name_for(organisation_id=7, poll_id=None, task_id=task, identifier="account.info")
             for task in (first, second)]
    assert names[0].rsplit("/", 1)[0] == names[1].rsplit("/", 1)[0] == f"7/{str(first)[:6]}"
    assert names[0].endswith(f"/{first}.account.info")
    long = LocalStorage.name_for(organisation_id=7, poll_id="p", task_id=first, identifier="a/b c" * 100)
    assert len(long.rsplit("/", 1)[1]) <= 255
    storage = LocalStorage(tmp_path)
    stored = [storage.put(name, b"x") for name in (*names, long)]
    assert len({s.url for s in stored}) == 3 and all(storage.get(s.url) == b"x" for s in stored)

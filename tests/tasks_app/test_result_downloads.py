"""Signed download URLs of local results (tasks_app/downloads.py, docs/DECISIONS.md 130-133)."""
import hashlib
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tasks_app.downloads import signature
from tasks_app.models import Result
from tests.servers import free_port
from tests.tasks_app.test_conventions import assert_error
from tests.tasks_app.test_results import make_session, run_poll

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    settings.RICLOUD_PUBLIC_URL = ""
    return tmp_path


@pytest.fixture
def result(key):
    """The `photos` document of a poll that also fetched the first photo it names."""
    session = make_session(key)
    document = Result.objects.get(poll=run_poll(key, session, {"data_types": ["photos"]}))
    file_id = json.loads(Path(urlsplit(document.url).path).read_bytes())["data"][0]["files"][0]["id"]
    poll = run_poll(key, session, {"data_types": ["photos"], "files": [file_id]})
    return Result.objects.filter(poll=poll, type="json").get()


def signed(api, result_id) -> dict:
    body = api.get(f"/results/{result_id}").json()
    assert body["signed_url"] is not None, body
    return body["signed_url"]


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_local_result_has_a_signed_url_on_the_requests_host(api, result):
    signed_url = api.get(f"/results/{result.id}", HTTP_HOST="ricloud.example.org:8443").json()["signed_url"]
    parts = urlsplit(signed_url["url"])
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"http://ricloud.example.org:8443/results/{result.id}/download"
    expires = int(query["expires"][0])
    assert time.time() + 3600 <= expires < time.time() + 3600 + 61 and expires % 60 == 0
    assert query["signature"] == [signature(result.id, expires)]
    assert signed_url["date_expires"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    # The url stays the storage URL (the client's download_result copies it on the server's host).
    assert api.get(f"/results/{result.id}").json()["url"] == result.url


def test_public_url_and_expiry_settings(api, result, settings):
    settings.RICLOUD_PUBLIC_URL = "https://ricloud.example.org/"
    settings.RICLOUD_DOWNLOAD_URL_EXPIRY_SECONDS = 120
    url = signed(api, result.id)["url"]
    assert url.startswith(f"https://ricloud.example.org/results/{result.id}/download?expires=")
    assert int(parse_qs(urlsplit(url).query)["expires"][0]) <= time.time() + 180


def test_nested_results_of_polls_and_tasks_carry_it_too(api, result):
    poll = api.get(f"/polls/{result.poll_id}").json()
    task = api.get(f"/tasks/{result.task_id}").json()
    listed = api.get("/tasks", {"poll": str(result.poll_id), "limit": 100}).json()
    for body in (poll["results"]["data"], task["results"]["data"], *[t["results"]["data"] for t in listed["data"]]):
        assert all(item["signed_url"]["url"].startswith("http://testserver/results/") for item in body)


def test_the_signed_url_serves_the_file_without_a_token(api, anon, result):
    response = anon.get(path_of(signed(api, result.id)["url"]))
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    assert hashlib.md5(content).hexdigest() == result.checksum and len(content) == result.size
    assert response["Content-Type"] == "application/json"
    assert response["Content-Length"] == str(result.size)
    assert response["Content-Disposition"] == 'attachment; filename="photos"'
    assert response["ETag"] == f'"{result.checksum}"'


def test_a_file_result_has_its_type(api, anon, key, result):
    photo = Result.objects.filter(poll_id=result.poll_id).exclude(type="json").get()
    response = anon.get(path_of(signed(api, photo.id)["url"]))
    assert response.status_code == 200
    assert photo.type in ("jpg", "jpeg", "heic", "png", "mov")
    assert response["Content-Type"] == {"jpg": "image/jpeg", "jpeg": "image/jpeg", "heic": "image/heic",
                                        "png": "image/png", "mov": "video/quicktime"}[photo.type]
    assert hashlib.md5(b"".join(response.streaming_content)).hexdigest() == photo.checksum


def test_a_consumed_result_can_still_be_downloaded(api, anon, result):
    url = path_of(signed(api, result.id)["url"])
    api.generic("POST", f"/results/{result.id}/ack", "null", content_type="")
    assert anon.get(url).status_code == 200


@pytest.mark.parametrize("tamper", ["signature", "expires", "id", "missing", "garbage"])
def test_a_wrong_signature_is_403(api, anon, result, tamper):
    url = path_of(signed(api, result.id)["url"])
    path, query = url.split("?")
    params = parse_qs(query)
    expires, sig = params["expires"][0], params["signature"][0]
    other = Result.objects.exclude(id=result.id).first()
    forged = {
        "signature": f"{path}?expires={expires}&signature={sig[:-2]}AA",
        "expires": f"{path}?expires={int(expires) + 60}&signature={sig}",
        "id": f"/results/{other.id}/download?expires={expires}&signature={sig}",
        "missing": path,
        "garbage": f"{path}?expires=１２&signature=%FF%00",
    }[tamper]
    body = assert_error(anon.get(forged), 403, "invalid-signature")
    assert set(body) == {"error", "message"}


def test_an_expired_url_is_410(anon, result):
    expires = int(time.time()) - 1
    response = anon.get(f"/results/{result.id}/download?expires={expires}&signature={signature(result.id, expires)}")
    assert_error(response, 410, "url-expired")


def test_a_url_signed_under_a_retired_secret_key_still_works(api, anon, result, settings):
    url = path_of(signed(api, result.id)["url"])
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-for-this-test-only"
    assert anon.get(url).status_code == 200
    settings.SECRET_KEY_FALLBACKS = []
    assert_error(anon.get(url), 403, "invalid-signature")


def test_a_result_gone_from_the_store_is_410_and_expired_ones_have_no_url(api, anon, result):
    url = path_of(signed(api, result.id)["url"])
    Path(urlsplit(result.url).path).unlink()
    assert_error(anon.get(url), 410, "result-expired")
    Result.objects.filter(id=result.id).update(state="expired")
    assert api.get(f"/results/{result.id}").json()["signed_url"] is None
    assert_error(anon.get(url), 410, "result-expired")


def test_a_file_outside_the_local_stores_is_never_served(api, anon, result, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    outside.write_text("not a result")
    url = path_of(signed(api, result.id)["url"])
    Result.objects.filter(id=result.id).update(url=f"local://{outside}")
    assert_error(anon.get(url), 404, "not-found")


def test_results_of_a_customers_s3_store_have_no_server_download_url(api, result):
    Result.objects.filter(id=result.id).update(url="s3://bucket/results/x.json")
    assert api.get(f"/results/{result.id}").json()["signed_url"] is None


@pytest.fixture
def own_s3(settings, monkeypatch):
    """The server's own store on an S3 server (moto's, as MinIO in docker-compose.yml)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio-secret",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="ricloud-results")
    settings.RICLOUD_S3_ENDPOINT_URL = endpoint
    settings.RICLOUD_STORAGE_URL = "s3://ricloud-results/results"
    yield boto3.client("s3", endpoint_url=endpoint)
    server.stop()


def test_results_of_the_servers_own_s3_store_are_streamed_through_the_server(api, anon, key, own_s3):
    poll = run_poll(key, make_session(key), {"data_types": ["messages.sms"]})
    result = Result.objects.get(poll=poll)
    assert result.url.startswith("s3://ricloud-results/results/")
    response = anon.get(path_of(signed(api, result.id)["url"]))
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    assert hashlib.md5(content).hexdigest() == result.checksum
    assert response["Content-Length"] == str(result.size) and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="messages.sms"'
    own_s3.delete_object(Bucket="ricloud-results", Key=urlsplit(result.url).path.lstrip("/"))
    assert_error(anon.get(path_of(signed(api, result.id)["url"])), 410, "result-expired")

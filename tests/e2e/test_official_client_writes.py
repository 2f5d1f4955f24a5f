"""The official client ricloud==3.2.0, unmodified, on the production web process and a real
worker: `Source.update`, `Task.create` and result downloads through `signed_url` (docs/DECISIONS.md
130-136)."""
import hashlib
import json
from urllib.parse import urlsplit

import pytest
import requests
import ricloud as ricloud_module
from ricloud.samples.utils import await_response

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def client_on_web(start_web, worker, e2e_key, monkeypatch, tmp_path):
    """The client against the Procfile's web process (it serves the files the worker stores)."""
    web = start_web()
    monkeypatch.setattr(ricloud_module, "url", web.url)
    monkeypatch.setattr(ricloud_module, "token", e2e_key.plaintext_token)
    monkeypatch.setenv("RICLOUD_OUTPUT_DIRECTORY", str(tmp_path / "output"))
    ricloud_module.web = web
    return ricloud_module


def open_session(ricloud):
    user = ricloud.User.create(identifier="writes@example.com")
    session = ricloud.Session.create(
        source={"user": user, "type": "mocks.mock", "identifier": "john.appleseed@reincubate.com"},
        payload={"password": "abcd1234"},
    )
    await_response(session)
    assert session.state == "active"
    return user, session


def test_source_update_deactivates_and_lifts(client_on_web):
    ricloud = client_on_web
    user, session = open_session(ricloud)
    source = ricloud.Source.retrieve(session.source.id)
    source.update(state="deactivated")
    assert source.state == "deactivated" and ricloud.Source.retrieve(source.id).state == "deactivated"
    with pytest.raises(ricloud.exceptions.RequestError) as refused:
        ricloud.Session.create(source={"user": user, "type": "mocks.mock", "identifier": source.identifier},
                               payload={"password": "abcd1234"})
    assert refused.value.status == 400 and refused.value.error == "invalid-parameter"
    lifted = ricloud.Source.update_with_id(source.id, state="active")
    assert lifted.state == "active"
    with pytest.raises(ricloud.exceptions.RequestError) as bad:
        source.update(identifier="someone.else@example.com")
    assert bad.value.status == 400 and "identifier" in bad.value.params


def test_task_create_runs_on_the_worker_and_its_result_downloads_without_a_token(client_on_web):
    ricloud = client_on_web
    _, session = open_session(ricloud)
    task = ricloud.Task.create(session=session, type="data", target="photos")
    assert task.resource == "task" and task.type == "data" and task.target == "photos"
    assert task.session == session.id and task.poll
    await_response(task)
    assert task.state == "succeeded"
    (result,) = task.results
    assert result.identifier == "photos" and result.type == "json"

    # The result as the client sees it: `url` the storage location, `signed_url` the server's
    # own download URL, on the host the client talks to.
    retrieved = ricloud.Result.retrieve(result.id)
    assert retrieved.url.startswith("local:///")
    signed = retrieved.signed_url
    assert signed["url"].startswith(f"{ricloud.url}/results/{result.id}/download?expires=")
    response = requests.get(signed["url"], timeout=30)  # no Authorization header
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.content) == retrieved.size
    assert hashlib.md5(response.content).hexdigest() == retrieved.checksum
    assert json.loads(response.content)["data"]

    forged = signed["url"][:-4] + "AAAA"
    refused = requests.get(forged, timeout=30)
    assert refused.status_code == 403 and refused.json()["error"] == "invalid-signature"

    # A file task for a photo the document names, also through Task.create.
    file_id = json.loads(response.content)["data"][0]["files"][0]["id"]
    file_task = ricloud.Task.create(session=session, type="file", target=file_id)
    wait_for(lambda: ricloud.Task.retrieve(file_task.id).state == "succeeded")
    file_result = ricloud.Task.retrieve(file_task.id).results[0]
    download = requests.get(file_result.signed_url["url"], timeout=30)
    assert download.status_code == 200 and hashlib.md5(download.content).hexdigest() == file_result.checksum
    assert download.headers["Content-Disposition"] == f'attachment; filename="{file_result.identifier}"'


def test_task_create_refuses_bad_input_in_the_envelope(client_on_web):
    ricloud = client_on_web
    _, session = open_session(ricloud)
    with pytest.raises(ricloud.exceptions.RequestError) as error:
        ricloud.Task.create(session=session, type="data", target="no.such.type")
    assert error.value.status == 400 and error.value.error == "invalid-parameter"
    assert "target" in error.value.params
    with pytest.raises(ricloud.exceptions.RequestError) as error:
        ricloud.Task.create(type="session.init")
    assert error.value.status == 400 and {"session", "type", "target"} <= set(error.value.params)


def test_a_public_url_names_the_download_host(start_web, worker, e2e_key):
    web = start_web(RICLOUD_PUBLIC_URL="https://ricloud.example.org")
    headers = {"Authorization": f"Token {e2e_key.plaintext_token}"}
    user = requests.post(f"{web.url}/users", json={"identifier": "p@example.com"}, headers=headers).json()
    session = requests.post(f"{web.url}/sessions", headers={**headers, "Ricloud-Await": "10"}, json={
        "source": {"user": user["id"], "type": "mocks.mock", "identifier": "p@example.com"},
        "payload": {"password": "x"}}).json()
    poll = requests.post(f"{web.url}/polls", headers={**headers, "Ricloud-Await": "10"}, json={
        "session": session["id"], "payload": {"info_types": ["account.info"]}}).json()
    (result,) = poll["results"]["data"]  # rendered by the held response, on the event loop's thread
    url = result["signed_url"]["url"]
    assert url.startswith(f"https://ricloud.example.org/results/{result['id']}/download?")
    parts = urlsplit(url)
    assert requests.get(f"{web.url}{parts.path}?{parts.query}", timeout=30).status_code == 200

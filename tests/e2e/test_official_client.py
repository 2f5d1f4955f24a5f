"""The official client ricloud==3.2.0, unmodified, against a live server and a real worker."""
import json
from pathlib import Path

import pytest
from ricloud.samples import helpers
from ricloud.samples.utils import await_response
from ricloud.storage import download_result

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_clients_own_integration_flow(ricloud_client, worker):
    ricloud = ricloud_client
    user = ricloud.User.create(identifier="testing@reincubate.com")
    assert user.resource == "user" and user.identifier == "testing@reincubate.com"
    assert ricloud.User.create(identifier="testing@reincubate.com").id == user.id

    session = ricloud.Session.create(
        source={"user": user, "type": "mocks.mock", "identifier": "john.appleseed@reincubate.com"},
        payload={"password": "abcd1234"},
    )
    assert session.state == "pending"
    await_response(session)
    assert session.state == "active"
    assert session.source.state == "active"

    poll = ricloud.Poll.create(session=session, payload={"info_types": ["*"]})
    await_response(poll)
    assert poll.state == "completed"
    assert sorted(result.identifier for result in poll.results) == ["account.devices", "account.info"]
    assert poll.tasks_failed == [] and len(poll.tasks_succeeded) == 2

    tasks = ricloud.Task.list(poll=poll, limit=100)
    assert {task.type for task in tasks} == {"info"}
    assert all(task.state == "succeeded" and task.source_type == "mocks.mock" for task in tasks)


def test_data_poll_results_download_cascade_and_ack(ricloud_client, worker, tmp_path):
    ricloud = ricloud_client
    user = ricloud.User.create(identifier="data@example.com")
    session = ricloud.Session.create(
        source={"user": user, "type": "icloud.account", "identifier": "john.appleseed@reincubate.com"},
        payload={"password": "joshua"},
    )
    await_response(session)
    assert session.state == "active"

    poll = ricloud.Poll.create(session=session, payload={"data_types": ["photos", "ios_messages.messages"]})
    await_response(poll)
    assert poll.state == "completed"
    assert {result.identifier for result in poll.results} == {"photos", "ios_messages.messages"}

    # The client's own sample helper downloads every result and, with cascade, polls for the
    # files the documents reference and downloads those too.
    documents, files = helpers.download_results(poll.results, cascade=True, limit=2, poll=poll)
    assert set(documents) == {"photos", "ios_messages.messages"}
    assert documents["photos"]["metadata"]["count"] == len(documents["photos"]["data"]) > 0
    assert len(files) >= 2
    for file_id, path in files.items():
        content = Path(path).read_bytes()
        file_result = ricloud.Result.list(identifier=file_id, limit=1)[0]
        assert file_result.size == len(content) and file_result.type != "json"

    photo = documents["photos"]["data"][0]["files"][0]
    assert ricloud.Result.list(identifier=photo["id"], limit=1)[0].checksum == photo["checksum"]

    result = poll.results[0]
    local_copy = download_result(result.url, to_filename=str(tmp_path / "copy.json"))
    assert json.loads(Path(local_copy).read_text())["data"]
    result.acknowledge()
    assert result.state == "consumed" and result.date_consumed
    remaining = ricloud.Result.list(poll=poll)
    assert result.id not in {item.id for item in remaining}
    assert result.id in {item.id for item in ricloud.Result.list(poll=poll, state="consumed")}

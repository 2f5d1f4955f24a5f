"""v2 end to end: curl-shaped HTTP, a real worker, and an aschannel stream read frame by frame
exactly as ricloud-py 2.x reads it (API.md §6.5)."""
import json
import tempfile
import threading

import pytest
import requests

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class StreamReader:
    """A port of ricloud-py 2.x `Stream._consume` and `ChunkedDataHandler`, byte for byte."""

    def __init__(self, base_url, token, stream):
        self.response = requests.get(f"{base_url}/stream/", {"stream": stream}, stream=True,
                                     headers={"Authorization": f"Token {token}"}, timeout=30)
        assert self.response.ok, self.response.content
        self.messages, self.heartbeats, self.tmp_handles = [], 0, {}
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self):
        buf = self.response.raw
        try:
            while not buf.closed:
                line = buf.readline().strip()
                if not line:
                    self.heartbeats += 1
                elif line.isdigit():
                    length = int(line)
                    header = buf.read(length)
                    length = int(buf.readline().strip())
                    body = buf.read(length - 2)
                    self.on_message(json.loads(header), body)
        except (AttributeError, ValueError, OSError, requests.RequestException):
            pass  # closed by the test

    def on_message(self, header, payload):
        if header.get("total_chunks", 1) > 1:
            stream = self.tmp_handles.setdefault(header["task_id"], tempfile.TemporaryFile())
            stream.seek(header["chunk_size"] * (header["chunk"] - 1))
            stream.write(payload)
            if header["chunk"] == header["total_chunks"]:
                stream.seek(0)
                self.messages.append((header, stream.read()))
                stream.close()
                del self.tmp_handles[header["task_id"]]
        else:
            self.messages.append((header, payload))

    def payloads(self):
        return {header.get("task_id"): payload for header, payload in self.messages if header["type"] != "system"}

    def close(self):
        self.response.close()
        self.thread.join(5)


@pytest.fixture
def v2_http(live_server, e2e_key):
    session = requests.Session()
    session.headers["Authorization"] = f"Token {e2e_key.plaintext_token}"

    def post(path, **data):
        response = session.post(f"{live_server.url}{path}", data=data, timeout=10)
        assert response.status_code == 200, response.content
        return response.json()

    return post


def test_results_stream_chunked_and_replay_until_consumed(live_server, e2e_key, v2_http, worker, settings):
    settings.RICLOUD_ASCHANNEL_CHUNK_SIZE = 700
    settings.RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS = 0.3
    account = requests.get(f"{live_server.url}/account/", headers={"Authorization": f"Token {e2e_key.plaintext_token}"}).json()
    assert account["retrieval_protocol"] == "aschannel"
    assert v2_http("/register-account/", service="iCloud", username="john.appleseed@reincubate.com")["success"]

    reader = StreamReader(live_server.url, e2e_key.plaintext_token, e2e_key.stream)
    wait_for(lambda: reader.messages)
    greeting_header, greeting = reader.messages[0]
    assert greeting_header == {"type": "system"} and b"error" not in greeting
    assert json.loads(greeting)["message"] == "Message streaming has begun."

    login = v2_http("/submit-task/", service="iCloud", action="log-in", account="john.appleseed@reincubate.com",
                    password="joshua")
    assert login["stream"] == e2e_key.stream
    wait_for(lambda: login["task_id"] in reader.payloads())
    assert json.loads(reader.payloads()[login["task_id"]])["message"] == "Log-in successful"

    feeds = v2_http("/submit-task/", service="iCloud", action="fetch-data", account="john.appleseed@reincubate.com",
                    data="sms,photos")
    wait_for(lambda: feeds["task_id"] in reader.payloads())
    (last_chunk,) = [h for h, _ in reader.messages if h.get("task_id") == feeds["task_id"]]
    assert last_chunk["type"] == "fetch-data" and last_chunk["chunk_size"] == 700
    assert last_chunk["total_chunks"] > 1 and last_chunk["chunk"] == last_chunk["total_chunks"]
    document = json.loads(reader.payloads()[feeds["task_id"]])
    assert set(document) == {"sms", "photos"} and document["photos"][0]["file_id"]
    wait_for(lambda: reader.heartbeats >= 2)
    reader.close()

    status = v2_http("/task-status/", task_ids=f"{login['task_id']},{feeds['task_id']}")
    assert status[feeds["task_id"]]["status"] == "Publish complete" and status[feeds["task_id"]]["success"] is True
    assert status[feeds["task_id"]]["result_retrieved"] is False

    # Nothing was reported consumed: a new connection replays both deliveries.
    replay = StreamReader(live_server.url, e2e_key.plaintext_token, e2e_key.stream)
    wait_for(lambda: set(replay.payloads()) == {login["task_id"], feeds["task_id"]})
    assert replay.payloads()[feeds["task_id"]] == reader.payloads()[feeds["task_id"]]
    replay.close()

    assert v2_http("/results-consumed/", task_ids=[login["task_id"], feeds["task_id"]]) == {"success": True}
    status = v2_http("/task-status/", task_ids=feeds["task_id"])
    assert status[feeds["task_id"]]["result_retrieved"] is True

    quiet = StreamReader(live_server.url, e2e_key.plaintext_token, e2e_key.stream)
    wait_for(lambda: quiet.heartbeats >= 2)
    assert [h["type"] for h, _ in quiet.messages] == ["system"]
    quiet.close()


def test_download_file_arrives_with_its_filename(live_server, e2e_key, v2_http, worker, settings):
    settings.RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS = 0.3
    v2_http("/register-account/", service="icloud", username="files@example.com")
    reader = StreamReader(live_server.url, e2e_key.plaintext_token, e2e_key.stream)
    login = v2_http("/submit-task/", service="icloud", action="log-in", account="files@example.com", password="pw")
    # As the official client does: the log-in's result comes before the next request.
    wait_for(lambda: login["task_id"] in reader.payloads())
    feeds = v2_http("/submit-task/", service="icloud", action="fetch-data", account="files@example.com", data="photos")
    wait_for(lambda: feeds["task_id"] in reader.payloads())
    photo = json.loads(reader.payloads()[feeds["task_id"]])["photos"][0]
    download = v2_http("/submit-task/", service="icloud", action="download-file", account="files@example.com",
                       file=photo["file_id"])
    wait_for(lambda: download["task_id"] in reader.payloads())
    header = next(h for h, _ in reader.messages if h.get("task_id") == download["task_id"])
    assert header["type"] == "download-file" and header["file_id"] == photo["file_id"]
    assert header["filename"] == photo["filename"] and header["service"] == "iCloud"
    assert len(reader.payloads()[download["task_id"]]) == photo["files"][0]["size"]
    reader.close()


def test_the_stream_needs_the_tokens_own_stream(live_server, e2e_key):
    headers = {"Authorization": f"Token {e2e_key.plaintext_token}"}
    assert requests.get(f"{live_server.url}/stream/", {"stream": "stream-0"}, headers=headers).status_code == 403
    assert requests.get(f"{live_server.url}/stream/", headers=headers).status_code == 400
    assert requests.get(f"{live_server.url}/stream/", {"stream": e2e_key.stream}).status_code == 401

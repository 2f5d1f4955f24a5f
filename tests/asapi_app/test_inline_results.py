"""Small v2 results are kept in their database row, not in a file (RICLOUD_INLINE_RESULT_MAX_BYTES):
streamed on aschannel, fetched from asstore, downloaded by signed URL and expired like any other."""
import json
from urllib.parse import urlsplit

import pytest

from asapi_app.stream import scan
from tasks_app.models import Result
from tasks_app.services.storage import expire_results
from workers.publishers.storage import open_storage

from .test_endpoints import register, run_submitted, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    return tmp_path


def files(root) -> list:
    return [path for path in root.rglob("*") if path.is_file()]


def delivered_payloads(key) -> list[bytes]:
    """The payloads an aschannel stream of `key` sends now (each message: a header, then the body)."""
    out = []
    for _, frames in scan(key.stream, set()):
        message = b"".join(frames)
        out.append(message.split(b"\r\n", 2)[2])
    return out


def test_a_v2_result_lives_in_its_row_and_streams_from_it(v2, key, storage):
    register(v2)
    task_id = run_submitted(submit(v2, "perform-2fa-challenge", device="0"))
    result = Result.objects.get(task_id=task_id)
    assert result.url.startswith("inline:") and result.content is not None and files(storage) == []
    document = json.loads(bytes(result.content))
    assert document["success"] is True and result.size == len(bytes(result.content))
    payloads = delivered_payloads(key)
    assert len(payloads) == 1 and bytes(result.content) in payloads[0]


def test_asstore_hands_an_inline_result_out_once(v2_store, storage):
    register(v2_store)
    task_id = run_submitted(submit(v2_store, "perform-2fa-challenge", device="0"))
    content = bytes(Result.objects.get(task_id=task_id).content)
    fetched = v2_store.get(f"/fetch/{task_id}/")
    assert fetched.status_code == 200 and fetched.content == content and files(storage) == []
    assert v2_store.get(f"/fetch/{task_id}/").status_code != 200


def test_an_inline_result_downloads_by_signed_url_and_expires(v2, api, key, settings):
    register(v2)
    task_id = run_submitted(submit(v2, "perform-2fa-challenge", device="0"))
    result = Result.objects.get(task_id=task_id)
    signed = api.get(f"/results/{result.id}").json()["signed_url"]
    assert signed is not None
    parts = urlsplit(signed["url"])
    response = api.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200 and b"".join(response) == bytes(result.content)
    settings.RICLOUD_RESULT_RETENTION_SECONDS = -1
    assert expire_results(delete=lambda url: open_storage(url).delete(url)) >= 1
    result.refresh_from_db()
    assert (result.state, result.content) == ("expired", None)
    assert api.get(f"{parts.path}?{parts.query}").status_code == 410


def test_larger_results_and_a_zero_limit_still_go_to_the_store(v2, settings, storage):
    settings.RICLOUD_INLINE_RESULT_MAX_BYTES = 0
    register(v2)
    task_id = run_submitted(submit(v2, "perform-2fa-challenge", device="0"))
    result = Result.objects.get(task_id=task_id)
    assert result.url.startswith("local://") and result.content is None and len(files(storage)) == 1

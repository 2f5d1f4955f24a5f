"""The official v2 client, ricloud==2.3.10 under Python 2.7, unmodified, against the production web
process and a real worker: the legacy flow through its library API and its interactive CLI, on
aschannel and on asstore (the issue "The whole v2 system through its official client, unmodified").
"""
import hashlib
import json
import os
from pathlib import Path

import pytest

from .conftest import SCRIPTS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACCOUNT, PASSWORD = "john.appleseed@reincubate.com", "joshua"
TIMEOUT = 240


def file_references(data: dict) -> list[dict]:
    """(file reference, expected md5) of every file the feeds reference: photos, attachments and
    WhatsApp files. Each reference must carry what the 2.x sample reads."""
    references = []
    for data_type, feed in data.items():
        for entry in feed:
            if data_type == "photos":
                references.append((entry, entry["files"][0]["checksum"]))
            elif "file" in entry:
                references.append((entry, entry["file"]["checksum"]))
            for attachment in entry.get("attachments") or []:
                references.append((attachment, attachment["checksum"]))
    for reference, _ in references:
        assert {"file_id", "file_path", "filename"} <= set(reference), reference
        assert reference["file_path"].rsplit("/", 1)[-1] == reference["filename"], reference
    return references


def assert_every_file_written(output: Path, device_name: str, data: dict, *, sample_only=False) -> int:
    references = file_references(data)
    if sample_only:  # what the sample downloads: photos and attachments
        references = [(ref, md5) for ref, md5 in references if "chat_id" not in ref]
    written = {}
    for reference, md5 in references:
        directory = output / "files" / device_name / Path(*reference["file_path"].split("/")[:-1])
        path = directory / reference["filename"]
        assert path.is_file(), f"not written: {path}"
        assert hashlib.md5(path.read_bytes()).hexdigest() == md5, f"checksum differs: {path}"
        written[path] = reference["file_id"]
    assert len(written) == len(references)  # every reference its own file
    on_disk = [path for path in (output / "files").rglob("*") if path.is_file()]
    assert sorted(on_disk) == sorted(written)
    return len(written)


def assert_clean_log(log: str) -> None:
    for marker in ("CRITICAL", "KeyError", "Traceback", "stream_error", "Error occurred"):
        assert marker not in log, log[-5000:]


def run_library_flow(py27_client, service, tmp_path):
    env = service.configure(py27_client, tmp_path)
    result = py27_client.run([SCRIPTS / "legacy_flow.py", ACCOUNT, PASSWORD, "2fa.user@example.com", TIMEOUT],
                             cwd=tmp_path, env=env, timeout=TIMEOUT + 60)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{py27_client.log(tmp_path)[-5000:]}"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    data = json.loads((tmp_path / "data.json").read_text())
    assert summary["services"] == ["iCloud"]
    assert summary["data_types"] == sorted(["sms", "messages", "whatsapp_messages", "photos", "call_history",
                                            "contacts", "notes", "web_browser_history"])
    assert all(data[name] for name in data), "every data type has entries"
    written = assert_every_file_written(tmp_path / "output", summary["device_name"], data)
    assert written == summary["files_requested"] > 40
    assert summary["twofa_error"] == "2fa-required"
    assert summary["twofa"] == {"challenge": True, "finish": True, "finish_message": "Log-in successful"}
    assert summary["twofa_devices"] and len(summary["devices"]) == 4
    assert summary["pending_after"] == []
    assert_clean_log(py27_client.log(tmp_path))
    print("v2 client summary:", json.dumps({k: v for k, v in summary.items() if "seconds" in k or k == "files_requested"}))
    return summary


def test_the_library_api_on_aschannel(py27_client, v2_service, tmp_path):
    service = v2_service("aschannel")
    summary = run_library_flow(py27_client, service, tmp_path)
    assert summary["retrieval_protocol"] == "aschannel"
    # Everything was consumed: a new client is sent nothing again.
    from tasks_app.models import Delivery

    assert not Delivery.objects.filter(stream=service.stream, state="pending").exists()


def test_the_library_api_on_asstore(py27_client, v2_service, tmp_path):
    """asstore: the client's ObjectStore thread polls /task-status/ and fetches each result once."""
    service = v2_service("asstore")
    summary = run_library_flow(py27_client, service, tmp_path)
    assert summary["retrieval_protocol"] == "asstore"
    from tasks_app.models import Result, Task

    tasks = Task.objects.filter(key=service.key)
    assert tasks.count() > 50 and not tasks.filter(state__in=["pending", "processing"]).exists()
    assert not Result.objects.filter(task__key=service.key, state="available").exists()  # all fetched, once


def test_the_interactive_cli_choosing_all(py27_client, v2_service, tmp_path):
    """`python -m ricloud john.appleseed@reincubate.com --password=joshua`: service 0 (iCloud), sample
    0 (the iCloud sample), device 0, data 0 ("All", the default); it downloads every photo and
    attachment and returns once every task has completed."""
    service = v2_service("aschannel")
    env = service.configure(py27_client, tmp_path)
    result = py27_client.run(["-m", "ricloud", ACCOUNT, f"--password={PASSWORD}", f"--timeout={TIMEOUT}"],
                             cwd=tmp_path, env=env, timeout=TIMEOUT + 60, input="0\n0\n0\n0\n")
    log = py27_client.log(tmp_path)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{log[-5000:]}"
    assert "All tasks completed" in result.stdout
    (data_file,) = (tmp_path / "output").glob("*.json")
    data = json.loads(data_file.read_text())
    assert len(data) == 8  # "All": every data type
    (device_dir,) = (tmp_path / "output" / "files").iterdir()
    written = assert_every_file_written(tmp_path / "output", device_dir.name, data, sample_only=True)
    assert written > 40 and result.stdout.count(os.fspath(tmp_path / "output" / "files")) == written
    assert_clean_log(log)


def test_an_interrupted_runs_deliveries_can_be_dropped(py27_client, v2_service, tmp_path):
    """The 2.x client sleeps 1 s per result of a task it does not know (Api.set_task_result): the
    deliveries an interrupted run left cost the next client that much before its own log-in. Dropped
    (POST /drop-deliveries/, as a customer can; the retention does it by itself), they cost nothing."""
    import requests

    from tasks_app.models import Delivery, Task
    from tests.e2e.conftest import wait_for

    service = v2_service("aschannel")
    env = service.configure(py27_client, tmp_path)
    (tmp_path / "run1").mkdir(), (tmp_path / "run2").mkdir()
    count = 8

    # Each run registers its own accounts: the 2.x client exits when an account is registered already.
    def interrupted_run(n):
        result = py27_client.run([SCRIPTS / "interrupted.py", f"gone{n}@example.com", PASSWORD, count], cwd=tmp_path,
                                 env=env)
        assert result.returncode == 0, result.stderr
        ids = json.loads(result.stdout.strip().splitlines()[-1])
        wait_for(lambda: Delivery.objects.filter(task_id__in=ids, state="pending").count() == count, timeout=60)
        return ids

    def next_log_in(n) -> float:
        result = py27_client.run([SCRIPTS / "legacy_flow.py", f"next{n}@example.com", PASSWORD, f"2fa.next{n}@example.com",
                                  TIMEOUT], cwd=tmp_path / f"run{n}", env=env, timeout=TIMEOUT + 60)
        assert result.returncode == 0, f"{result.stderr[-3000:]}\n{py27_client.log(tmp_path / f'run{n}')[-3000:]}"
        return json.loads(result.stdout.strip().splitlines()[-1])["log_in_seconds"]

    interrupted_run(1)
    assert next_log_in(1) >= count  # one second per stale delivery (the client's own sleep)

    stale = interrupted_run(2)
    response = requests.post(f"{service.url}/drop-deliveries/", headers={"Authorization": f"Token {service.token}"})
    # Both runs' deliveries: the client never reports a result it did not expect as consumed, so the
    # first run's were sent to the second client and stayed pending, to be sent to every later one.
    assert response.json() == {"dropped": 2 * count, "success": True}
    assert next_log_in(2) < count - 3  # its own log-in only (slack for a loaded machine)
    # The tasks themselves are untouched; the stream just does not send their results again.
    assert Task.objects.filter(id__in=stale, state="succeeded").count() == count


def test_the_workers_drop_deliveries_past_the_retention(py27_client, start_web, start_worker, tmp_path,
                                                        transactional_db):
    """RICLOUD_DELIVERY_RETENTION_SECONDS, applied by the workers' maintenance loop: an interrupted
    run's deliveries are gone by themselves and cost the next client nothing."""
    from tasks_app.models import Delivery, Task
    from tasks_app.services.organisations import create_organisation
    from tests.e2e.conftest import wait_for

    from .conftest import V2Service

    retaining = start_worker(RICLOUD_DELIVERY_RETENTION_SECONDS="3", RICLOUD_REAPER_INTERVAL_SECONDS="0.5")
    web = start_web(RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS="1")
    service = V2Service(web.url, create_organisation(name="Retention")[1])
    env = service.configure(py27_client, tmp_path)
    result = py27_client.run([SCRIPTS / "interrupted.py", "gone@example.com", PASSWORD, 8], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout.strip().splitlines()[-1])
    wait_for(lambda: Task.objects.filter(id__in=ids, state="succeeded").count() == 8, timeout=60)
    wait_for(lambda: not Delivery.objects.filter(task_id__in=ids).exists(), timeout=60)
    # The next run's own deliveries must not meet a 3 s retention on a loaded machine: a worker
    # with the default one serves it.
    retaining.stop()
    start_worker()

    (tmp_path / "next").mkdir()
    result = py27_client.run([SCRIPTS / "legacy_flow.py", "next@example.com", PASSWORD, "2fa.next@example.com", TIMEOUT],
                             cwd=tmp_path / "next", env=env, timeout=TIMEOUT + 60)
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n{py27_client.log(tmp_path / 'next')[-3000:]}"
    assert json.loads(result.stdout.strip().splitlines()[-1])["log_in_seconds"] < 5  # 8 s with them

"""Drives the official ricloud 2.3.10 client's library API (Python 2.7), unmodified.

    python legacy_flow.py ACCOUNT PASSWORD TWOFA_ACCOUNT TIMEOUT

Configuration comes from ricloud.ini (RICLOUD_CONF). Uses the client's own iCloud sample
application for log-in, devices and downloads (its download callback reads `file_path`), registers
and logs in a 2FA account through the iCloud client, and prints one JSON summary line last.
Written to run under Python 2.7 (and to parse under Python 3 for the linter).
"""
from __future__ import print_function

import json
import sys
import time

from ricloud.conf import OUTPUT_DIR
from ricloud.ricloud import RiCloud
from ricloud.samples.icloud_sample import SampleICloudApplication


def wait_for_pending(api, timeout):
    deadline = time.time() + timeout
    while api.pending_tasks:
        if time.time() > deadline:
            raise SystemExit("tasks still pending after %ss: %s" % (timeout, sorted(api.pending_tasks)))
        time.sleep(0.1)


def main():
    account, password, twofa_account, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    started = time.time()
    ricloud = RiCloud()
    summary = {"retrieval_protocol": ricloud.api.retrieval_protocol, "services": sorted(ricloud.services)}

    app = SampleICloudApplication(ricloud, {"account": account, "password": password, "timeout": timeout})
    client = app.client
    app.client.register_account(account)
    app.log_in()
    summary["log_in_seconds"] = round(time.time() - started, 2)
    app.get_devices()
    app.device_id = sorted(app.devices)[0]
    summary["device_id"] = app.device_id
    summary["device_name"] = app.devices[app.device_id]["device_name"]
    summary["devices"] = sorted(app.devices)

    data_types = list(client.available_data)
    task = client.data(account=account, device=app.device_id, data=",".join(data_types))
    task.wait_for_result(timeout=timeout)
    data = json.loads(task.result)
    summary["data_types"] = sorted(data)
    summary["data_task"] = task.uuid
    with open("data.json", "w") as out:
        json.dump(data, out)

    # The sample's own selection (photos and attachments), then the WhatsApp files it leaves out.
    files = app.get_file_ids_to_download(data)
    files += [entry for entry in data.get("whatsapp_messages", []) if "file_id" in entry]
    summary["files_requested"] = len(files)
    app.download_files(files)
    wait_for_pending(ricloud.api, timeout)

    # 2FA: log-in answers 2fa-required with the trusted devices; challenge one, submit the code.
    client.register_account(twofa_account)
    first = client.login(account=twofa_account, password=password)
    summary["twofa_error"] = first.get("error")
    device = first["data"]["trustedDevices"][0]
    challenge = client.start_2fa_auth(account=twofa_account, challenge=device)
    finish = client.finish_2fa_auth(account=twofa_account, code="123456")
    summary["twofa"] = {"challenge": challenge.get("success"), "finish": finish.get("success"),
                        "finish_message": finish.get("message")}
    devices = client.devices(account=twofa_account)
    devices.wait_for_result(timeout=timeout)
    summary["twofa_devices"] = sorted(json.loads(devices.result)["devices"])

    summary["pending_after"] = sorted(ricloud.api.pending_tasks)
    summary["output_dir"] = OUTPUT_DIR
    summary["seconds"] = round(time.time() - started, 2)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()

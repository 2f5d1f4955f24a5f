"""asmaster on the one engine: subscribed accounts and devices, their log-in steps and polls.

- A subscribed account is the key's v2 account Source (tasks_app/services/accounts.py) plus an
  `Account` row with a small integer id. Its log-in, 2FA and device listing steps are engine tasks
  of the v2 iCloud handlers, created without a poll (api_version 3: they end with a task
  notification the manager request waits on, and never reach the key's stream).
- A subscribed device is polled with v2 `fetch-data` tasks (api_version 2), so their results are
  deliveries on the key's aschannel stream; the files they reference follow as `download-file`
  tasks. Both carry `stream_headers` (service, account_id, device_id, device_tag) in their
  payload, which the stream adds to the message header (asapi_app/stream.py `_header`).
- Notices about the subscription itself (logged in, 2FA required, log-in failed, a device
  subscribed, …) are `message` tasks (asmaster_app/handlers.py), delivered the same way.
- `run_due` settles finished steps, polls the devices that are due and requests their files;
  every worker runs it (asmaster_app/loop.py), the manager requests run the steps they start.
"""
import json
import logging
import os
from datetime import UTC, timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from tasks_app.choices import TASK_TERMINAL, SourceState, TaskState
from tasks_app.determinism import render_time
from tasks_app.models import Key, Result, Source, Task
from tasks_app.services import accounts
from tasks_app.services.awaiting import task_channel, wait_until
from tasks_app.services.tasks import TaskSpec, create_tasks
from workers.handlers.icloud_v2 import V2_DATA_TYPES

from .models import Account, AccountState, Device, DeviceState

__all__ = [
    "AsmasterError", "subscribe_account", "resubscribe_account", "unsubscribe_account", "perform_2fa_challenge",
    "submit_2fa_challenge", "list_devices", "subscribe_device", "unsubscribe_device", "reset_since",
    "find_account", "settle", "run_due", "render_account", "render_device", "parse_since",
]

logger = logging.getLogger(__name__)

LOG_IN, PERFORM_2FA, SUBMIT_2FA, LIST_DEVICES = "log-in", "perform-2fa-challenge", "submit-2fa-challenge", "list-devices"
FETCH_DATA, DOWNLOAD_FILE, MESSAGE = "fetch-data", "download-file", "message"


def poll_interval() -> int:
    """Seconds between two polls of a subscribed device."""
    return int(os.environ.get("RICLOUD_ASMASTER_POLL_INTERVAL_SECONDS", str(3600)))


def wait_seconds() -> float:
    """How long a manager request waits for the log-in, 2FA or listing step it started."""
    return float(os.environ.get("RICLOUD_ASMASTER_WAIT_SECONDS", "25"))


def files_per_poll() -> int:
    """The most files one poll of a device downloads (the first ones its feeds reference)."""
    return int(os.environ.get("RICLOUD_ASMASTER_FILES_PER_POLL", "5"))


class AsmasterError(Exception):
    """A refused manager request, answered in the v2 envelope. `account`: the message names it
    (a failed log-in leaves a `failed` account whose id the caller needs to resubscribe it)."""

    def __init__(self, field: str, code: str, message: str, status: int = 400, account: Account | None = None):
        if account is not None:
            message = f"{message.rstrip('.')} (account_id {account.id}, status {account.state})."
        super().__init__(message)
        self.field, self.code, self.message, self.status = field, code, message, status


# --- rendering -----------------------------------------------------------------------------------


def _iso(moment) -> str | None:
    return render_time(moment)  # EPOCH in deterministic mode (tasks_app/determinism.py)


def render_device(device: Device) -> dict:
    return {
        "device_id": device.id,
        "device_tag": device.device_tag,
        "name": device.name,
        "model": device.model,
        "status": device.state,
        "since": _iso(device.since),
        "last_poll": _iso(device.date_last_poll),
        "next_poll": _iso(device.date_next_poll) if device.state == DeviceState.SUBSCRIBED else None,
    }


def render_account(account: Account) -> dict:
    return {
        "account_id": account.id,
        "service": account.service,
        "username": account.username,
        "status": account.state,
        "error": account.error,
        "trusted_devices": [{"device_id": index, "name": name} for index, name in enumerate(account.trusted_devices)],
        "devices": [render_device(device) for device in account.devices.order_by("id")],
        "date_created": _iso(account.date_created),
    }


def parse_since(value: str):
    """An ISO 8601 datetime or date (naive means UTC); None if it is neither."""
    value = (value or "").strip()
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            moment = day and timezone.datetime(day.year, day.month, day.day)
    except ValueError:
        return None
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- engine steps --------------------------------------------------------------------------------


def _headers(account: Account, device: Device | None = None) -> dict:
    return {"service": _service_name(account), "account_id": account.id,
            "device_id": device.id if device else None, "device_tag": device.device_tag if device else None}


def _source(account: Account) -> Source:
    return Source.objects.select_related("user").get(id=account.source_id)


def notify(account: Account, code: str, message: str, device: Device | None = None, data: dict | None = None) -> None:
    """A `message` delivery about the subscription on the key's stream."""
    payload = {"code": code, "message": message, "stream_headers": _headers(account, device)}
    if data:
        payload["data"] = data
    accounts.submit_task(key=account.key, account=_source(account), action=MESSAGE, target=code, parameters=payload)


def _start_step(account: Account, action: str, options: dict | None = None, secrets: dict | None = None) -> Task:
    """Start a log-in / 2FA / listing step: an engine task of the account's source, outside polls."""
    source = _source(account)
    with transaction.atomic():
        (task,) = create_tasks([TaskSpec(type=action, payload=options or {}, secrets=secrets)], key=account.key,
                               user=source.user, source=source, api_version=3)
        fields = {"pending_task": task.id, "pending_action": action}
        if action in (LOG_IN, SUBMIT_2FA):
            fields["state"] = AccountState.PENDING if action == LOG_IN else account.state
        Account.objects.filter(id=account.id).update(**fields, date_updated=timezone.now())
    account.refresh_from_db()
    return task


def _read_document(task_id) -> dict:
    result = Result.objects.select_related("storage_config").filter(task_id=task_id).order_by("id").first()
    if result is None:
        return {}
    from workers.publishers.storage import result_storage

    return json.loads(result_storage(result).get(result.url))


def settle(account: Account) -> dict | None:
    """Apply the outcome of the account's finished step (compare-and-set on the step's task);
    returns {"error", "message", "document"} of the step, or None while it runs (or if none)."""
    if account.pending_task is None:
        return None
    task = Task.objects.filter(id=account.pending_task).values("state", "error").first()
    if task is None or task["state"] not in TASK_TERMINAL:
        return None
    action, task_id = account.pending_action, account.pending_task
    won = Account.objects.filter(id=account.id, pending_task=task_id).update(pending_task=None, pending_action="")
    if not won:
        account.refresh_from_db()
        return None
    account.pending_task, account.pending_action = None, ""
    outcome = {"error": None, "message": "", "document": {}}
    if task["state"] == TaskState.FAILED:
        outcome["error"] = task["error"] or "failed"
        outcome["message"] = FAILURES.get(outcome["error"], "The step did not complete successfully.")
        _failed(account, action, outcome)
    else:
        outcome["document"] = document = _read_document(task_id)
        outcome["message"] = document.get("message", "")
        _succeeded(account, action, document)
    account.refresh_from_db()
    return outcome


FAILURES = {
    "source-locked": "The account is locked.",
    "invalid-credentials": "The credentials were rejected.",
    "code-invalid": "The two-factor authentication code is invalid.",
    "code-required": "A two-factor authentication code is required.",
    "invalid-challenge": "Unknown trusted device.",
    "login-required": "Log in to this account first.",
}


def _set(account: Account, **fields) -> None:
    Account.objects.filter(id=account.id).update(**fields, date_updated=timezone.now())
    for name, value in fields.items():
        setattr(account, name, value)


def _failed(account: Account, action: str, outcome: dict) -> None:
    error = outcome["error"]
    if action == LOG_IN or (action == SUBMIT_2FA and error not in ("code-invalid", "code-required")):
        _set(account, state=AccountState.FAILED, error=error)
        notify(account, "login-failed", f"Log-in failed: {outcome['message']}", data={"error": error})
    elif action in (SUBMIT_2FA, PERFORM_2FA):
        _set(account, state=AccountState.TWO_FA_REQUIRED, error=error)
    else:
        _set(account, error=error)


def _succeeded(account: Account, action: str, document: dict) -> None:
    if action in (LOG_IN, SUBMIT_2FA):
        if document.get("error") == "2fa-required":
            trusted = list((document.get("data") or {}).get("trustedDevices") or [])
            _set(account, state=AccountState.TWO_FA_REQUIRED, error=None, trusted_devices=trusted)
            notify(account, "2fa-required", "Two-factor authentication is required: perform and submit a challenge.")
            return
        _set(account, state=AccountState.ACTIVE, error=None, trusted_devices=[])
        notify(account, "account-active", "The account is logged in and subscribed.")
        _start_step(account, LIST_DEVICES)  # its devices are listed next
    elif action == PERFORM_2FA:
        _set(account, error=None)
    elif action == LIST_DEVICES:
        _store_devices(account, document.get("devices") or {})
        _set(account, error=None)


def _store_devices(account: Account, devices: dict) -> None:
    """Upsert the listed devices: a device keeps its integer id for as long as the account exists."""
    for tag, info in devices.items():
        Device.objects.update_or_create(
            account=account, device_tag=tag,
            defaults={"name": info.get("device_name") or info.get("name") or "", "model": info.get("model") or ""},
        )


def run_step(account: Account, action: str, options: dict | None = None, secrets: dict | None = None,
             timeout: float | None = None) -> dict | None:
    """Start a step and wait (up to `timeout`) for it and the steps it starts; the first step's
    outcome, or None if it was still running when the wait ended (the worker loop settles it)."""
    task = _start_step(account, action, options, secrets)
    deadline = timezone.now() + timedelta(seconds=wait_seconds() if timeout is None else timeout)
    first = None
    while account.pending_task is not None:
        task_id = account.pending_task
        remaining = (deadline - timezone.now()).total_seconds()
        wait_until([task_channel(task_id)],
                   lambda task_id=task_id: Task.objects.filter(id=task_id, state__in=TASK_TERMINAL).exists(), remaining)
        outcome = settle(account)
        if outcome is None:
            break
        if first is None and task_id == task.id:
            first = outcome
        if outcome["error"]:
            break
    return first


# --- manager requests ----------------------------------------------------------------------------


MAX_ID = 2**31 - 1  # the ids are int(11) in the listener's tables (and serial here)


def _number(name: str, value: str, lowest: int = 1) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or not lowest <= number <= MAX_ID:
        raise AsmasterError(name, "invalid", f"Invalid value for parameter '{name}': {value}")
    return number


def find_account(key: Key, account_id: str) -> Account:
    number = _number("account_id", account_id)
    account = Account.objects.select_related("key").filter(key=key, id=number).first()
    if account is None:
        raise AsmasterError("account_id", "no_such_account", "No such account")
    settle(account)
    return account


def _find_device(account: Account, device_id: str) -> Device:
    device = account.devices.filter(id=_number("device_id", device_id)).first()
    if device is None:
        raise AsmasterError("device_id", "no_such_device", "No such device on this account")
    return device


def _v2_source(key: Key, source_type: str, username: str) -> Source:
    try:
        return accounts.register_account(key=key, source_type=source_type, username=username)
    except accounts.AccountExists:  # registered through the asapi already: the same account
        return (Source.objects.filter(user__key=key, user__identifier=accounts.V2_USER, type=source_type,
                                      identifier=username).exclude(state=SourceState.DEACTIVATED).get())


def _login_outcome(account: Account, outcome: dict | None) -> dict:
    if outcome and outcome["error"]:
        raise AsmasterError("__all__", outcome["error"], outcome["message"], account=account)
    return {"account_id": account.id, "account": render_account(account)}


def subscribe_account(key: Key, service, username: str, password: str) -> dict:
    source = _v2_source(key, service.source_type, username)
    with transaction.atomic():
        account, created = Account.objects.select_for_update().get_or_create(
            key=key, service=service.slug, username=username,
            defaults={"organisation_id": key.organisation_id, "source": source},
        )
        if not created and account.state != AccountState.UNSUBSCRIBED:
            raise AsmasterError("__all__", "already_subscribed", "This account is already subscribed.",
                                account=account)
        if not created:
            _set(account, source=source, state=AccountState.PENDING, error=None, trusted_devices=[])
    account.key = key
    return _login_outcome(account, run_step(account, LOG_IN, secrets={"password": password}))


def resubscribe_account(account: Account, password: str) -> dict:
    if account.pending_task is not None and account.pending_action in (LOG_IN, SUBMIT_2FA):
        raise AsmasterError("__all__", "step_running", "A log-in of this account is still running.")
    if account.state == AccountState.UNSUBSCRIBED:
        source = _v2_source(account.key, _service_source_type(account), account.username)
        _set(account, source=source)
    _set(account, error=None, trusted_devices=[])
    return _login_outcome(account, run_step(account, LOG_IN, secrets={"password": password}))


def _service_source_type(account: Account) -> str:
    from asapi_app.catalogue import find_service

    return find_service(account.service).source_type


def _service_name(account: Account) -> str:
    """The service's name (`iCloud`), as the asapi stream's headers give it."""
    from asapi_app.catalogue import find_service

    service = find_service(account.service)
    return service.name if service else account.service


def unsubscribe_account(account: Account) -> dict:
    if account.state == AccountState.UNSUBSCRIBED:
        raise AsmasterError("account_id", "not_subscribed", "This account is not subscribed.")
    with transaction.atomic():
        account.devices.filter(state=DeviceState.SUBSCRIBED).update(state=DeviceState.UNSUBSCRIBED,
                                                                    date_next_poll=None)
        _set(account, state=AccountState.UNSUBSCRIBED, pending_task=None, pending_action="", trusted_devices=[])
        notify(account, "account-unsubscribed", "The account was unsubscribed: its devices are no longer polled.")
    return {"account_id": account.id, "account": render_account(account)}


def perform_2fa_challenge(account: Account, device_id: str) -> dict:
    if account.state != AccountState.TWO_FA_REQUIRED:
        raise AsmasterError("account_id", "2fa_not_required", "This account is not waiting for a 2FA challenge.")
    try:
        challenge = account.trusted_devices[_number("device_id", device_id, lowest=0)]
    except (AsmasterError, IndexError):
        raise AsmasterError("device_id", "invalid", f"No trusted device {device_id}: see the account's trusted_devices.",
                            account=account) from None
    outcome = run_step(account, PERFORM_2FA, options={"challenge": challenge})
    if outcome and outcome["error"]:
        raise AsmasterError("__all__", outcome["error"], outcome["message"])
    return {"account_id": account.id, "message": (outcome or {}).get("message") or f"Challenge sent to {challenge}.",
            "account": render_account(account)}


def submit_2fa_challenge(account: Account, code: str) -> dict:
    if account.state != AccountState.TWO_FA_REQUIRED:
        raise AsmasterError("account_id", "2fa_not_required", "This account is not waiting for a 2FA code.")
    return _login_outcome(account, run_step(account, SUBMIT_2FA, secrets={"code": code}))


def _require_active(account: Account) -> None:
    if account.state != AccountState.ACTIVE:
        raise AsmasterError("account_id", "account_not_active",
                            f"This account is {account.state}: its devices are not available.",
                            account=account)


def list_devices(account: Account) -> dict:
    _require_active(account)
    outcome = run_step(account, LIST_DEVICES)
    if outcome and outcome["error"]:
        raise AsmasterError("__all__", outcome["error"], outcome["message"])
    return {"account_id": account.id, "devices": [render_device(d) for d in account.devices.order_by("id")]}


def subscribe_device(account: Account, device_id: str) -> dict:
    _require_active(account)
    device = _find_device(account, device_id)
    if device.state == DeviceState.SUBSCRIBED:
        raise AsmasterError("device_id", "already_subscribed", "This device is already subscribed.")
    now = timezone.now()
    Device.objects.filter(id=device.id).update(state=DeviceState.SUBSCRIBED, date_next_poll=now)
    device.refresh_from_db()
    notify(account, "device-subscribed", "The device is subscribed: its data follows on this stream.", device)
    poll_device(device, now=now)  # the first poll starts at once
    device.refresh_from_db()
    return {"account_id": account.id, "device": render_device(device)}


def unsubscribe_device(account: Account, device_id: str) -> dict:
    device = _find_device(account, device_id)
    if device.state != DeviceState.SUBSCRIBED:
        raise AsmasterError("device_id", "not_subscribed", "This device is not subscribed.")
    Device.objects.filter(id=device.id).update(state=DeviceState.UNSUBSCRIBED, date_next_poll=None)
    device.refresh_from_db()
    notify(account, "device-unsubscribed", "The device is no longer polled.", device)
    return {"account_id": account.id, "device": render_device(device)}


def reset_since(account: Account, since) -> dict:
    """Every subscribed device of the account fetches data since `since` on its next poll, now."""
    now = timezone.now()
    account.devices.filter(state=DeviceState.SUBSCRIBED).update(since=since, date_next_poll=now)
    notify(account, "subscription-since-reset", f"The next poll fetches data since {_iso(since)}.")
    if account.state == AccountState.ACTIVE:
        for device in account.devices.filter(state=DeviceState.SUBSCRIBED):
            poll_device(device, now=now)
    return {"account_id": account.id, "account": render_account(account)}


# --- polling -------------------------------------------------------------------------------------


def poll_device(device: Device, *, now=None) -> Task | None:
    """One `fetch-data` task of every data feed for a due device (compare-and-set on its clock);
    the next one fetches what arrived since this one."""
    now = now or timezone.now()
    with transaction.atomic():
        won = Device.objects.filter(id=device.id, state=DeviceState.SUBSCRIBED, date_next_poll=device.date_next_poll,
                                    account__state=AccountState.ACTIVE).update(
            date_next_poll=now + timedelta(seconds=poll_interval()), date_last_poll=now, since=now,
            files_requested=False)
        if not won:
            return None
        account = Account.objects.select_related("key").get(id=device.account_id)
        parameters = {"data": list(V2_DATA_TYPES), "device": device.device_tag,
                      "stream_headers": _headers(account, device)}
        if device.since:
            parameters["since"] = device.since.isoformat()
        task = accounts.submit_task(key=account.key, account=_source(account), action=FETCH_DATA,
                                    target=",".join(V2_DATA_TYPES), parameters=parameters)
        Device.objects.filter(id=device.id).update(last_task=task.id)
    return task


def file_ids(document: dict) -> list[str]:
    """The file ids a v2 fetch-data document references, in feed order."""
    ids = []
    for entries in document.values():
        if isinstance(entries, list):
            ids.extend(entry["file_id"] for entry in entries if isinstance(entry, dict) and entry.get("file_id"))
    return list(dict.fromkeys(ids))


def request_files(device: Device) -> list[Task]:
    """After a device's poll succeeded: `download-file` tasks for the files its feeds reference."""
    state = Task.objects.filter(id=device.last_task).values_list("state", flat=True).first()
    if state not in TASK_TERMINAL:
        return []
    if not Device.objects.filter(id=device.id, files_requested=False, last_task=device.last_task).update(
            files_requested=True):
        return []
    if state != TaskState.SUCCEEDED:
        return []
    try:
        document = _read_document(device.last_task)
    except Exception:  # noqa: BLE001 - an unreadable result: no files for this poll
        logger.warning("asmaster device %s: poll %s unreadable", device.id, device.last_task, exc_info=True)
        return []
    if document.get("success") is False:
        return []
    account = Account.objects.select_related("key").get(id=device.account_id)
    source = _source(account)
    headers = _headers(account, device)
    return [
        accounts.submit_task(key=account.key, account=source, action=DOWNLOAD_FILE, target=file_id,
                             parameters={"file": file_id, "device": device.device_tag, "stream_headers": headers})
        for file_id in file_ids(document)[:files_per_poll()]
    ]


def run_due(*, now=None, limit: int = 200) -> dict:
    """One pass: settle finished steps, poll due devices, request the files of finished polls."""
    now = now or timezone.now()
    settled = polled = files = 0
    for account in Account.objects.select_related("key").filter(pending_task__isnull=False)[:limit]:
        if settle(account) is not None:
            settled += 1
    for device in Device.objects.filter(state=DeviceState.SUBSCRIBED, date_next_poll__lte=now,
                                        account__state=AccountState.ACTIVE)[:limit]:
        if poll_device(device, now=now):
            polled += 1
    for device in Device.objects.filter(files_requested=False, last_task__isnull=False)[:limit]:
        files += len(request_files(device))
    return {"settled": settled, "polled": polled, "files": files}

"""The v2 (asapi) iCloud actions on the simulated iCloud service, payloads shaped as API.md §6.4.

Same deterministic generator as the v3 mock. `log-in` checks the password (and the `2fa…` /
`locked…` scenarios); the account must be logged in before `list-devices`, `fetch-data` and
`download-file`. v2 data type names map onto the mock's data types.
"""
import hashlib
import json
import re
import uuid

from . import mockdata
from .base import NEVER_WAITS, HandlerError, Output, TaskContext, register

__all__ = ["V2_DATA_TYPES", "V2_ACTIONS", "ICLOUD"]

ICLOUD = "icloud.account"

# v2 name → mock data type (`permissions.data` of "Fetch Data").
V2_DATA_TYPES: dict[str, str] = {
    "sms": "messages.sms",
    "messages": "ios_messages.messages",
    "whatsapp_messages": "whatsapp.messages",
    "photos": "photos",
    "call_history": "call_history.calls",
    "contacts": "contacts.contacts",
    "notes": "notes.notes",
    "web_browser_history": "safari.history",
}
V2_ACTIONS = ("log-in", "perform-2fa-challenge", "submit-2fa-challenge", "list-devices", "fetch-data", "download-file")


def _json(ctx: TaskContext, payload: dict) -> list[Output]:
    return [Output(ctx.type, json.dumps(payload, sort_keys=True).encode("utf-8"), "json")]


def _logged_in(ctx: TaskContext) -> None:
    if ctx.source_state != "active":
        raise HandlerError("login-required", "Log in to this account first (action log-in).")


def _devices(ctx: TaskContext) -> list[dict]:
    return mockdata.info_document(ctx.source_identifier, "account.devices")["data"]


def _trusted_devices(ctx: TaskContext) -> list[str]:
    return [f"{device['name']} (****{device['serial'][-4:]})" for device in _devices(ctx)]


def _secret(ctx: TaskContext, name: str) -> str:
    """A secret parameter, from the task's sealed secrets (never from its plain options)."""
    value = (ctx.credentials or {}).get(name)
    if value is None:
        raise HandlerError("credentials-unavailable",
                           f"The {name} of this task is no longer stored; submit the action again.")
    return value


def _logged_in_payload(ctx: TaskContext, credentials: dict) -> list[Output]:
    ctx.source_info = mockdata.authenticate(ctx.source_identifier, credentials)
    ctx.new_source_state = "active"
    token = mockdata.info_document(ctx.source_identifier, "account.info").get("dsid", "")
    return _json(ctx, {"message": "Log-in successful", "auth_token": f"mme-{token}", "success": True})


@register(ICLOUD, "log-in", waits=NEVER_WAITS)
def log_in(ctx: TaskContext) -> list[Output]:
    try:
        return _logged_in_payload(ctx, {"password": _secret(ctx, "password")})
    except mockdata.MockError as exc:
        if exc.code != "code-required":
            raise HandlerError(exc.code, exc.message) from None
    return _json(
        ctx,
        {
            "error": "2fa-required",
            "message": "This account has two-factor authentication enabled; perform and submit a 2FA challenge.",
            "data": {"trustedDevices": _trusted_devices(ctx)},
            "success": False,
        },
    )


@register(ICLOUD, "perform-2fa-challenge", waits=NEVER_WAITS)
def perform_2fa_challenge(ctx: TaskContext) -> list[Output]:
    trusted = _trusted_devices(ctx)
    challenge = ctx.options.get("challenge") or trusted[0]
    if challenge not in trusted:
        raise HandlerError("invalid-challenge", f"Unknown trusted device {challenge!r}.")
    return _json(ctx, {"message": f"Challenge sent to {challenge}.", "success": True})


@register(ICLOUD, "submit-2fa-challenge", waits=NEVER_WAITS)
def submit_2fa_challenge(ctx: TaskContext) -> list[Output]:
    try:
        return _logged_in_payload(ctx, {"password": "", "code": _secret(ctx, "code")})
    except mockdata.MockError as exc:
        raise HandlerError(exc.code, exc.message) from None


@register(ICLOUD, "list-devices", waits=NEVER_WAITS)
def list_devices(ctx: TaskContext) -> list[Output]:
    _logged_in(ctx)
    devices = {
        device["id"]: {
            "device_name": device["name"],
            "name": device["name"],
            "colour": device["colour"],
            "ios_version": device["os_version"],
            "model": device["model_id"],
            "device_tag": device["id"],
            "serial": device["serial"],
            "latest-backup": device["last_backup"],
        }
        for device in _devices(ctx)
    }
    return _json(ctx, {"devices": devices})


def _attachment_path(attachment: dict) -> str:
    """Where iOS keeps a Messages attachment: `Library/SMS/Attachments/<xx>/<nn>/<GUID>/<filename>`
    (deterministic from the file id, so every attachment has a directory of its own)."""
    digest = hashlib.sha256(attachment["file_id"].encode("utf-8")).hexdigest()
    guid = str(uuid.UUID(digest[:32])).upper()
    return f"Library/SMS/Attachments/{digest[32:34]}/{int(digest[34:36], 16) % 16:02d}/{guid}/{attachment['filename']}"


def _v2_entry(entry: dict) -> dict:
    """Add the v2 file reference keys the 2.x samples read: `file_id`, `file_path`, `filename` on
    entries with a file (photos, WhatsApp) and `file_path` on every attachment (API.md §6.4)."""
    file = (entry.get("files") or [None])[0] or entry.get("file")
    if file:
        filename = file.get("filename") or ".".join(part for part in (file.get("name"), file.get("extension")) if part)
        path = file.get("filepath") or "/".join(part for part in ("Message/Media", entry.get("chat_id"), filename) if part)
        entry = {**entry, "file_id": file["id"], "file_path": path, "filename": filename}
    if entry.get("attachments"):
        entry = {**entry, "attachments": [{**attachment, "file_path": attachment.get("file_path") or _attachment_path(attachment)}
                                          for attachment in entry["attachments"]]}
    return entry


@register(ICLOUD, "fetch-data", waits=NEVER_WAITS)
def fetch_data(ctx: TaskContext) -> list[Output]:
    _logged_in(ctx)
    device = ctx.options.get("device")
    if device and device not in {d["id"] for d in _devices(ctx)}:
        raise HandlerError("invalid-device", f"No device {device!r} on this account.")
    feeds = {}
    for name in ctx.options.get("data", []):
        try:
            document = mockdata.data_document(ctx.source_identifier, V2_DATA_TYPES[name], since=ctx.options.get("since"))
        except mockdata.MockError as exc:
            raise HandlerError(exc.code, exc.message) from None
        feeds[name] = [_v2_entry(entry) for entry in document["data"]]
    return _json(ctx, feeds)


@register(ICLOUD, "download-file", waits=NEVER_WAITS)
def download_file(ctx: TaskContext) -> list[Output]:
    _logged_in(ctx)
    try:
        content, extension = mockdata.file_content(ctx.source_identifier, ctx.options["file"])
        name = mockdata.file_name(ctx.source_identifier, ctx.options["file"])
    except mockdata.MockError as exc:
        raise HandlerError(exc.code, exc.message) from None
    # The result's identifier is the file's own name: the stream header's `filename`, which the 2.x
    # FileDownloadHandler joins to `files/`: a bare, safe name (no directory, no leading dot).
    return [Output(safe_filename(name, ctx.options["file"], extension), content, extension)]


def safe_filename(name: str, file_id: str, extension: str) -> str:
    name = re.sub(r"[^\w .()+,@=-]", "_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")[:200]
    return name or f"{file_id}.{extension}"

"""Webhook transport: SSRF checks, `Ricloud-Signature`, one HTTP POST per attempt."""
import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings

__all__ = ["sign", "signature_header", "refusal", "post", "AttemptOutcome", "delivery_url"]

TIMEOUT_SECONDS = 10


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, "<t>.<body>")) — what `ricloud.signing.Signature` verifies."""
    message = str(timestamp).encode("ascii") + b"." + body
    return base64.b64encode(hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()).decode("ascii")


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},s={sign(secret, timestamp, body)}"


def refusal(url: str) -> str | None:
    """Why a target is refused (private, loopback, link-local, … addresses), or None if allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "The URL must be http(s) with a host."
    if settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError):
        return f"The host {parts.hostname} does not resolve."
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            return f"The host {parts.hostname} resolves to a non-public address ({address})."
    return None


def delivery_url(config_url: str, event_id) -> str:
    """`<url>/<event id>` joined with exactly one slash."""
    return f"{config_url.rstrip('/')}/{event_id}"


@dataclass
class AttemptOutcome:
    url: str
    status_code: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def permanent(self) -> bool:
        """A 4xx (or a refused target) is not retried."""
        if self.status_code is None:
            return self.error.startswith("refused")
        return 400 <= self.status_code < 500


def post(*, config_url: str, secret: str, event_id, body: bytes) -> AttemptOutcome:
    url = delivery_url(config_url, event_id)
    reason = refusal(url)
    if reason:
        return AttemptOutcome(url, None, f"refused: {reason}", 0)
    headers = {"Content-Type": "application/json", "Ricloud-Signature": signature_header(secret, body),
               "User-Agent": "ricloud-server-webhooks"}
    started = time.monotonic()
    try:
        response = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_SECONDS, allow_redirects=False)
        status, error = response.status_code, "" if response.ok else response.text[:500]
    except requests.RequestException as exc:
        status, error = None, f"{type(exc).__name__}: {exc}"[:500]
    return AttemptOutcome(url, status, error, int((time.monotonic() - started) * 1000))

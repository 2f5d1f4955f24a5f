"""Webhook transport: `Ricloud-Signature` and one HTTP POST per attempt, to a checked address.

The URL is parsed and its host resolved once (`tasks_app.webhook_targets`); the request then
goes to one of the addresses that were checked, never to a name resolved again, with the parsed
host as the Host header and, over TLS, as the server name (SNI) and the name the certificate
must match. A refused target is never connected to.
"""
import base64
import hashlib
import hmac
import time

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from ricloud_server.metrics import counted_attempt
from tasks_app.services.webhooks import AttemptOutcome
from tasks_app.webhook_targets import Refused, Target, Unresolvable, delivery_url, parse, resolve

__all__ = ["sign", "signature_header", "post", "AttemptOutcome", "delivery_url"]

# Bounds that make an attempt end within about 50 s: a connect to each of at most
# MAX_ADDRESSES addresses (10 s), the response headers (25 s in all from the connect that
# worked), one read of an error body (15 s). That is inside the first attempt's Celery time
# limit (60 s) and the claim's lease (RICLOUD_WEBHOOK_ATTEMPT_LEASE_SECONDS, 120 s).
CONNECT_TIMEOUT_SECONDS = 10
RESPONSE_TIMEOUT_SECONDS = 15
MAX_ADDRESSES = 2
ERROR_BYTES = 500
VERIFY = True  # or a CA bundle path (tests)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, "<t>.<body>")) — what `ricloud.signing.Signature` verifies."""
    message = str(timestamp).encode("ascii") + b"." + body
    return base64.b64encode(hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()).decode("ascii")


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},s={sign(secret, timestamp, body)}"


class _PinnedAdapter(HTTPAdapter):
    """Requests' adapter for a URL whose host is a checked IP address: TLS names the original
    host (server name and certificate match) instead of that address."""

    def __init__(self, server_hostname: str | None):
        self.server_hostname = server_hostname
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https" and self.server_hostname:
            pool_kwargs["server_hostname"] = self.server_hostname
            pool_kwargs["assert_hostname"] = self.server_hostname
        return host_params, pool_kwargs


def _connect_failed(exc: requests.ConnectionError) -> bool:
    """Nothing was sent: the TCP connection itself failed (the next address may be tried)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectTimeout) or isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _send(target: Target, addresses: list, body: bytes, headers: dict) -> tuple[int | None, str]:
    timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=RESPONSE_TIMEOUT_SECONDS,
                              total=CONNECT_TIMEOUT_SECONDS + RESPONSE_TIMEOUT_SECONDS)
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment, no ~/.netrc credentials
        adapter = _PinnedAdapter(None if target.address is not None else target.host)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        addresses = addresses[:MAX_ADDRESSES]
        for index, address in enumerate(addresses):
            try:
                response = session.post(target.url_at(address), data=body, headers=headers, timeout=timeout,
                                        allow_redirects=False, stream=True, verify=VERIFY)
            except requests.ConnectionError as exc:
                if _connect_failed(exc) and index + 1 < len(addresses):
                    continue
                return None, f"{type(exc).__name__}: {exc}"[:ERROR_BYTES]
            except requests.RequestException as exc:
                return None, f"{type(exc).__name__}: {exc}"[:ERROR_BYTES]
            with response:
                if response.ok:
                    return response.status_code, ""
                try:
                    text = response.raw.read1(ERROR_BYTES, decode_content=False)
                except Exception:  # noqa: BLE001 - the status is the outcome; the body is a courtesy
                    text = b""
                return response.status_code, text.decode("utf-8", "replace")[:ERROR_BYTES]
    return None, "no address"  # unreachable: resolve() returns at least one


@counted_attempt  # ricloud_webhook_attempts_total by outcome
def post(*, config_url: str, secret: str, event_id, body: bytes) -> AttemptOutcome:
    """One attempt. A refused target (`refused: …`) is never connected to; a name that does not
    resolve now is an ordinary (retried) failure."""
    url = delivery_url(config_url, event_id)
    started = time.monotonic()
    try:
        target = parse(url)
        addresses = resolve(target, allow_private=settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE)
    except Unresolvable as exc:
        return AttemptOutcome(url, None, str(exc), int((time.monotonic() - started) * 1000))
    except Refused as exc:
        return AttemptOutcome(url, None, f"refused: {exc}", 0)
    headers = {"Host": target.netloc, "Content-Type": "application/json",
               "Ricloud-Signature": signature_header(secret, body), "User-Agent": "ricloud-server-webhooks"}
    status, error = _send(target, addresses, body, headers)
    return AttemptOutcome(url, status, error, int((time.monotonic() - started) * 1000))

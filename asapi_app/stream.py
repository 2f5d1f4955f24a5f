"""aschannel framing (API.md §6.5) and the stream of a key's pending deliveries.

Each message is `<len>\\r\\n<header json>\\r\\n<len>\\r\\n<payload>\\r\\n`, where each length counts
its field's trailing CRLF; a bare CRLF is a heartbeat. Payloads above the chunk size go out as
chunks (`chunk`, `total_chunks`, `chunk_size`), the last one last. Deliveries stay pending until
the client reports them consumed, so a reconnecting client receives them again. While idle, the
stream waits on Redis pub/sub: no database polling.

Outages: the stream subscribes and reads its first batch before the response starts, so Redis or
Postgres being down is a 503 with Retry-After in the v2 envelope (OutageMiddleware), not an error
inside a started response. Once it has started, an outage ends the stream cleanly (the last chunk
is written, the client sees the end of the stream and reconnects; nothing is lost, deliveries stay
pending until consumed).
"""
import json
import logging
import math

from django import db
from django.conf import settings
from django.db import close_old_connections

from tasks_app.choices import DeliveryState
from tasks_app.middleware import OUTAGES, drop_broken_connections
from tasks_app.models import Delivery
from tasks_app.notify import get_redis, stream_channel
from workers.publishers.storage import result_storage

from .catalogue import SERVICES

__all__ = ["frame", "message_frames", "aschannel", "scan", "GREETING", "BATCH"]

logger = logging.getLogger(__name__)

GREETING = {"message": "Message streaming has begun.", "code": "streaming-started"}
BATCH = 50


def frame(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header).encode("utf-8")
    return b"%d\r\n%s\r\n%d\r\n%s\r\n" % (len(head) + 2, head, len(payload) + 2, payload)


def message_frames(header: dict, payload: bytes, chunk_size: int):
    """One frame, or `total_chunks` frames in order when the payload exceeds `chunk_size`."""
    if len(payload) <= chunk_size:
        yield frame(header, payload)
        return
    total = math.ceil(len(payload) / chunk_size)
    for index in range(total):
        part = payload[index * chunk_size:(index + 1) * chunk_size]
        yield frame({**header, "chunk": index + 1, "total_chunks": total, "chunk_size": chunk_size}, part)


def _header(delivery: Delivery) -> dict:
    """`type` and `task_id`; `service` (the v2 service name, which the 2.x listen mode requires) and
    `device_tag` (the task's `device`, when it had one); for `download-file`, `file_id` and
    `filename`: the file's own name (the result's identifier), `<file id>.<ext>` for older results."""
    task = delivery.task
    header = {"type": task.type, "task_id": str(delivery.task_id)}
    service = _SERVICE_NAMES.get(task.source_type or "")
    if service:
        header["service"] = service
    device = (task.payload or {}).get("device") if isinstance(task.payload, dict) else None
    if device:
        header["device_tag"] = device
    if task.type == "download-file":
        header["file_id"] = task.target
        identifier = delivery.result.identifier
        header["filename"] = identifier if identifier and identifier != task.type else f"{task.target}.{delivery.result.type}"
    return header


_SERVICE_NAMES = {service.source_type: service.name for service in SERVICES}


def aschannel(key):
    """Open the key's stream: subscribe and read the first pending deliveries now (an outage
    raises here, before any response exists), then return the iterator of its frames: the
    greeting, every pending delivery, then new ones as they are published, with heartbeats."""
    stream = key.stream
    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(stream_channel(stream))  # before the first query: no wake-up can slip by
        sent = set()  # the ids this connection has sent (see scan)
        batch = _scan(stream, sent)
    except BaseException:
        pubsub.close()
        raise
    return _frames(stream, pubsub, sent, batch)


def scan(stream: str, sent: set) -> list[tuple[int, list[bytes]]]:
    """The frames of up to BATCH pending deliveries of `stream` not in `sent`, in id order; adds
    them to `sent` and drops from it the ids no longer pending (consumed).

    Every scan reads the ids of *every* pending delivery of the stream, so a delivery whose
    transaction commits after a higher id was already sent goes out on the next wake-up; a cursor
    (`id > last sent`) would pass it over until the client reconnects, and the 2.x client only
    reconnects after an error. `sent` stays as small as the client's unconsumed backlog."""
    pending = list(Delivery.objects.filter(stream=stream, state=DeliveryState.PENDING)
                   .order_by("id").values_list("id", flat=True))
    sent.intersection_update(pending)
    fresh = [delivery_id for delivery_id in pending if delivery_id not in sent][:BATCH]
    out = []
    if fresh:
        chunk_size = settings.RICLOUD_ASCHANNEL_CHUNK_SIZE
        for delivery in (Delivery.objects.filter(id__in=fresh).select_related("task", "result__storage_config")
                         .order_by("id")):
            sent.add(delivery.id)
            try:
                payload = result_storage(delivery.result).get(delivery.result.url)
            except Exception:  # noqa: BLE001 - one unreadable object must not end the stream
                logger.exception("delivery %s: result %s is unreadable", delivery.id, delivery.result_id)
                continue
            header = {**_header(delivery), **_stream_headers(delivery)}
            out.append((delivery.id, list(message_frames(header, payload, chunk_size))))
    return out


def _stream_headers(delivery: Delivery) -> dict:
    """Header fields a task asked for: asmaster's deliveries name their account and device
    (`service`, `account_id`, `device_id`, `device_tag`; asmaster_app/services.py)."""
    payload = delivery.task.payload
    extra = payload.get("stream_headers") if isinstance(payload, dict) else None
    return extra if isinstance(extra, dict) else {}


def _scan(stream: str, sent: set):
    try:
        return scan(stream, sent)
    finally:
        close_old_connections()


def _frames(stream: str, pubsub, sent: set, batch):
    heartbeat = settings.RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS
    try:
        yield frame({"type": "system"}, json.dumps(GREETING).encode("utf-8"))
        while True:
            for _, frames in batch:
                yield from frames
            if len(batch) < BATCH:
                if pubsub.get_message(timeout=heartbeat) is None:
                    yield b"\r\n"
                else:
                    while pubsub.get_message(timeout=0):  # drain: one query serves many wake-ups
                        pass
            batch = _scan(stream, sent)
    except OUTAGES as exc:
        # The response has started: end it (the client reconnects and is sent what is pending).
        logger.warning("aschannel %s ended: %s (%s)", stream, exc.__class__.__name__, exc)
        if isinstance(exc, db.Error):
            drop_broken_connections()
    finally:
        pubsub.close()

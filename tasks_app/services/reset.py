"""The test-backend reset (`POST /_ricloud/reset`, `manage.py reset`; docs/DECISIONS.md 110-113).

Clears every row but the organisations, their keys and the permissions of both, restarting the
integer ids; the queued Celery messages of the project's queues; the Redis keys the server owns
(rate-limit counters, the deterministic id counter; the auth cache generation is bumped, not
removed, so no process can meet a generation it cached under before); and the result files of
the server's own `local://` store. One transaction; on Postgres big tables are truncated, small ones emptied (see _clear_database).

A task a worker is running meanwhile finds no row at its next step: its transitions and lease
renewals update nothing, so it ends as `lost` and writes nothing (results are inserted only by the
transition that ends a task; files it stored meanwhile are left behind).
"""
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import redis
from django.apps import apps
from django.conf import settings
from django.db import connection, transaction

from .. import authcache, determinism
from ..models import Key, Organisation, Permissions, StorageConfig, Task, User, WebhookConfig
from ..notify import get_redis
from .dispatch import TASKS_QUEUE

__all__ = ["reset_data", "QUEUES"]

APPS = ("tasks_app", "asapi_app", "asmaster_app", "workers")
KEPT = (Organisation, Key, Permissions)
# Referenced by kept tables (a key's configs, a permission's user), so TRUNCATE may not name them:
# their rows are deleted and their ids restarted.
DELETED = (User, WebhookConfig, StorageConfig)
QUEUES = (TASKS_QUEUE, "webhooks")
# kombu's Redis transport: priority sub-queues of each queue, and the reserved (unacked) messages.
PRIORITY_SEPARATOR = "\x06\x16"
BROKER_KEYS = ("unacked", "unacked_index")
TRUNCATE_FROM = 10_000  # rows: a table with more is truncated rather than emptied row by row


def _tables() -> tuple[list[str], list[str]]:
    """(tables to TRUNCATE, tables to DELETE from), every data table of the project's apps."""
    truncated = []
    for model in apps.get_models(include_auto_created=True):
        if model._meta.app_label in APPS and not model._meta.proxy and model not in KEPT + DELETED:
            truncated.append(model._meta.db_table)
    return sorted(truncated), [model._meta.db_table for model in DELETED]


def _clear_database() -> dict:
    truncated, deleted = _tables()
    tables = truncated + deleted
    q = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL lock_timeout = '10s'")
        cursor.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {q(table)})" for table in tables))
        counts = dict(zip(tables, cursor.fetchone(), strict=True))
        # Configs and users go: nothing kept may point at them.
        cursor.execute(f"UPDATE {q(Organisation._meta.db_table)} SET storage_config_default_id = NULL,"
                       " webhook_config_default_id = NULL WHERE storage_config_default_id IS NOT NULL"
                       " OR webhook_config_default_id IS NOT NULL")
        cursor.execute(f"UPDATE {q(Key._meta.db_table)} SET storage_config_id = NULL, webhook_config_id = NULL"
                       " WHERE storage_config_id IS NOT NULL OR webhook_config_id IS NOT NULL")
        cursor.execute(f"DELETE FROM {q(Permissions._meta.db_table)} WHERE user_id IS NOT NULL")
        if connection.vendor == "postgresql":
            # TRUNCATE costs ~10-20 ms a table (new files for it and its indexes) whatever its size, a
            # DELETE of a few thousand rows less: big tables are truncated, the others emptied.
            big = [table for table in truncated if counts[table] > TRUNCATE_FROM]
            if big:
                cursor.execute(f"TRUNCATE {', '.join(q(t) for t in big)}")
            # Tasks first: deleting them writes count deltas (a trigger), deleted after them.
            for table in sorted(set(tables) - set(big), key=lambda t: t != Task._meta.db_table):
                cursor.execute(f"DELETE FROM {q(table)}")
            cursor.execute("SELECT " + ", ".join(f"setval(pg_get_serial_sequence('{table}', 'id'), 1, false)"
                                                 for table in tables))
            determinism.sync_database(cursor)
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {q(table)}")
            cursor.execute("DELETE FROM sqlite_sequence WHERE name IN (" + ", ".join(["%s"] * len(tables)) + ")",
                           tables)
    return counts


def _clear_redis() -> dict:
    """Queued messages of the project's queues (broker) and the server's own keys (REDIS_URL)."""
    from .dispatch import broker_client

    outcome = {"queued_messages": 0, "redis_keys": 0}
    try:
        broker = broker_client()
        if broker is not None:
            queues = [f"{queue}{PRIORITY_SEPARATOR}{priority}" for queue in QUEUES for priority in range(1, 10)]
            queues = list(QUEUES) + queues
            pipe = broker.pipeline(transaction=True)
            for queue in queues:
                pipe.llen(queue)
            pipe.delete(*queues, *BROKER_KEYS)
            outcome["queued_messages"] = sum(pipe.execute()[:-1])
        client = get_redis()
        names = [name for name in client.scan_iter(match="ricloud:*", count=1000)
                 if name != authcache.GENERATION_KEY.encode()]
        if names:
            outcome["redis_keys"] = client.delete(*names)
    except redis.RedisError as exc:
        outcome["redis_error"] = type(exc).__name__
    authcache.bump()  # keys' config references changed; every process forgets what it cached
    return outcome


def _clear_results() -> bool:
    """The result files of the server's own local store: moved aside at once, deleted in the
    background (a few thousand files take longer than the rest of the reset)."""
    url = settings.RICLOUD_STORAGE_URL
    if not url.startswith("local://"):
        return False
    parts = urlsplit(url)
    root = Path(parts.netloc + parts.path if parts.netloc else parts.path)
    if not root.is_dir():
        return False
    trash = root.with_name(f".{root.name}-reset-{uuid.uuid4().hex}")
    try:
        os.rename(root, trash)
    except OSError:
        return False
    root.mkdir(parents=True, exist_ok=True)
    thread = threading.Thread(target=shutil.rmtree, args=(trash,), kwargs={"ignore_errors": True},
                              name="ricloud-reset-rmtree")
    thread.start()  # not a daemon: `manage.py reset` waits for it before it exits
    return True


def reset_data() -> dict:
    """Clear everything but organisations and keys (see the module docstring); what was cleared."""
    started = time.perf_counter()
    rows = _clear_database()
    outcome = {"rows": rows, **_clear_redis(), "result_files": _clear_results()}
    kept = {"organisations": Organisation.objects.count(), "keys": Key.objects.count()}
    return {"cleared": outcome, "kept": kept, "deterministic": determinism.ON,
            "seconds": round(time.perf_counter() - started, 4)}

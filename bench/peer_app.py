"""The peer Celery app of `bench/load.py`: one no-op task on Redis, with a Redis result backend.

Used three ways by load.py: `celery -A peer_app worker` (the peer's worker), `celery -A peer_app
flower` (Flower's async-apply / result long-poll API), and imported in-process for plain
`noop.delay()`. Broker and backend are `PEER_BROKER_URL` (default redis://127.0.0.1:6379/11, a
database number of its own on the project's Redis server). Stock Celery settings otherwise
(prefork, prefetch multiplier 4, early acks): what a plain Celery deployment gets.
"""
import os

from celery import Celery

BROKER_URL = os.environ.get("PEER_BROKER_URL", "redis://127.0.0.1:6379/11")
NOOP = "peer.noop"

app = Celery("peer_app", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    task_default_queue="peer",
)


@app.task(name=NOOP)
def noop(*args, **kwargs):
    return None

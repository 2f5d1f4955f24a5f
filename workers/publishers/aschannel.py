"""aschannel publishing: one Delivery row per v2 result and stream, kept until consumed."""
from tasks_app.models import Delivery, Key, Result, Task
from tasks_app.notify import notify_on_commit, stream_channel

__all__ = ["deliver"]


def deliver(task: Task, result: Result) -> None:
    """Queue the result on the submitting key's stream and wake its listener (idempotent)."""
    stream = Key(id=task.key_id).stream
    _, created = Delivery.objects.get_or_create(
        result=result, defaults={"organisation_id": task.organisation_id, "stream": stream, "task": task}
    )
    if created:
        notify_on_commit(stream_channel(stream))

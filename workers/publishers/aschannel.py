"""aschannel publishing: one Delivery row per v2 result and stream, kept until consumed."""
from tasks_app.models import Delivery, Key, Task
from tasks_app.notify import notify_on_commit, stream_channel
from tasks_app.services.rows import insert_rows

__all__ = ["deliver_all"]


def deliver_all(task: Task, results: list) -> None:
    """Queue newly written results on the submitting key's stream (one INSERT) and wake it."""
    stream = Key(id=task.key_id).stream
    insert_rows(
        Delivery(organisation_id=task.organisation_id, stream=stream, task_id=task.id, result_id=result.id)
        for result in results
    )
    notify_on_commit(stream_channel(stream))

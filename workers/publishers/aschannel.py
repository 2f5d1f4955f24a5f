"""aschannel publishing: one Delivery row per v2 result and stream, kept until consumed."""
from tasks_app.models import Delivery, Key, Task
from tasks_app.notify import notify_on_commit, stream_channel

__all__ = ["deliveries"]


def deliveries(task: Task, results: list) -> list[Delivery]:
    """Unsaved Delivery rows queuing new results on the submitting key's stream; its listener is
    woken once they commit."""
    stream = Key(id=task.key_id).stream
    notify_on_commit(stream_channel(stream))
    return [Delivery(organisation_id=task.organisation_id, stream=stream, task_id=task.id, result_id=result.id)
            for result in results]

"""aschannel publishing: one Delivery row per v2 result and stream, kept until consumed."""
from tasks_app.models import Delivery, Task, key_stream
from tasks_app.notify import notify_on_commit, stream_channel

__all__ = ["deliveries", "wake_stream"]


def deliveries(task: Task, results: list) -> list[Delivery]:
    """Unsaved Delivery rows queuing new results on the submitting key's stream."""
    stream = key_stream(task.key_id)
    return [Delivery(organisation_id=task.organisation_id, stream=stream, task_id=task.id, result_id=result.id)
            for result in results]


def wake_stream(task: Task) -> None:
    """Inside the transaction that writes the task's deliveries: wake its stream's listener once
    they commit."""
    notify_on_commit(stream_channel(key_stream(task.key_id)))

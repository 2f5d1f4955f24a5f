"""`Task.create` (`POST /tasks`): one info, data or file task on a session, made by the engine's
one path for such tasks, a poll (of that one item): the same validation against the source's
catalogue, scopes, session lock, blocking on a pending `session.init`, events and enqueue
(docs/DECISIONS.md 135)."""
from ..errors import APIError
from ..models import Key, Session, Source, Task
from .polls import create_poll

__all__ = ["create_task"]

ITEMS = {"info": "info_types", "data": "data_types", "file": "files"}


def create_task(*, key: Key, session: Session, source: Source | None, type: str, target: str,
                options: dict) -> Task:
    """`options` are the poll payload's shared controls (`since`, `until`, `mock`)."""
    try:
        poll = create_poll(key=key, session=session, source=source, payload={ITEMS[type]: [target], **options})
    except APIError as error:
        # The catalogue's verdict on the item names the field the client sent, `target`.
        if error.params and ITEMS[type] in error.params.get("payload", {}):
            error.params = {"target": error.params["payload"][ITEMS[type]]}
        raise
    (task,) = poll.created_tasks
    return task

"""The one table that renders engine state as v2 task-status objects (API.md §6.3)."""
import functools
import json

from tasks_app.choices import TaskState

__all__ = ["STATUS", "render_status", "status_json", "NOT_FOUND", "NOT_FOUND_JSON", "ENDPOINT_MARK", "FAILED_MESSAGE"]

FAILED_MESSAGE = "Task did not complete successfully."
NOT_FOUND = {"success": False, "error": "No task with this ID was found."}

# (task state, has a published result) → (status string, per-task success)
STATUS: dict[tuple[str, bool], tuple[str, bool]] = {
    (TaskState.PENDING, False): ("Pending", False),
    (TaskState.SUSPENDED, False): ("In progress", False),
    (TaskState.PROCESSING, False): ("In progress", False),
    (TaskState.PROCESSING, True): ("Publish ongoing, with result available", False),
    (TaskState.SUCCEEDED, False): ("Work complete", False),
    (TaskState.SUCCEEDED, True): ("Publish complete", True),
    (TaskState.FAILED, False): (FAILED_MESSAGE, False),
    (TaskState.FAILED, True): ("Publish failed", False),
}
_TERMINAL = (TaskState.SUCCEEDED, TaskState.FAILED)


def render_status(*, state: str, has_result: bool, retrieved: bool, protocol: str, endpoint: str | None) -> dict:
    status, success = STATUS[(state, has_result and state != TaskState.PENDING)]
    body = {"status": status}
    if state in _TERMINAL:
        body["retrieval_protocol"] = protocol
        if protocol == "asstore" and has_result and endpoint:
            body["retrieval_endpoint"] = endpoint
    body["result_retrieved"] = retrieved
    body["success"] = success
    if state == TaskState.FAILED:
        body["error"] = FAILED_MESSAGE
    return body


NOT_FOUND_JSON = json.dumps(NOT_FOUND)
ENDPOINT_MARK = "@@retrieval-endpoint@@"


@functools.lru_cache(maxsize=64)
def status_json(state: str, has_result: bool, retrieved: bool, protocol: str) -> str:
    """`render_status` as JSON text, with ENDPOINT_MARK where the task's asstore URL goes."""
    return json.dumps(render_status(state=state, has_result=has_result, retrieved=retrieved, protocol=protocol,
                                    endpoint=ENDPOINT_MARK))

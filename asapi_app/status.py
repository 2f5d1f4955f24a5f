"""The one table that renders engine state as v2 task-status objects (API.md §6.3)."""
from tasks_app.choices import TaskState

__all__ = ["STATUS", "render_status", "NOT_FOUND", "FAILED_MESSAGE"]

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

"""The `message` task: a notice about a subscription (its account or one device) for the stream.

asmaster tells the listener about its subscriptions with `message` deliveries (the 2.x listener
stores them in its `message` table). They go through the engine like any v2 task: the handler
renders the notice the service queued in the task's payload.
"""
import json

from workers.handlers.base import Output, TaskContext, register
from workers.handlers.icloud_v2 import ICLOUD

MESSAGE = "message"


@register(ICLOUD, MESSAGE)
def message(ctx: TaskContext) -> list[Output]:
    headers = ctx.options.get("stream_headers") or {}
    body = {
        "code": ctx.options.get("code", ""),
        "message": ctx.options.get("message", ""),
        "account_id": headers.get("account_id"),
        "device_id": headers.get("device_id"),
        **({"data": ctx.options["data"]} if ctx.options.get("data") else {}),
    }
    return [Output(MESSAGE, json.dumps(body, sort_keys=True).encode("utf-8"), "json")]

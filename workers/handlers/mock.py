"""The mock service (`mocks.mock`) and the simulated iCloud service (`icloud.account`).

Deterministic: the same source identifier and request give the same bytes. Scenario controls
(README "Mock service"): credentials drive session.init (`wrong-password`, `2fa…`, `locked…`
identifiers); a poll payload's `mock` object drives its tasks: `fail` (true, or a list of
targets) fails them with `mock-failure`, `delay` (seconds) slows them, `result_size` (bytes)
pads data documents.
"""
import json
import time

from django.conf import settings

from . import mockdata
from .base import HandlerError, Output, TaskContext, register

__all__ = ["MOCK_SOURCE_TYPES"]

MOCK_SOURCE_TYPES = ("mocks.mock", "icloud.account")


def _apply_controls(ctx: TaskContext) -> dict:
    controls = ctx.options.get("mock") or {}
    delay = float(controls.get("delay") or 0)
    if delay > 0:
        time.sleep(min(delay, settings.RICLOUD_MOCK_MAX_DELAY_SECONDS))
    fail = controls.get("fail")
    if fail is True or (isinstance(fail, list) and ctx.target in fail):
        raise HandlerError("mock-failure", f"The mock service was asked to fail {ctx.type} {ctx.target}.")
    return controls


def _mock_errors(fn):
    def wrapper(ctx: TaskContext) -> list[Output]:
        try:
            return fn(ctx)
        except mockdata.MockError as exc:
            raise HandlerError(exc.code, exc.message) from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _document(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True).encode("utf-8")


@_mock_errors
def session_init(ctx: TaskContext) -> list[Output]:
    """Check the credentials; the source's `info` comes back on the context."""
    ctx.source_info = mockdata.authenticate(ctx.source_identifier, ctx.credentials or {})
    return []


@_mock_errors
def info(ctx: TaskContext) -> list[Output]:
    _apply_controls(ctx)
    return [Output(ctx.target, _document(mockdata.info_document(ctx.source_identifier, ctx.target)), "json")]


@_mock_errors
def data(ctx: TaskContext) -> list[Output]:
    controls = _apply_controls(ctx)
    document = mockdata.data_document(
        ctx.source_identifier,
        ctx.target,
        since=ctx.options.get("since"),
        until=ctx.options.get("until"),
        pad_to_size=controls.get("result_size") or None,
    )
    return [Output(ctx.target, _document(document), "json")]


@_mock_errors
def file(ctx: TaskContext) -> list[Output]:
    _apply_controls(ctx)
    content, extension = mockdata.file_content(ctx.source_identifier, ctx.target)
    return [Output(ctx.target, content, extension)]


def _delayed(options: dict) -> bool:
    """A run waits only when the mock controls ask for a delay."""
    return float((options.get("mock") or {}).get("delay") or 0) > 0


for _source_type in MOCK_SOURCE_TYPES:
    register(_source_type, "session.init", info_types=mockdata.INFO_TYPES, data_types=mockdata.DATA_TYPES)(session_init)
    register(_source_type, "info", waits=_delayed)(info)
    register(_source_type, "data", waits=_delayed)(data)
    register(_source_type, "file", waits=_delayed)(file)

"""The handler registry and the types handlers exchange with the runner."""
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["HandlerError", "Output", "TaskContext", "register", "get_handler", "catalogue", "source_types",
           "may_wait", "NEVER_WAITS"]


class HandlerError(Exception):
    """A failure of the work itself; `code` becomes the task's `error`."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(message or code)
        self.code = code


@dataclass(frozen=True)
class Output:
    """One object to publish as a result."""

    identifier: str
    content: bytes
    type: str  # "json" for documents, the file extension for files


@dataclass
class TaskContext:
    task_id: str
    organisation_id: int
    key_id: int
    type: str
    target: str | None
    source_type: str
    source_identifier: str
    credentials: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    source_state: str = ""
    # Set by handlers that learn about the source: its `info`, and its new state.
    source_info: dict | None = None
    new_source_state: str | None = None


Handler = Callable[[TaskContext], list[Output]]
_handlers: dict[tuple[str, str], Handler] = {}
_waits: dict[tuple[str, str], Callable[[dict], bool]] = {}
_catalogues: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def NEVER_WAITS(options: dict) -> bool:  # noqa: N802 - a constant predicate
    return False


def register(source_type: str, task_type: str, *, info_types=(), data_types=(), waits=None):
    """Decorator: register a handler; the first registration of a source type sets its catalogue.
    `waits(options)`: whether a run with these options may wait (sleep, network, another service);
    a run that cannot is not worth a lease and ends in one statement (workers/runner.py). Unsaid:
    it may."""

    def decorator(handler: Handler) -> Handler:
        _handlers[(source_type, task_type)] = handler
        if waits is not None:
            _waits[(source_type, task_type)] = waits
        if info_types or data_types:
            _catalogues[source_type] = (tuple(info_types), tuple(data_types))
        return handler

    return decorator


def get_handler(source_type: str | None, task_type: str) -> Handler | None:
    return _handlers.get((source_type or "", task_type))


def may_wait(source_type: str | None, task_type: str, options: dict) -> bool:
    """Whether a run of this handler with `options` may wait (see `register`)."""
    waits = _waits.get((source_type or "", task_type))
    if waits is None:
        return True
    try:
        return bool(waits(options or {}))
    except (TypeError, ValueError, AttributeError):  # options the handler will reject: a leased run
        return True


def source_types() -> list[str]:
    return sorted({source_type for source_type, _ in _handlers if source_type})


def catalogue(source_type: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(info types, data types) a source type serves."""
    return _catalogues.get(source_type, ((), ()))

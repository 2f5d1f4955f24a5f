"""Service handlers, keyed by (source type, task type).

A handler receives a `TaskContext` and returns the documents and files to publish, or raises
`HandlerError(code)`. Service handlers (`mock`, `icloud_v2`) never touch the database; the
system handlers (`system`: configuration tests) work through the domain services. The mock
service (`mocks.mock`) and the simulated iCloud service (`icloud.account`) share one
deterministic generator (`mockdata`).
"""
from .base import HandlerError, Output, TaskContext, catalogue, get_handler, may_wait, register, source_types

__all__ = ["HandlerError", "Output", "TaskContext", "catalogue", "get_handler", "may_wait", "register", "source_types"]

from . import icloud_v2, mock, system  # noqa: E402,F401  (register every handler)

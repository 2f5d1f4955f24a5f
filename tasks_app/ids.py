"""Time-ordered UUIDs (RFC 9562 version 7) for the asynchronous resources.

Ordering rows by id then equals ordering by creation time, so cursor pagination
(`after_id`/`before_id`, newest first) is a plain indexed range scan on the primary key.
"""
import os
import threading
import time
import uuid

__all__ = ["uuid7", "uuid7_at"]

_lock = threading.Lock()
_last = [0, 0]  # last millisecond, sequence within it
# RICLOUD_DETERMINISTIC: the seeded id sequence (tasks_app/determinism.py sets it); None: off.
deterministic = None


def uuid7() -> uuid.UUID:
    """A version-7 UUID; monotonic within this process (12-bit sequence per millisecond)."""
    if deterministic is not None:
        return deterministic()
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last[0]:
            ms = _last[0]
            _last[1] += 1
            if _last[1] > 0xFFF:
                ms += 1
                _last[1] = 0
        else:
            _last[1] = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last[0] = ms
        seq = _last[1]
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    return uuid.UUID(int=value)


def uuid7_at(moment) -> uuid.UUID:
    """A random version-7 UUID of the millisecond of `moment` (for imports and fixtures)."""
    ms = int(moment.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=ms << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1))

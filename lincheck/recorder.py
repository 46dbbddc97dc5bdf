"""Thread-safe recording of live histories from concurrent clients.

Typical use from a test harness::

    rec = Recorder()
    h = rec.invoke(process=1, f="write", value=3, key="x")
    try:
        client.write("x", 3)
    except TimeoutError:
        rec.info(h)          # indeterminate: may or may not have happened
    else:
        rec.ok(h)
    rec.note("partition", nodes=["n1"])   # nemesis events go to metadata
    history = rec.history()

Times come from one shared event counter taken under a lock, so they give a
total order that is consistent with real time as seen by the recorder: if a
client's ``ok`` is recorded before another client's ``invoke``, the first
operation really did finish before the second began. (Wall-clock timestamps
could tie or go backwards; a counter cannot.) Invoke *before* issuing the
request and complete *after* the reply, so the recorded interval contains the
real one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from lincheck.history import History, Operation, Status


@dataclass
class _Pending:
    process: Hashable
    f: str
    value: Any
    key: Hashable
    invoke: int


class Recorder:
    """Collects operations from many threads; see the module docstring."""

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._clock = 0
        self._next_handle = 0
        self._pending: dict[int, _Pending] = {}
        self._done: list[Operation] = []
        self._events: list[dict[str, Any]] = []
        self.metadata: dict[str, Any] = dict(metadata or {})

    def _tick(self) -> int:
        # Caller holds the lock.
        self._clock += 1
        return self._clock

    def invoke(self, process: Hashable, f: str, value: Any = None, key: Hashable = None) -> int:
        """Record the start of an operation; returns a handle for its completion."""
        with self._lock:
            handle = self._next_handle
            self._next_handle += 1
            self._pending[handle] = _Pending(process, f, value, key, self._tick())
            return handle

    def _complete(self, handle: int, status: Status, result: Any) -> Operation:
        with self._lock:
            try:
                p = self._pending.pop(handle)
            except KeyError:
                raise KeyError(f"operation handle {handle} is not pending (completed twice?)") from None
            op = Operation(
                process=p.process, f=p.f, value=p.value, result=result, status=status,
                invoke=p.invoke, complete=self._tick(), key=p.key,
            )
            self._done.append(op)
            return op

    def ok(self, handle: int, result: Any = None) -> Operation:
        """The operation took effect and returned ``result``."""
        return self._complete(handle, Status.OK, result)

    def fail(self, handle: int) -> Operation:
        """The operation certainly did not take effect (e.g. rejected before sending)."""
        return self._complete(handle, Status.FAIL, None)

    def info(self, handle: int) -> Operation:
        """Indeterminate outcome (timeout, connection lost): it may take effect later or never."""
        return self._complete(handle, Status.UNKNOWN, None)

    def note(self, event: str, **data: Any) -> None:
        """Record a non-operation event (nemesis action, leader change...) in metadata."""
        with self._lock:
            self._events.append({"event": event, "time": self._tick(), "wall": time.time(), **data})

    def history(self, metadata: dict[str, Any] | None = None) -> History:
        """Snapshot of everything so far; still-pending operations count as unknown."""
        with self._lock:
            ops = list(self._done)
            ops.extend(
                Operation(process=p.process, f=p.f, value=p.value, status=Status.UNKNOWN,
                          invoke=p.invoke, complete=None, key=p.key)
                for p in self._pending.values()
            )
            meta = dict(self.metadata)
            if self._events:
                meta["events"] = [dict(e) for e in self._events]
            meta.update(metadata or {})
        ops.sort(key=lambda op: op.invoke)
        return History(ops, meta)

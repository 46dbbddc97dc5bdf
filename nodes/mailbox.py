"""A process's mailbox: pykka's actor inbox, extended with Erlang's selective receive.

pykka's own inbox is a ``queue.Queue`` read strictly first-in first-out.  Erlang's
``receive`` instead takes the *first message that matches* and leaves the others
queued in arrival order.  This class speaks pykka's ``ActorInbox`` protocol
(``put``/``get``/``empty``) and adds ``receive(match, timeout)``.  It also
keeps the set of *aliases* (call references a process is still waiting on): a
``CallReply`` whose reference is not active is dropped on arrival, which is how
a reply that comes after its caller timed out never shows up.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .terms import CallReply, ProcessExit, Ref

_OPEN = object()


class Mailbox:
    """Messages of one process, in arrival order."""

    __slots__ = ("_lock", "_cond", "_queue", "_closed", "_waiters", "_aliases")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[Any] = deque()
        self._closed: Any = _OPEN
        self._waiters = 0
        self._aliases: set[Ref] = set()

    # -- pykka ActorInbox protocol ---------------------------------------------------------
    def put(self, message: Any) -> None:
        with self._lock:
            if self._closed is not _OPEN:
                return
            if type(message) is CallReply and message.ref not in self._aliases:
                return  # its caller gave up: Erlang drops it through the dead alias
            self._queue.append(message)
            if self._waiters:
                self._cond.notify()

    def get(self) -> Any:
        return self.receive(None, None)

    def empty(self) -> bool:
        return not self._queue

    # -- Erlang ----------------------------------------------------------------------------
    def receive(self, match: Callable[[Any], bool] | None, timeout: float | None) -> Any:
        """Remove and return the first message for which ``match`` is true (any if None).

        ``timeout`` is in seconds (None waits forever, 0 only looks).  Raises
        ``TimeoutError`` when it passes, ``ProcessExit`` when the process is dead.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            scanned = 0
            queue = self._queue
            while True:
                if self._closed is not _OPEN:
                    raise ProcessExit(self._closed)
                if match is None:
                    if queue:
                        return queue.popleft()
                else:
                    n = len(queue)
                    for i in range(scanned, n):
                        message = queue[i]
                        if match(message):
                            del queue[i]
                            return message
                    scanned = n
                if deadline is None:
                    wait = None
                else:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        raise TimeoutError
                self._waiters += 1
                try:
                    self._cond.wait(wait)
                finally:
                    self._waiters -= 1

    def flush(self) -> list[Any]:
        with self._lock:
            if self._closed is not _OPEN:
                raise ProcessExit(self._closed)
            messages = list(self._queue)
            self._queue.clear()
            return messages

    def close(self, reason: Any) -> None:
        """The process died: drop what is queued and wake a blocked receive."""
        with self._lock:
            if self._closed is _OPEN:
                self._closed = reason
            self._queue.clear()
            self._cond.notify_all()

    @property
    def closed_reason(self) -> Any:
        return None if self._closed is _OPEN else self._closed

    def __len__(self) -> int:
        return len(self._queue)

    # -- aliases for call replies ----------------------------------------------------------
    def activate_alias(self, ref: Ref) -> None:
        with self._lock:
            self._aliases.add(ref)

    def deactivate_alias(self, ref: Ref) -> None:
        """Stop accepting replies for ``ref`` and purge one already queued."""
        with self._lock:
            self._aliases.discard(ref)
            queue = self._queue
            for i in range(len(queue)):
                message = queue[i]
                if type(message) is CallReply and message.ref == ref:
                    del queue[i]
                    break

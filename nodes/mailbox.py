"""A process's mailbox: pykka's actor inbox, extended with Erlang's selective receive.

pykka's own inbox is a ``queue.Queue`` read strictly first-in first-out.  Erlang's
``receive`` instead takes the *first message that matches* and leaves the others
queued in arrival order.  This class speaks pykka's ``ActorInbox`` protocol
(``put``/``get``/``empty``) and adds ``receive(match, timeout)``.

Layout: senders put into ``incoming``, a ``queue.SimpleQueue`` (implemented in C:
a put is one call and wakes a blocked reader without Python-level condition
variables, which matters on the hot path).  Only the owning process reads; the
messages it looked at and left behind wait in ``saved`` (in arrival order, before
everything still in ``incoming``), so a later receive sees them first.

It also keeps the set of *aliases* (call references the process still waits on):
a ``CallReply`` whose reference is not active is dropped when it is read, which
is how a reply that comes after its caller timed out never shows up.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .terms import CallReply, ProcessExit, Ref

_OPEN = object()
_WAKE = object()  # put by close(): wakes a reader blocked on a mailbox that is going away


class Mailbox:
    """Messages of one process, in arrival order; read only by the process itself."""

    __slots__ = ("_incoming", "_saved", "_closed", "_aliases")

    def __init__(self) -> None:
        self._incoming: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._saved: deque[Any] = deque()
        self._closed: Any = _OPEN
        self._aliases: set[Ref] = set()

    # -- pykka ActorInbox protocol (put is the one method other threads call) ----------------
    def put(self, message: Any) -> None:
        if self._closed is _OPEN:
            self._incoming.put(message)

    def get(self) -> Any:
        return self.receive(None, None)

    def empty(self) -> bool:
        return not self._saved and self._incoming.empty()

    # -- Erlang ------------------------------------------------------------------------------
    def receive(self, match: Callable[[Any], bool] | None, timeout: float | None) -> Any:
        """Remove and return the first message for which ``match`` is true (any if None).

        ``timeout`` is in seconds (None waits forever, 0 only looks).  Raises
        ``TimeoutError`` when it passes, ``ProcessExit`` when the process is dead.
        An exception raised by ``match`` propagates and leaves every message queued.
        """
        if self._closed is not _OPEN:
            raise ProcessExit(self._closed)
        saved = self._saved
        if saved:
            if match is None:
                return saved.popleft()
            for i, message in enumerate(saved):
                if match(message):
                    del saved[i]
                    return message
        incoming = self._incoming
        deadline = None if timeout is None or timeout <= 0 else time.monotonic() + timeout
        while True:
            try:
                if timeout is None:
                    message = incoming.get()
                elif deadline is None:
                    message = incoming.get_nowait()
                else:
                    wait = deadline - time.monotonic()
                    message = incoming.get(timeout=wait) if wait > 0 else incoming.get_nowait()
            except queue.Empty:
                raise TimeoutError from None
            if message is _WAKE:
                raise ProcessExit(self._closed)
            if type(message) is CallReply and message.ref not in self._aliases:
                continue  # its caller gave up: Erlang drops it through the dead alias
            try:
                if match is None or match(message):
                    return message
            except BaseException:
                # a raising match must not lose the message: it stays queued in its place
                saved.append(message)
                raise
            saved.append(message)

    def _drain(self) -> None:
        """Move everything that arrived into ``saved`` (owner only)."""
        incoming, saved = self._incoming, self._saved
        while True:
            try:
                message = incoming.get_nowait()
            except queue.Empty:
                return
            if message is _WAKE:
                raise ProcessExit(self._closed)
            if type(message) is CallReply and message.ref not in self._aliases:
                continue
            saved.append(message)

    def flush(self) -> list[Any]:
        if self._closed is not _OPEN:
            raise ProcessExit(self._closed)
        self._drain()
        messages = list(self._saved)
        self._saved.clear()
        return messages

    def close(self, reason: Any) -> None:
        """The process died: later messages are dropped and a blocked receive wakes up."""
        if self._closed is _OPEN:
            self._closed = reason
            self._incoming.put(_WAKE)

    def __len__(self) -> int:
        return len(self._saved) + self._incoming.qsize()

    # -- aliases for call replies (owner only) -----------------------------------------------
    def activate_alias(self, ref: Ref) -> None:
        self._aliases.add(ref)

    def deactivate_alias(self, ref: Ref, purge: bool = True) -> None:
        """Stop accepting replies for ``ref``; with ``purge``, also drop one already queued."""
        self._aliases.discard(ref)
        if purge and self._saved:
            saved = self._saved
            for i, message in enumerate(saved):
                if type(message) is CallReply and message.ref == ref:
                    del saved[i]
                    return
        # a reply still in ``incoming`` is dropped when it is read: the alias is gone

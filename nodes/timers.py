"""``send_after`` / ``cancel_timer``: every timer of the node on one scheduler thread.

A heap ordered by deadline, cancelled timers removed lazily; one daemon thread
sleeps until the earliest deadline (never a thread per timer, which would cost
a thread start on every Raft heartbeat).

Lazily, but not forever: a gen_statem event timeout is cancelled by every event, so a
process that re-arms a one-hour timeout 10,000 times a second would otherwise leave
36 million dead heap entries behind it. Once the dead entries outnumber the live timers
the heap is rebuilt from the live ones, which keeps it within twice their number at an
amortised constant cost per cancel. As Erlang, a timer aimed at a local process goes when
that process dies (:meth:`Scheduler.dest_died`, called by the runtime at each death; the
timers are indexed by target pid for it), not when it would have fired: a process that sets
an hour's timer and dies leaves nothing behind for that hour.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from ._sched import batch_scheduling
from .terms import Pid, Ref, check_ms_in_range, make_ref


def _check_ref(fn: str, ref: Any) -> None:
    if type(ref) is not Ref:
        raise TypeError(f"{fn}: expected a timer ref (the Ref send_after returned), got {ref!r}")


class Scheduler:
    """``deliver(dest, msg)`` sends a due timer's message; ``dead(dest)`` says whether ``dest`` is
    a process that is gone, whose timers then count as cancelled, as Erlang cancels a timer
    with its target process (checked when a timer is read or cancelled: the message itself
    would reach nobody anyway)."""

    def __init__(self, deliver: Callable[[Any, Any], None], dead: Callable[[Any], bool] = lambda _: False
                 ) -> None:
        self._deliver = deliver
        self._dead = dead
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Ref]] = []
        self._timers: dict[Ref, tuple[float, Any, Any]] = {}
        self._by_pid: dict[Pid, set[Ref]] = {}  # the timers aimed at each pid (see dest_died)
        self._by_pid_prune_at = 10_000  # its size at which emptied sets are dropped
        self._seq = 0
        self._stale = 0  # heap entries whose timer was cancelled (the heap keeps them until rebuilt)
        self._thread: threading.Thread | None = None

    def send_after(self, ms: int | float, dest: Any, msg: Any) -> Ref:
        if not isinstance(ms, (int, float)) or isinstance(ms, bool):  # True is an int, not a time
            raise TypeError(f"send_after: time must be a non-negative number of ms, got {ms!r}")
        if ms < 0:
            raise ValueError(f"send_after: time must be a non-negative number of ms, got {ms!r}")
        check_ms_in_range("send_after", ms)
        if not (type(dest) in (str, Pid) or (type(dest) is tuple and len(dest) == 2
                                             and isinstance(dest[0], str) and isinstance(dest[1], str))):
            raise TypeError(
                f"send_after: dest must be a Pid, a registered name str or a (name, node) tuple, "
                f"got {dest!r}")
        ref = make_ref()
        deadline = time.monotonic() + ms / 1000.0
        with self._cond:
            self._seq += 1
            self._timers[ref] = (deadline, dest, msg)
            if type(dest) is Pid:
                refs = self._by_pid.get(dest)
                if refs is None:
                    if len(self._by_pid) >= self._by_pid_prune_at:  # emptied sets of live or remote pids
                        self._by_pid = {p: r for p, r in self._by_pid.items() if r}
                        # twice what is left: amortised constant, even with 10,000 pids holding timers
                        self._by_pid_prune_at = max(10_000, 2 * len(self._by_pid))
                    refs = self._by_pid[dest] = set()
                refs.add(ref)
            heapq.heappush(self._heap, (deadline, self._seq, ref))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nodes-timers", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is ref:
                self._cond.notify()  # the new timer is the earliest: re-arm the sleep
        return ref

    def cancel(self, ref: Ref) -> int | bool:
        """Remaining ms (as Erlang's erlang:cancel_timer) or False if it already fired or never was."""
        _check_ref("cancel_timer", ref)
        with self._cond:
            entry = self._timers.pop(ref, None)
            if entry is not None:
                self._unindex(ref, entry[1])
                self._dropped()
        if entry is None or self._dead(entry[1]):
            return False
        return max(0, int((entry[0] - time.monotonic()) * 1000))

    def read(self, ref: Ref) -> int | bool:
        _check_ref("read_timer", ref)
        entry = self._timers.get(ref)
        if entry is None:
            return False
        if self._dead(entry[1]):
            with self._cond:
                if self._timers.pop(ref, None) is not None:
                    self._unindex(ref, entry[1])
                    self._dropped()
            return False
        return max(0, int((entry[0] - time.monotonic()) * 1000))

    def dest_died(self, pid: Pid) -> None:
        """``pid`` died: its timers go, as Erlang's do with their target process."""
        with self._cond:
            refs = self._by_pid.pop(pid, None)
            for ref in refs or ():
                if self._timers.pop(ref, None) is not None:
                    self._dropped()

    def _unindex(self, ref: Ref, dest: Any) -> None:
        """Take a timer that left ``_timers`` out of the index by pid (called with the lock held)."""
        if type(dest) is Pid:
            refs = self._by_pid.get(dest)
            if refs is not None:
                refs.discard(ref)  # an empty set stays: the pid's next timer needs one again

    def _dropped(self) -> None:
        """One heap entry went stale (called with the lock held): rebuild once they outnumber the live."""
        self._stale += 1
        if self._stale <= len(self._timers) + 64:
            return
        timers, dead = self._timers, self._dead
        for ref in [r for r, (_, dest, _) in timers.items() if dead(dest)]:
            self._unindex(ref, timers.pop(ref)[1])
        # in place: the scheduler thread holds this very list
        self._heap[:] = [e for e in self._heap if e[2] in timers]
        heapq.heapify(self._heap)
        self._stale = 0

    def _run(self) -> None:
        batch_scheduling()  # a runtime thread: it sends into mailboxes, under the GIL
        heap = self._heap
        while True:
            due: list[tuple[Any, Any]] = []
            with self._cond:
                while True:
                    now = time.monotonic()
                    while heap and heap[0][0] <= now:
                        _, _, ref = heapq.heappop(heap)
                        entry = self._timers.pop(ref, None)
                        if entry is not None:
                            self._unindex(ref, entry[1])
                            due.append((entry[1], entry[2]))
                        elif self._stale:
                            self._stale -= 1  # a cancelled timer's entry, gone now
                    if due:
                        break
                    # (send_after bounds every delay; the clamp keeps the wait itself in range)
                    self._cond.wait(min(heap[0][0] - now, threading.TIMEOUT_MAX) if heap else None)
            for dest, msg in due:
                try:
                    self._deliver(dest, msg)
                except Exception:  # a bad destination must not stop every other timer
                    import logging

                    logging.getLogger("nodes").exception("timer delivery to %r failed", dest)

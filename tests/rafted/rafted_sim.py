"""A deterministic, single-threaded simulator that drives members' state functions message by message.

No processes, threads or clocks: each member is a ``(state_name, State)``
pair, its mailbox a deque; ``rafted.server`` handlers run with a fake
context (pid = a string, time = ``Sim.now``) and the effects they return are
interpreted here (casts go to mailboxes, replies are recorded, FLUSH goes
back to the sender's mailbox, ticks are delivered when ``advance`` passes a
member's deadline). Messages can be dropped with ``Sim.drop``; a member in ``Sim.paused``
handles nothing and gets no ticks (a stopped OS process) while its mail waits for it.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from rafted import server, startup
from rafted import state as member_state
from rafted.rpc import InstallSnapshot
from rafted.snapshot import Snapshot


class SimComm:
    """Marker communication module: the simulator interprets these effects instead of running them."""

    @staticmethod
    def cast(server: Any, msg: Any) -> None:  # pragma: no cover - never called
        raise AssertionError("simulated effects are interpreted, not run")

    @staticmethod
    def reply(from_: Any, reply: Any) -> None:  # pragma: no cover - never called
        raise AssertionError("simulated effects are interpreted, not run")


class Sim:
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)  # the members' randomized election time-outs
        self.now = 1000
        self.members: dict[str, tuple[str, member_state.State]] = {}
        self.mailboxes: dict[str, deque] = {}
        self.replies: dict[Any, Any] = {}
        self.hooks: list[tuple[str, str, tuple]] = []
        self.stopped: dict[str, Any] = {}
        self.drop: Callable[[str, str, Any], bool] = lambda src, dest, msg: False
        self.paused: set[str] = set()  # members that handle nothing (a stopped process): mail waits
        self.delivered = 0
        self._call_seq = 0

    # -- set-up ------------------------------------------------------------------------------
    def create_leader(self, pid: str, config: Any) -> None:
        ctx = member_state.Ctx(pid, self.now, self.rng)
        self.members[pid] = ("leader", startup.initialize_leader_state(ctx, config))
        self.mailboxes[pid] = deque()

    def join(self, pid: str, leader: str) -> Any:
        """Add ``pid`` through ``leader``; returns the leader's answer (the member exists only on success)."""
        self.mailboxes[pid] = deque()  # messages sent before its init completes wait here, as in a process
        r = self.call(leader, ("add_follower", pid))
        if r[0] == "ok":
            snap = r[1]
            assert isinstance(snap, InstallSnapshot)
            ctx = member_state.Ctx(pid, self.now, self.rng)
            state = startup.initialize_follower_state(ctx, Snapshot.from_install_snapshot(snap))
            self.members[pid] = ("follower", state)
            self.run()
        else:
            del self.mailboxes[pid]
        return r

    def crash(self, pid: str) -> None:
        self.members.pop(pid, None)
        self.mailboxes.pop(pid, None)

    # -- looking ---------------------------------------------------------------------------
    def state(self, pid: str) -> member_state.State:
        return self.members[pid][1]

    def name(self, pid: str) -> str:
        return self.members[pid][0]

    def leaders(self) -> list[str]:
        return [p for p, (n, _) in self.members.items() if n == "leader"]

    # -- running ---------------------------------------------------------------------------
    def send(self, src: str, dest: Any, msg: Any) -> None:
        if dest not in self.mailboxes:
            return  # dead or unknown: dropped, as nodes.send does
        if src != dest and self.drop(src, dest, msg):
            return
        self.mailboxes[dest].append(("cast", msg))

    def dispatch(self, pid: str, event_type: Any, msg: Any) -> None:
        name, s = self.members[pid]
        ctx = member_state.Ctx(pid, self.now, self.rng)
        result = server._dispatch(ctx, name, event_type, msg, s)
        for fn, args in ctx.effects:
            if fn is SimComm.cast:
                self.send(pid, args[0], args[1])
            elif fn is member_state.send_reply:  # (send_reply, (module, from_, reply))
                self.replies[args[1]] = args[2]
            else:
                self.hooks.append((pid, args[1], args[2]))  # (call_hook, (module, name, args))
        if ctx.apply_after is not None:  # what the member does once its effects have run
            result = server.apply_after_effects(ctx, result)
        if ctx.flush:
            # the member's FLUSH to itself (a real member may run it at once when its mailbox is
            # empty, which is the same as handling this message next)
            self.mailboxes[pid].append(("info", server.FLUSH))
        kind = result[0]
        actions: list = []
        if kind == "keep_state":
            self.members[pid] = (name, result[1])
            actions = result[2] if len(result) == 3 else []
        elif kind == "next_state":
            self.members[pid] = (result[1], result[2])
            actions = result[3] if len(result) == 4 else []
        elif kind == "stop":
            self.stopped[pid] = result[1]
            self.crash(pid)
            return
        else:  # pragma: no cover
            raise AssertionError(f"unexpected result {result!r}")
        inserted = [(a[1], a[2]) for a in actions if a[0] == "next_event"]
        self.mailboxes[pid].extendleft(reversed(inserted))

    def step(self, pid: str) -> bool:
        box = self.mailboxes.get(pid)
        if not box or pid not in self.members or pid in self.paused:
            return False
        event_type, msg = box.popleft()
        self.delivered += 1
        self.dispatch(pid, event_type, msg)
        return True

    def run(self, max_steps: int = 100_000) -> None:
        """Deliver messages round-robin until every mailbox is empty."""
        for _ in range(max_steps):
            progressed = False
            for pid in list(self.mailboxes):
                progressed |= self.step(pid)
            if not progressed:
                return
        raise AssertionError("simulation did not settle")

    def call(self, pid: str, request: Any) -> Any:
        self._call_seq += 1
        from_ = ("client", self._call_seq)
        self.mailboxes[pid].append((("call", from_), request))
        self.run()
        return self.replies.pop(from_, None)

    def call_nowait(self, pid: str, request: Any) -> Any:
        self._call_seq += 1
        from_ = ("client", self._call_seq)
        self.mailboxes[pid].append((("call", from_), request))
        return from_

    def advance(self, ms: int) -> None:
        """Move time forward in small steps, delivering ticks of due deadlines and then messages."""
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + 5)
            for pid in [p for p in self.members if p not in self.paused]:
                name, s = self.members[pid]
                d = server._next_deadline(name, s, pid)
                if d is not None and d <= self.now:
                    s = dataclasses.replace(s, timer=member_state.TimerHandle(-1, None, d))
                    self.members[pid] = (name, s)
                    self.dispatch(pid, "info", (server.TICK, -1))
            self.run()


def assert_consistent(sim: Sim) -> None:
    """Committed entries agree wherever two members both hold them; same data at the same commit index."""
    states = {p: s for p, (_, s) in sim.members.items()}
    data_at: dict[int, Any] = {}
    for p, s in states.items():
        assert s.logs.i_min <= s.logs.i_committed <= s.logs.i_max
        assert sorted(s.logs.map) == list(range(s.logs.i_min, s.logs.i_max + 1))
        assert data_at.setdefault(s.logs.i_committed, s.data) == s.data, f"{p} diverged"
    for p, s in states.items():
        for q, t in states.items():
            lo = max(s.logs.i_min, t.logs.i_min)
            hi = min(s.logs.i_committed, t.logs.i_committed)
            for i in range(lo, hi + 1):
                assert s.logs.map[i] == t.logs.map[i], f"committed entry {i} differs between {p} and {q}"

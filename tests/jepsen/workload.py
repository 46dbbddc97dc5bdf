"""The workload: a replicated key -> value map and the clients that hammer it.

The data module :class:`KV` is importable on every node (``tests`` is on their
``PYTHONPATH``), so it travels by reference inside the config.

A :class:`Client` is a thread of the harness (its own ``nodes`` process) that
runs one operation at a time against the group and records each one in the
shared :class:`lincheck.Recorder`:

* ``write(k, v)`` and ``cas(k, old, new)`` go through ``RaftedValue.command``
  with an id of their own, ``(client, seq)``, reused on every retry, so the
  group applies the operation at most once however many attempts it takes;
* ``read(k)`` goes through ``RaftedValue.query`` (leader lease enabled).

One operation is one history entry however many attempts it takes.  What an
attempt's answer proves:

* ``("ok", ret)``: applied (exactly once: a retry of an applied id gets the
  cached result) -- the operation is ``ok`` with ``ret``;
* ``("error", ("not_leader", hint))``: that member is not the leader and
  appended nothing -- *this attempt* certainly did nothing; retry at the hint;
* ``("error", "timeout")``: unknown -- the member may have logged it and a
  later leader may commit it;
* ``("error", "noproc")``: the member does not exist -- not applied; the client
  gives the operation up (``trust_noproc``, the default; the operation is ``fail``
  unless an earlier attempt may have been applied).  rafted used to fold a lost
  connection or a killed member (the request may have been logged already) into
  ``noproc``; the campaign caught it (see ``test_regressions``), it now answers
  ``"timeout"`` then.  With ``trust_noproc=False`` it is unknown, like a time-out;
* a raised ``nodes.Exit``: unknown.

The operation ends ``ok`` on the first ``ok`` attempt; when its time runs
out it ends ``fail`` only if *every* attempt was refused with ``not_leader``
(or never sent), and ``info`` (unknown) otherwise.  Reads change nothing, so an
unanswered read is simply ``info`` too (the checker never needs to place it).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import nodes
import rafted
from lincheck import Recorder
from rafted import RaftedValue


class KV(rafted.Data):
    """A dict of keys.  Commands: ``("write", k, v)`` -> ``"ok"``, ``("cas", k, old, new)`` ->
    ``True``/``False``.  Queries: ``("read", k)`` -> value or ``None``, ``("all",)`` -> the dict."""

    @staticmethod
    def new() -> dict:
        return {}

    @staticmethod
    def command(data: dict, arg: tuple) -> tuple[Any, dict]:
        op = arg[0]
        if op == "write":
            _, k, v = arg
            new = dict(data)
            new[k] = v
            return "ok", new
        if op == "cas":
            _, k, old, v = arg
            if data.get(k) != old:
                return False, data
            new = dict(data)
            new[k] = v
            return True, new
        raise ValueError(f"KV: unknown command {arg!r}")

    @staticmethod
    def query(data: dict, arg: tuple) -> Any:
        if arg[0] == "read":
            return data.get(arg[1])
        if arg[0] == "all":
            return dict(data)
        raise ValueError(f"KV: unknown query {arg!r}")


def make_config(heartbeat_timeout: int = 100, election_timeout: int = 1000, lease_margin: int = 300) -> Any:
    """The group's config: leader lease on (``margin < election_timeout``).

    ``max_retained_command_results`` is large so that a command id is still cached when a
    client retries it seconds later (the de-duplication window is the last N results).
    """
    return RaftedValue.make_config(
        KV,
        heartbeat_timeout=heartbeat_timeout,
        election_timeout=election_timeout,
        election_timeout_clock_drift_margin=lease_margin,
        max_retained_command_results=20_000,
    )


def start_member(group_info: Any, name: str, join_timeout: int) -> Any:
    """Run on a node (through ``nodes.rpc.call``): start one member registered as ``name``."""
    import rafted as r

    return r.start_link(group_info, name=name, join_timeout=join_timeout)


class Directory:
    """The harness's view of the group, shared by clients and nemesis: live members, leader guess."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: list[nodes.Pid] = []
        self.leader: nodes.Pid | None = None

    def set_members(self, members: list[nodes.Pid]) -> None:
        with self._lock:
            self._members = list(members)

    def members(self) -> list[nodes.Pid]:
        with self._lock:
            return list(self._members)


class Client(threading.Thread):
    """One client: ops until ``stop`` is set; see the module docstring for what is recorded."""

    def __init__(self, cid: int, recorder: Recorder, directory: Directory, keys: list[str], seed: int,
                 stop: threading.Event, *, op_timeout_s: float = 8.0,
                 attempt_timeouts_ms: tuple[int, ...] = (500, 1500, 5000),
                 think_s: float = 0.01, mix: tuple[float, float, float] = (0.4, 0.3, 0.3),
                 stale_reads: bool = False, explore: float = 0.15, trust_noproc: bool = False) -> None:
        super().__init__(name=f"jepsen-client-{cid}", daemon=True)
        self.cid = cid
        self.rec = recorder
        self.dir = directory
        self.keys = keys
        self.rng = random.Random(seed)
        self.stop_event = stop
        self.op_timeout_s = op_timeout_s
        # a mix: short ones move on quickly, long ones wait out a paused leader and see
        # what it answers when it wakes up
        self.attempt_timeouts_ms = attempt_timeouts_ms
        self.think_s = think_s
        self.mix = mix
        # harness self-test: read any member's possibly stale copy (query_non_leader), which
        # the checker must catch under faults
        self.stale_reads = stale_reads
        # this share of operations first goes to a random member, whatever the client believes:
        # a deposed or paused old leader must refuse it, or at least never answer it wrongly
        self.explore = explore
        # take ("error", "noproc") as "certainly not applied", as the Elixir original means it
        # (it returns it only for :noproc / :normal exits; a lost node is an exit there)
        self.trust_noproc = trust_noproc
        self.seq = 0
        self.target: nodes.Pid | None = None
        self.last_seen: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()  # "<f> <status>" and attempt outcomes
        self.error: BaseException | None = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.one_op()
                if self.think_s:
                    time.sleep(self.rng.uniform(0, 2 * self.think_s))  # pacing, not settling
        except BaseException as e:  # noqa: BLE001 - reported by the campaign
            self.error = e

    def one_op(self) -> None:
        self.seq += 1
        key = self.rng.choice(self.keys)
        r = self.rng.random()
        read_p, write_p, _ = self.mix
        if r < read_p:
            self.read(key)
        elif r < read_p + write_p:
            self.command("write", key, self.unique_value())
        else:
            old = self.last_seen.get(key)
            self.command("cas", key, (old, self.unique_value()))

    def unique_value(self) -> int:
        return self.cid * 1_000_000 + self.seq

    # -- targets ----------------------------------------------------------------------------

    def pick_target(self, first: bool = False) -> nodes.Pid | None:
        if first and self.explore and self.rng.random() < self.explore:
            members = self.dir.members()
            if members:
                return self.rng.choice(members)
        if self.target is not None:
            return self.target
        guess = self.dir.leader
        members = self.dir.members()
        if guess is not None and guess in members:
            self.target = guess
        elif members:
            self.target = self.rng.choice(members)
        return self.target

    def follow(self, tried: nodes.Pid, hint: Any) -> None:
        members = self.dir.members()
        if isinstance(hint, nodes.Pid) and hint != tried and hint in members:
            self.target = hint
            self.dir.leader = hint
        else:
            # no (usable) hint: an election is on, or the member is cut off; ask another one
            others = [m for m in members if m != tried]
            self.target = self.rng.choice(others) if others else None

    # -- operations -------------------------------------------------------------------------

    def attempt_timeout(self, deadline: float) -> int:
        wanted = self.rng.choice(self.attempt_timeouts_ms)
        return int(max(100, min(wanted, (deadline - time.monotonic()) * 1000)))

    def command(self, f: str, key: str, value: Any) -> None:
        arg = ("write", key, value) if f == "write" else ("cas", key, value[0], value[1])
        cmd_id = ("jepsen", self.cid, self.seq)
        h = self.rec.invoke(self.cid, f, value, key=key)
        deadline = time.monotonic() + self.op_timeout_s
        maybe_applied = False
        first = True
        while True:
            target = self.pick_target(first)
            first = False
            if target is None:
                self.counts["attempt no_target"] += 1
            else:
                timeout = self.attempt_timeout(deadline)
                try:
                    res = RaftedValue.command(target, arg, timeout=timeout, id=cmd_id)
                except nodes.Exit:
                    res = ("error", "exit")
                if res[0] == "ok":
                    ret = res[1]
                    self.rec.ok(h, ret)
                    self.counts[f"{f} ok"] += 1
                    if f == "write":
                        self.last_seen[key] = value
                    elif ret:
                        self.last_seen[key] = value[1]
                    self.dir.leader = target
                    return
                reason = res[1]
                if type(reason) is tuple and reason and reason[0] == "not_leader":
                    self.counts["attempt not_leader"] += 1
                    self.follow(target, reason[1])
                elif type(reason) is tuple and reason and reason[0] == "command_failed":
                    # the data module raised: deterministic on every member, nothing applied
                    raise AssertionError(f"KV command {arg!r} failed: {reason!r}")
                elif reason == "noproc" and self.trust_noproc:
                    # as the original promises: the member did not exist, nothing was sent;
                    # a client that believes it gives the operation up (it failed)
                    self.counts["attempt noproc"] += 1
                    self.follow(target, None)
                    if not maybe_applied:
                        break
                else:
                    maybe_applied = True
                    self.counts[f"attempt {reason}"] += 1
                    self.follow(target, None)
            if time.monotonic() >= deadline or (self.stop_event.is_set() and not maybe_applied):
                break
            time.sleep(0.02)  # back off a little before the next attempt
        if maybe_applied:
            self.rec.info(h)
            self.counts[f"{f} info"] += 1
        else:
            self.rec.fail(h)
            self.counts[f"{f} fail"] += 1

    def read(self, key: str) -> None:
        h = self.rec.invoke(self.cid, "read", None, key=key)
        deadline = time.monotonic() + self.op_timeout_s
        first = True
        while True:
            target = self.pick_target(first)
            first = False
            if target is not None:
                timeout = self.attempt_timeout(deadline)
                if self.stale_reads:
                    target = self.rng.choice(self.dir.members() or [target])
                try:
                    if self.stale_reads:
                        res = RaftedValue.query_non_leader(target, ("read", key), timeout=timeout)
                    else:
                        res = RaftedValue.query(target, ("read", key), timeout=timeout)
                except nodes.Exit:
                    res = ("error", "exit")
                if res[0] == "ok":
                    self.rec.ok(h, res[1])
                    self.counts["read ok"] += 1
                    self.last_seen[key] = res[1]
                    if not self.stale_reads:
                        self.dir.leader = target
                    return
                reason = res[1]
                if type(reason) is tuple and reason and reason[0] == "not_leader":
                    self.counts["attempt not_leader"] += 1
                    self.follow(target, reason[1])
                else:
                    self.counts[f"attempt {reason}"] += 1
                    self.follow(target, None)
            if time.monotonic() >= deadline or self.stop_event.is_set():
                break
            time.sleep(0.02)
        # a read has no effect: leaving it unknown (or failed) is the same to the checker
        self.rec.info(h)
        self.counts["read info"] += 1

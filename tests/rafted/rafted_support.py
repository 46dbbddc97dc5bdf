"""Shared helpers for the rafted tests: data modules, short timers, cluster set-up and clean-up.

Imported by the tests as ``rafted_support`` (pytest puts this directory on ``sys.path``).

Every member a test starts is linked to the test's process, which traps
exits; at teardown each one still alive is killed, and a member that
crashed during the test (an ``("EXIT", pid, ("exception", ...))``
message) fails the test.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import nodes
import rafted
from rafted import RaftedValue

HEARTBEAT = 30
ELECTION = 200
MARGIN = 50
T_MAX_ELECTION = 2 * ELECTION


class JustAnInt(rafted.Data):
    """The upstream tests' data module: an int with inc / get / set."""

    def new():
        return 0

    def command(data, arg):
        if arg == "inc":
            return data, data + 1
        if arg == "get":
            return data, data
        if type(arg) is tuple and arg[0] == "set":
            return data, arg[1]
        raise ValueError(f"unknown command {arg!r}")

    def query(data, arg):
        return data


CONF = RaftedValue.make_config(
    JustAnInt,
    heartbeat_timeout=HEARTBEAT,
    election_timeout=ELECTION,
    election_timeout_clock_drift_margin=MARGIN,
    max_retained_command_results=10,
)


def make_bag() -> Any:
    """A data module defined inside a function, so it travels by value (as a class typed into a
    shell would) in configs, snapshots and rpcs to nodes that cannot import the tests."""

    class Bag(rafted.Data):
        """Every command's argument, in the order applied."""

        def new():
            return ()

        def command(data, arg):
            return len(data), (*data, arg)

        def query(data, arg):
            return data

    return Bag


def make_lock_maker() -> Any:
    """An int whose command and query ``"lock"`` return a result no pickler can copy (a lock);
    any other command returns the value before it, any other query the value. Defined in a
    function: it travels by value."""

    class LockMaker(rafted.Data):
        def new():
            return 0

        def command(n, arg):
            return (threading.Lock() if arg == "lock" else n), n + 1

        def query(n, arg):
            return threading.Lock() if arg == "lock" else n

    return LockMaker


class Netsplit:
    """A communication module that drops every message from or to an isolated process (replies to
    clients included); ``Netsplit.set(pids)`` chooses the isolated ones."""

    lock = threading.Lock()
    isolated: frozenset = frozenset()

    @classmethod
    def set(cls, pids: Any) -> None:
        with cls.lock:
            cls.isolated = frozenset(pids)

    @classmethod
    def _reachable(cls, to: Any) -> bool:
        isolated = cls.isolated
        return nodes.self() not in isolated and to not in isolated

    @classmethod
    def cast(cls, server: Any, msg: Any) -> None:
        if cls._reachable(server):
            nodes.gen_statem.cast(server, msg)

    @classmethod
    def reply(cls, from_: Any, reply: Any) -> None:
        if cls._reachable(from_[0]):
            nodes.gen_statem.reply(from_, reply)


# How long a test waits for a condition by default. Generous: the poll returns as soon as the
# condition holds, so a passing test is no slower, and on a machine loaded by other work (two
# test suites at once on 2 cores) a netsplit once took more than 5 s to show in status.
WAIT_S = 15.0


def wait_until(pred: Callable[[], Any], timeout: float = WAIT_S, interval: float = 0.005,
               what: str = "") -> Any:
    """Poll ``pred`` until it is truthy (its value is returned); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


def state_of(member: Any) -> tuple[str, Any]:
    return nodes.sys.get_state(member)


def state_name(member: Any) -> str:
    return state_of(member)[0]


def wait_until_member_change_completes(leader: Any, timeout: float = WAIT_S) -> None:
    def done() -> bool:
        name, s = state_of(leader)
        return (
            name == "leader"
            and not s.members.uncommitted_membership_change
            and not s.members.pending_leader_change
        )

    wait_until(done, timeout, what="membership change to complete")


def wait_until_state_name(member: Any, name: str, timeout: float = WAIT_S) -> None:
    wait_until(lambda: state_name(member) == name, timeout, what=f"{member} to become {name}")


def wait_until_someone_is_leader(members: list, timeout: float = WAIT_S) -> Any:
    def find() -> Any:
        for m in members:
            try:
                if state_name(m) == "leader":
                    return m
            except nodes.Exit:
                pass
        return None

    return wait_until(find, timeout, what="a leader to be elected")


def receive_matching(pred: Callable[[Any], bool], timeout_ms: int) -> Any:
    """The first message in the test process's mailbox with ``pred`` true, else None after ``timeout_ms``."""
    try:
        return nodes.receive(timeout=timeout_ms, match=pred)
    except TimeoutError:
        return None


class Cluster:
    """Starts members for one test and kills the survivors at teardown."""

    def __init__(self) -> None:
        self.started: list = []

    def start(self, group_info: tuple, **kw: Any) -> tuple:
        r = RaftedValue.start_link(group_info, **kw)
        if r[0] == "ok":
            self.started.append(r[1])
        return r

    def new_leader(self, config: rafted.Config = CONF, **kw: Any) -> Any:
        ok, pid = self.start(("create_new_consensus_group", config), **kw)
        assert ok == "ok", pid
        return pid

    def add_follower(self, leader: Any, name: str | None = None, wait: bool = True) -> Any:
        ok, pid = self.start(("join_existing_consensus_group", [leader]), name=name)
        assert ok == "ok", pid
        if wait:
            wait_until_member_change_completes(leader)
            # and until the leader has heard from it: a removal right after could otherwise
            # (rightly) be refused as will_break_quorum
            wait_until(
                lambda: pid not in RaftedValue.status(leader)["unresponsive_followers"],
                what="the leader to hear from the new follower",
            )
        return pid

    def make(self, n_followers: int, config: rafted.Config = CONF) -> tuple[Any, list]:
        leader = self.new_leader(config)
        return leader, [self.add_follower(leader) for _ in range(n_followers)]

    def stop(self, member: Any) -> None:
        assert nodes.gen_statem.stop(member) == "ok"

    def teardown(self) -> list:
        for pid in self.started:
            if nodes.is_alive(pid):
                nodes.exit(pid, "kill")
        wait_until(lambda: not any(nodes.is_alive(p) for p in self.started), 5.0, what="members to die")
        crashes = []
        for msg in nodes.flush():
            if type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT" and type(msg[2]) is tuple:
                if msg[2] and msg[2][0] == "exception":
                    crashes.append((msg[1], msg[2][2]))
        return crashes


def with_(config: rafted.Config, **changes: Any) -> rafted.Config:
    return dataclasses.replace(config, **changes)

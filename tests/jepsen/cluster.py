"""A 5-member group, one member per node OS process, that the nemesis can hurt.

:class:`RaftCluster` starts the nodes (through a *launcher*: plain processes on this host,
or processes in network namespaces, see :mod:`jepsen.netsplit`), creates the group, and
offers what the nemesis needs: find the leader, SIGKILL / SIGSTOP / SIGCONT a node, replace
a dead member by a new one on a new node (join, then ``remove_follower`` of the dead pid),
and wait until the group is healthy again.  ``close`` SIGKILLs every node it started, by
PID (stopped ones get SIGCONT first).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import nodes
from rafted import RaftedValue

from .workload import Directory, start_member

GROUP_NAME = "kv"


class NodeProc(Protocol):
    """What the cluster needs from a node OS process (``nodecluster.NodeProcess`` fits)."""

    name: str

    @property
    def pid(self) -> int: ...

    def signal(self, signum: int) -> None: ...

    def kill(self) -> None: ...

    def alive(self) -> bool: ...

    def log(self) -> str: ...


class Launcher(Protocol):
    def start_node(self) -> NodeProc: ...

    def close(self) -> None: ...


@dataclass
class Member:
    node: NodeProc
    pid: nodes.Pid
    paused: bool = False
    dead: bool = False


class ClusterError(Exception):
    pass


class RaftCluster:
    def __init__(self, launcher: Launcher, config: Any, size: int = 5,
                 log: Callable[[str], None] = lambda s: None, join_timeout_ms: int = 30_000,
                 on_node: Callable[[str], None] | None = None) -> None:
        self.launcher = launcher
        self.on_node = on_node  # called with each new node's name before its member starts
        self.config = config
        self.size = size
        self.log = log
        self.join_timeout_ms = join_timeout_ms
        self.members: list[Member] = []  # live and dead, in order of creation
        self.directory = Directory()
        self.lock = threading.Lock()
        self.serial = 0

    # -- membership ------------------------------------------------------------------------

    def live(self) -> list[Member]:
        return [m for m in self.members if not m.dead]

    def _publish(self) -> None:
        self.directory.set_members([m.pid for m in self.live()])

    def start(self) -> None:
        first = self.launcher.start_node()
        if self.on_node is not None:
            self.on_node(first.name)
        res = nodes.rpc.call(first.name, start_member, ("create_new_consensus_group", self.config),
                             GROUP_NAME, self.join_timeout_ms, timeout=30_000)
        if res[0] != "ok":
            raise ClusterError(f"cannot create the group on {first.name}: {res!r}")
        self.members.append(Member(first, res[1]))
        self._publish()
        while len(self.live()) < self.size:
            self.add_member()

    def add_member(self) -> Member:
        node = self.launcher.start_node()
        if self.on_node is not None:
            self.on_node(node.name)
        known = [m.pid for m in self.live() if not m.paused]
        res = nodes.rpc.call(node.name, start_member, ("join_existing_consensus_group", known),
                             GROUP_NAME, self.join_timeout_ms, timeout=self.join_timeout_ms + 15_000)
        if res[0] != "ok":
            node.kill()
            raise ClusterError(f"{node.name} could not join: {res!r}\n{node.log()[-3000:]}")
        member = Member(node, res[1])
        with self.lock:
            self.members.append(member)
        self._publish()
        self.log(f"joined {member.pid} on {node.name}")
        return member

    def remove_dead(self, dead: Member, timeout: float = 30.0) -> str:
        """``remove_follower`` the dead member on whoever leads; returns the final answer."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            leader = self.find_leader()
            if leader is not None:
                try:
                    last = RaftedValue.remove_follower(leader, dead.pid)
                except nodes.Exit as e:
                    last = ("exit", e.reason)
                if last == "ok" or last == ("error", "not_member"):
                    return str(last)
            time.sleep(0.1)  # an election or another change is under way: ask again
        raise ClusterError(f"could not remove {dead.pid}: last answer {last!r}")

    # -- observation -----------------------------------------------------------------------

    def status(self, pid: nodes.Pid, timeout: int = 1000) -> dict | None:
        try:
            return RaftedValue.status(pid, timeout)
        except nodes.Exit:
            return None

    def find_leader(self) -> nodes.Pid | None:
        """The reachable member that says it leads, with the highest term."""
        best: tuple[int, nodes.Pid] | None = None
        for m in self.live():
            if m.paused:
                continue
            st = self.status(m.pid)
            if st is not None and st["state_name"] == "leader":
                if best is None or st["current_term"] > best[0]:
                    best = (st["current_term"], m.pid)
        if best is not None:
            self.directory.leader = best[1]
            return best[1]
        return None

    def leaders(self) -> list[tuple[str, int]]:
        """(node, term) of every reachable live member that believes it leads."""
        out = []
        for m in self.live():
            if m.paused:
                continue
            st = self.status(m.pid, 500)
            if st is not None and st["state_name"] == "leader":
                out.append((m.node.name, st["current_term"]))
        return out

    def healthy(self) -> bool:
        """A leader whose membership is exactly the live members, all of them responsive."""
        leader = self.find_leader()
        if leader is None:
            return False
        st = self.status(leader)
        if st is None or st["state_name"] != "leader":
            return False
        return set(st["members"]) == {m.pid for m in self.live()} and not st["unresponsive_followers"]

    def wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            time.sleep(0.1)
        return False

    def member_of(self, pid: nodes.Pid) -> Member | None:
        for m in self.members:
            if m.pid == pid:
                return m
        return None

    # -- faults ----------------------------------------------------------------------------

    def kill(self, member: Member) -> None:
        member.node.signal(signal.SIGKILL)
        member.dead = True
        member.paused = False
        self._publish()
        if member.node.name in nodes.list_nodes():
            nodes.disconnect(member.node.name)

    def pause(self, members: list[Member]) -> None:
        for m in members:
            m.paused = True
            m.node.signal(signal.SIGSTOP)

    def resume(self, members: list[Member]) -> None:
        for m in members:
            if not m.dead:
                m.node.signal(signal.SIGCONT)
            m.paused = False

    # -- the end ---------------------------------------------------------------------------

    def values(self, timeout: int = 2000) -> dict[str, Any]:
        """Every live member's (possibly stale) whole map, by node name."""
        out: dict[str, Any] = {}
        for m in self.live():
            res = RaftedValue.query_non_leader(m.pid, ("all",), timeout=timeout)
            out[m.node.name] = res[1] if res[0] == "ok" else res
        return out

    def close(self) -> None:
        for m in self.members:
            try:
                m.node.signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            m.node.kill()
        self.launcher.close()

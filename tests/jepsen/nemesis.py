"""The nemesis: one fault at a time, each healed (and the group healthy again) before the next.

Never more than a minority is down at once: a killed member is replaced (a new node
joins, then the dead member is removed with ``remove_follower``) before anything else
happens, pauses and partitions touch at most two of the five nodes and are undone before
the next fault.

Faults (``Fault.kind``):

``kill``
    SIGKILL one node (``target``: ``"leader"`` or ``"follower"``), start a new node, join
    a new member there, remove the dead member.
``pause_leader``
    SIGSTOP the leader's node for ``duration`` s (1.3 to 3.5 election timeouts, so the
    others may elect a new leader meanwhile), then SIGCONT.  The old leader
    wakes up believing it leads: it must neither answer a stale read nor commit.
``pause_leader_cut``
    the same, but the old leader is also cut off from the other nodes (not from the
    clients) from the start of the pause until ``awake`` s after it resumes: it wakes up
    without having heard of the new leader, and only its lease and its quorum check stand
    between it and a stale read.
``pause_minority``
    SIGSTOP ``size`` random nodes (1 or 2) for ``duration`` s, then SIGCONT.
``partition``
    cut the network between a minority of ``size`` nodes (with the leader when
    ``leader_side == "minority"``) and the rest, for ``duration`` s, then heal.
``bridge``
    a non-transitive cut: two pairs of nodes cannot talk to each other, and the fifth node
    talks to both (each pair has a majority with it); the leader is in a pair.
``pause_and_cut``
    two faults at once: SIGSTOP one node (the leader when ``target == "leader"``) and cut
    another one off from the rest, for ``duration`` s; three nodes remain.
``isolate``
    (network namespaces only) take one node's link down for ``duration`` s, then up.

A schedule is a list of faults with the pause before each; :func:`random_schedule` draws
one from a seed, and a schedule saved with a failing history can be replayed as is
(``Fault.from_dict``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from lincheck import Recorder

from .cluster import ClusterError, Member, RaftCluster
from .netsplit import Network

KINDS = ("kill", "pause_leader", "pause_leader_cut", "pause_minority", "partition", "bridge",
         "pause_and_cut")


@dataclass
class Fault:
    kind: str
    gap: float  # seconds of calm before the fault
    duration: float = 0.0
    size: int = 1
    target: str = "follower"  # kill: leader | follower
    awake: float = 0.0  # pause_leader_cut: seconds awake but still cut off
    leader_side: str = "majority"  # partition: the leader's side
    pick: int = 0  # seed for the random choices made when the fault happens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fault:
        return cls(**d)


def random_schedule(seed: int, total_s: float, election_timeout_ms: int,
                    kinds: tuple[str, ...] = KINDS) -> list[Fault]:
    """Faults enough to fill ``total_s`` seconds (they are cut short when the run ends)."""
    rng = random.Random(seed)
    et = election_timeout_ms / 1000
    out: list[Fault] = []
    t = 0.0
    while t < total_s:
        kind = rng.choice(kinds)
        gap = rng.uniform(1.0, 3.0)
        f = Fault(kind, gap, pick=rng.randrange(1 << 30))
        if kind == "kill":
            f.target = rng.choice(("leader", "follower"))
            f.duration = 0.0
        elif kind == "pause_leader":
            # longer than the election timeout: a new leader may be elected meanwhile.  Under
            # 2 * et the old leader wakes up before its quorum check deposes it, and only its
            # lease keeps it from answering stale reads; beyond, the quorum check also fires
            f.duration = rng.uniform(1.3 * et, 3.5 * et)
        elif kind == "pause_leader_cut":
            f.duration = rng.uniform(1.3 * et, 3.5 * et)
            f.awake = rng.uniform(0.3 * et, 1.5 * et)
        elif kind == "pause_minority":
            f.size = rng.choice((1, 2))
            f.duration = rng.uniform(0.5 * et, 4.0 * et)
        elif kind == "partition":
            f.size = rng.choice((1, 2))
            f.leader_side = rng.choice(("minority", "majority"))
            f.duration = rng.uniform(2.0 * et, 6.0 * et)
        elif kind == "bridge":
            f.duration = rng.uniform(2.0 * et, 6.0 * et)
        elif kind == "pause_and_cut":
            f.target = rng.choice(("leader", "follower"))
            f.duration = rng.uniform(2.0 * et, 4.0 * et)
        elif kind == "isolate":
            f.duration = rng.uniform(2.0 * et, 5.0 * et)
        out.append(f)
        t += gap + f.duration + 4.0  # rough recovery time
    return out


class Nemesis(threading.Thread):
    def __init__(self, cluster: RaftCluster, network: Network, recorder: Recorder, schedule: list[Fault],
                 stop: threading.Event, log: Callable[[str], None] = lambda s: None,
                 recovery_timeout: float = 40.0) -> None:
        super().__init__(name="jepsen-nemesis", daemon=True)
        self.cluster = cluster
        self.net = network
        self.rec = recorder
        self.schedule = schedule
        self.stop_event = stop
        self.log = log
        self.recovery_timeout = recovery_timeout
        self.done: list[dict[str, Any]] = []  # faults carried out, with what they hit
        self.unrecovered = 0
        self.error: BaseException | None = None

    def note(self, event: str, **data: Any) -> None:
        self.rec.note(event, **data)
        self.log(f"{event} {data}")

    def run(self) -> None:
        try:
            for fault in self.schedule:
                if self.stop_event.wait(fault.gap):
                    return
                self.apply(fault)
                if not self.recover():
                    return
        except BaseException as e:  # noqa: BLE001 - reported by the campaign
            self.error = e
            self.note("nemesis-error", error=repr(e))

    def recover(self) -> bool:
        t0 = time.monotonic()
        ok = self.cluster.wait_healthy(self.recovery_timeout)
        self.note("healthy" if ok else "unhealthy", after_s=round(time.monotonic() - t0, 2))
        if not ok:
            self.unrecovered += 1
        return ok

    # -- faults ----------------------------------------------------------------------------

    def apply(self, f: Fault) -> None:
        rng = random.Random(f.pick)
        live = [m for m in self.cluster.live() if not m.paused]
        leader_pid = self.cluster.find_leader()
        leader = self.cluster.member_of(leader_pid) if leader_pid is not None else None
        followers = [m for m in live if m is not leader]
        record: dict[str, Any] = {"fault": f.to_dict(), "leader": _name(leader)}
        if f.kind == "kill":
            victim = leader if (f.target == "leader" and leader is not None) else rng.choice(followers)
            record["victim"] = victim.node.name
            self.kill_and_replace(victim)
        elif f.kind == "pause_leader":
            if leader is None:
                self.note("skip", fault=f.kind, why="no leader")
                return
            record["victim"] = leader.node.name
            self.pause(f, [leader])
        elif f.kind == "pause_leader_cut":
            if leader is None:
                self.note("skip", fault=f.kind, why="no leader")
                return
            record["victim"] = leader.node.name
            self.pause_leader_cut(f, leader, followers)
        elif f.kind == "pause_minority":
            victims = rng.sample(live, min(f.size, len(live) // 2))
            record["victims"] = [m.node.name for m in victims]
            self.pause(f, victims)
        elif f.kind == "partition":
            minority = self.pick_minority(rng, f.size, leader, followers, f.leader_side)
            majority = [m for m in live if m not in minority]
            record["minority"] = [m.node.name for m in minority]
            self.partition(f, minority, majority)
        elif f.kind == "bridge":
            if leader is None or len(live) < 5:
                self.note("skip", fault=f.kind, why="no leader or fewer than 5 members")
                return
            others = rng.sample(followers, len(followers))
            bridge, side_a, side_b = others[0], [leader, others[1]], others[2:4]
            record["bridge"] = bridge.node.name
            record["sides"] = [[m.node.name for m in side_a], [m.node.name for m in side_b]]
            self.partition(f, side_a, side_b)
        elif f.kind == "pause_and_cut":
            paused = leader if (f.target == "leader" and leader is not None) else rng.choice(followers)
            cut = rng.choice([m for m in live if m is not paused])
            rest = [m for m in live if m is not paused and m is not cut]
            record["paused"], record["cut"] = paused.node.name, cut.node.name
            self.pause_and_cut(f, paused, cut, rest)
        elif f.kind == "isolate":
            victim = rng.choice(live)
            record["victim"] = victim.node.name
            self.isolate(f, victim)
        else:
            raise ValueError(f"unknown fault {f.kind!r}")
        self.done.append(record)

    @staticmethod
    def pick_minority(rng: random.Random, size: int, leader: Member | None, followers: list[Member],
                      leader_side: str) -> list[Member]:
        size = min(size, (len(followers) + (leader is not None)) // 2)
        if leader is not None and leader_side == "minority":
            return [leader, *rng.sample(followers, size - 1)]
        return rng.sample(followers, size)

    def kill_and_replace(self, victim: Member) -> None:
        self.note("kill", node=victim.node.name, member=str(victim.pid))
        self.cluster.kill(victim)
        new = self.cluster.add_member()
        self.note("joined", node=new.node.name, member=str(new.pid))
        answer = self.cluster.remove_dead(victim)
        self.note("removed", member=str(victim.pid), answer=answer)

    def pause(self, f: Fault, victims: list[Member]) -> None:
        names = [m.node.name for m in victims]
        self.note("pause", nodes=names, kind=f.kind, seconds=round(f.duration, 2))
        self.cluster.pause(victims)
        try:
            self.stop_event.wait(f.duration)  # the fault lasts this long (time passing is the point)
            self.note("during", leaders=self.cluster.leaders())
        finally:
            self.cluster.resume(victims)
            self.note("resume", nodes=names)

    def partition(self, f: Fault, minority: list[Member], majority: list[Member]) -> None:
        a = [m.node.name for m in minority]
        b = [m.node.name for m in majority]
        self.note(f.kind, side_a=a, side_b=b, seconds=round(f.duration, 2), via=self.net.kind)
        try:
            self.net.cut(a, b)
            self.stop_event.wait(f.duration)
            self.note("during", leaders=self.cluster.leaders())
        finally:
            self.net.heal()
            self.note("heal", via=self.net.kind)

    def pause_leader_cut(self, f: Fault, leader: Member, others: list[Member]) -> None:
        name = leader.node.name
        self.note("pause_leader_cut", node=name, seconds=round(f.duration, 2), awake=round(f.awake, 2),
                  via=self.net.kind)
        try:
            self.net.cut([name], [m.node.name for m in others])  # while it still answers the switch
            self.cluster.pause([leader])
            try:
                self.stop_event.wait(f.duration)
                self.note("during", leaders=self.cluster.leaders())
            finally:
                self.cluster.resume([leader])
                self.note("resume", nodes=[name])
            self.stop_event.wait(f.awake)  # awake, cut off from the group, reachable by clients
        finally:
            self.net.heal()
            self.note("heal", via=self.net.kind)

    def pause_and_cut(self, f: Fault, paused: Member, cut: Member, rest: list[Member]) -> None:
        others = [paused.node.name, *(m.node.name for m in rest)]
        self.note("pause_and_cut", paused=paused.node.name, cut=cut.node.name, seconds=round(f.duration, 2),
                  via=self.net.kind)
        try:
            self.net.cut([cut.node.name], others)  # while every node still answers the switch
            self.cluster.pause([paused])
            try:
                self.stop_event.wait(f.duration)
                self.note("during", leaders=self.cluster.leaders())
            finally:
                self.cluster.resume([paused])
                self.note("resume", nodes=[paused.node.name])
        finally:
            self.net.heal()
            self.note("heal", via=self.net.kind)

    def isolate(self, f: Fault, victim: Member) -> None:
        self.note("isolate", node=victim.node.name, seconds=round(f.duration, 2), via=self.net.kind)
        try:
            self.net.isolate(victim.node.name)
            self.stop_event.wait(f.duration)
            self.note("during", leaders=self.cluster.leaders())
        finally:
            self.net.heal()
            self.note("heal", via=self.net.kind)


def _name(m: Member | None) -> str | None:
    return None if m is None else m.node.name


__all__ = ["Fault", "Nemesis", "random_schedule", "KINDS", "ClusterError"]

"""Crash safety: persisting members on real node OS processes killed with SIGKILL.

Clients in this process stream commands at a member on a node process; the node is
SIGKILLed at random moments (and, deterministically, at named points inside the
persistence layer: mid-entry, mid-snapshot, before a rename, ...), restarted from its
directory, and every command that was acknowledged must be in the recovered value.
Finally a whole persisting group is killed at once and restored from the most advanced
directory. The data module is defined inside a function, so it travels by value (as a
class typed into a shell would) inside the config and the snapshot files.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import nodecluster
import pytest
from rafted_support import make_bag

import nodes
import rafted
from rafted import RaftedValue
from rafted import persistence as P

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(240)]

NAME = "bag"
RANDOM_KILLS = 20
SEED = int(os.environ.get("RAFTED_CRASH_SEED", random.randrange(1 << 30)))


def bag_config() -> rafted.Config:
    return RaftedValue.make_config(make_bag(), heartbeat_timeout=50, election_timeout=500,
                                   max_retained_command_results=50)


def _make_start_member() -> Any:
    def start_member(group_info: Any, dir: str, factor: float) -> Any:
        """Runs on the node (by rpc, by value: this module is not there): a member that outlives
        the rpc worker."""
        import rafted as r

        return r.RaftedValue.start_link(group_info, name="bag", persistence_dir=dir,
                                        log_file_expansion_factor=factor, log_file_min_size=0)

    return start_member


start_member = _make_start_member()


class Clients:
    """``n`` client threads sending unique values until a command fails (their member died)."""

    def __init__(self, server: Any, n: int, counter: itertools.count) -> None:
        self.server = server
        self.counter = counter
        self.lock = threading.Lock()
        self.attempted: set[int] = set()
        self.acked: set[int] = set()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                v = next(self.counter)
                self.attempted.add(v)
            r = RaftedValue.command(self.server, v, timeout=5000)
            if r[0] != "ok":
                return
            with self.lock:
                self.acked.add(v)

    def n_acked(self) -> int:
        with self.lock:
            return len(self.acked)

    def join(self, timeout: float = 20.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a client is stuck"


def wait_until(pred: Any, timeout: float, what: str) -> Any:
    return nodecluster.wait_until(pred, timeout, what, interval=0.005)


class History:
    """What clients were told across rounds, and checks of a recovered value against it."""

    def __init__(self) -> None:
        self.attempted: set[int] = set()
        self.acked: set[int] = set()
        self.counter = itertools.count()

    def add(self, clients: Clients) -> None:
        self.attempted |= clients.attempted
        self.acked |= clients.acked

    def check(self, recovered: tuple, where: str) -> None:
        got = set(recovered)
        assert len(got) == len(recovered), f"{where}: a command was applied twice"
        lost = self.acked - got
        assert not lost, f"{where}: {len(lost)} acknowledged commands lost, e.g. {sorted(lost)[:10]}"
        phantom = got - self.attempted
        assert not phantom, f"{where}: values nobody sent: {sorted(phantom)[:10]}"


def recover(node_cluster: Any, dir: str, history: History, factor: float, env: dict | None = None) -> Any:
    """A fresh node, a member recovered from ``dir`` on it (checked against ``history``)."""
    node = node_cluster.start_node(env=env)
    r = nodes.rpc.call(node.name, start_member, ("create_new_consensus_group", bag_config()), dir, factor,
                       timeout=60_000)
    assert r[0] == "ok", f"recovery from {dir} failed: {r}\n{node.log()}"
    server = (NAME, node.name)
    ok, value = RaftedValue.query(server, None, timeout=10_000)
    assert ok == "ok", value
    history.check(value, f"recovered from {dir}")
    return node, server, value


def test_sigkill_at_random_moments_loses_no_acknowledged_command(node_cluster: Any, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    d = str(tmp_path / "member")
    history = History()
    node = node_cluster.start_node()
    r = nodes.rpc.call(node.name, start_member, ("create_new_consensus_group", bag_config()), d, 1.0,
                       timeout=30_000)
    assert r[0] == "ok", r
    server = (NAME, node.name)
    kills = []
    seen: dict[str, int] = {}
    started = time.monotonic()
    for k in range(RANDOM_KILLS):
        clients = Clients(server, rng.choice([1, 4, 16]), history.counter)
        target = clients.n_acked() + rng.randrange(1, 120)
        wait_until(lambda c=clients, t=target: c.n_acked() >= t, 30, f"round {k}: {target} acknowledged")
        node.kill()  # SIGKILL, whatever the member (or its snapshot writer) is doing
        clients.join()
        history.add(clients)
        kills.append(len(clients.acked))
        for what in found_after_a_crash(d):
            seen[what] = seen.get(what, 0) + 1
        node, server, value = recover(node_cluster, d, history, 1.0)
    elapsed = time.monotonic() - started
    snapshots = len(P.list_snapshot_files(d))
    print(f"\ncrash test (seed {SEED}): {len(kills)} SIGKILLs in {elapsed:.1f} s, "
          f"{len(history.acked)} commands acknowledged, {len(history.attempted)} attempted, "
          f"{len(value)} recovered; {snapshots} snapshot files kept; found after the kills: {seen}")
    assert len(history.acked) >= RANDOM_KILLS


def found_after_a_crash(dir: str) -> list[str]:
    """What a kill left behind: a torn final write, a snapshot being written, one not yet cleaned."""
    found = []
    names = os.listdir(dir)
    if any(n.endswith(".tmp") for n in names):
        found.append("snapshot temp file")
    if len(P.list_snapshot_files(dir)) > 2:
        found.append("obsolete snapshot")
    first, newest = P.list_log_files(dir)[-1]
    if os.path.getsize(newest) == 0:
        found.append("empty new log file")
    elif P.read_log_file(newest, allow_torn_tail=True, first_index=first).torn_at is not None:
        found.append("torn final entry")
    return found


# (crash point, how many times it is passed before the process kills itself)
CRASH_POINTS = [
    ("log_torn_write", 7),  # half of a batch of entries written
    ("log_before_fsync", 5),  # a batch written, not synced
    ("snapshot_torn_write", 1),  # half of a compaction snapshot's temporary file
    ("snapshot_before_rename", 1),
    ("snapshot_before_dir_fsync", 1),
    ("log_created", 2),  # a new log file created, the directory not synced
    ("cleanup", 1),  # deleting an obsolete snapshot
]


def test_sigkill_inside_the_persistence_layer_loses_no_acknowledged_command(
    node_cluster: Any, tmp_path: Path
) -> None:
    d = str(tmp_path / "member")
    history = History()
    node = node_cluster.start_node()
    r = nodes.rpc.call(node.name, start_member, ("create_new_consensus_group", bag_config()), d, 0.5,
                       timeout=30_000)
    assert r[0] == "ok", r
    clients = Clients((NAME, node.name), 4, history.counter)
    wait_until(lambda: clients.n_acked() >= 100, 30, "a history with snapshots")
    node.kill()
    clients.join()
    history.add(clients)
    for point, n in CRASH_POINTS:
        node, server, _ = recover(node_cluster, d, history, 0.5, env={"RAFTED_CRASH_POINTS": f"{point}:{n}"})
        clients = Clients(server, 4, history.counter)
        # the node kills itself at the crash point
        wait_until(lambda n=node: not n.alive(), 30, f"the node to crash at {point}")
        assert node.popen.returncode == -signal.SIGKILL, f"{point}: {node.popen.returncode}\n{node.log()}"
        clients.join()
        history.add(clients)
    _, _, value = recover(node_cluster, d, history, 0.5)
    print(f"\ncrash points: {len(CRASH_POINTS)} kills inside the persistence layer, "
          f"{len(history.acked)} commands acknowledged, {len(value)} recovered")


def test_a_whole_persisting_group_killed_at_once_loses_no_acknowledged_command(
    node_cluster: Any, tmp_path: Path
) -> None:
    history = History()
    leader_dir = str(tmp_path / "first")
    leader_node = node_cluster.start_node()
    r = nodes.rpc.call(leader_node.name, start_member, ("create_new_consensus_group", bag_config()),
                       leader_dir, 2.0, timeout=30_000)
    assert r[0] == "ok", r
    for round_ in range(2):
        # two persisting followers join; then every node process is killed at once
        leader = (NAME, leader_node.name)
        followers = [node_cluster.start_node() for _ in range(2)]
        dirs = [leader_dir, *(str(tmp_path / f"round{round_}-f{k}") for k in range(2))]
        for node, d in zip(followers, dirs[1:], strict=True):
            r = nodes.rpc.call(node.name, start_member, ("join_existing_consensus_group", [leader]), d, 2.0,
                               timeout=30_000)
            assert r[0] == "ok", r
        clients = Clients(leader, 16, history.counter)
        wait_until(lambda c=clients: c.n_acked() >= 300, 60, "acknowledged commands")
        nodes_of_group = [leader_node, *followers]
        for node in nodes_of_group:
            os.kill(node.pid, signal.SIGKILL)
        for node in nodes_of_group:
            node.kill()  # reaped
        clients.join()
        history.add(clients)
        # restore from the most advanced log (the highest last (term, index)), as an operator would
        leader_dir = max(dirs, key=RaftedValue.read_last_log_term_and_index)
        leader_node, _, value = recover(node_cluster, leader_dir, history, 2.0)
        print(f"\nwhole group killed at once, round {round_}: restored {len(value)} commands from "
              f"{Path(leader_dir).name}; {len(history.acked)} acknowledged so far")


def test_a_directory_in_use_by_another_os_process_is_refused_until_that_process_dies(
    node_cluster: Any, tmp_path: Path
) -> None:
    d = str(tmp_path / "member")
    node = node_cluster.start_node()
    r = nodes.rpc.call(node.name, start_member, ("create_new_consensus_group", bag_config()), d, 2.0,
                       timeout=30_000)
    assert r[0] == "ok", r
    server = (NAME, node.name)
    for k in range(5):
        assert RaftedValue.command(server, k, timeout=10_000)[0] == "ok"
    # a member of this node (another OS process) on the same directory is refused
    r = RaftedValue.start_link(("create_new_consensus_group", bag_config()), persistence_dir=d)
    assert r[0] == "error" and r[1][0] == "persistence_error", r
    assert "in use by a member of another OS process" in str(r[1][1]) and d in str(r[1][1]), r
    assert RaftedValue.command(server, 5, timeout=10_000)[0] == "ok"  # the holder goes on
    node.kill()  # SIGKILL: the kernel drops its lock
    r = RaftedValue.start_link(("create_new_consensus_group", bag_config()), persistence_dir=d)
    assert r[0] == "ok", r
    try:
        assert sorted(RaftedValue.query(r[1], None)[1]) == list(range(6))
    finally:
        nodes.gen_statem.stop(r[1])


def test_a_member_whose_start_fails_lets_go_of_its_directory_at_once(
    node_cluster: Any, tmp_path: Path
) -> None:
    # a data module whose new() raises fails the start with an exception, not a persistence
    # error: the directory lock must not stay with this OS process until some later member here
    # takes it over, or another OS process would be refused
    class Broken(rafted.Data):
        def new():  # type: ignore[misc]
            raise RuntimeError("no value today")

        def command(data, arg):  # type: ignore[no-untyped-def]
            return None, data

        def query(data, arg):  # type: ignore[no-untyped-def]
            return data

    d = str(tmp_path / "member")
    nodes.process_flag("trap_exit", True)
    r = RaftedValue.start_link(("create_new_consensus_group", RaftedValue.make_config(Broken)),
                               persistence_dir=d)
    assert r[0] == "error", r
    node = node_cluster.start_node()
    r = nodes.rpc.call(node.name, start_member, ("create_new_consensus_group", bag_config()), d, 2.0,
                       timeout=30_000)
    assert r[0] == "ok", f"{r}\n{node.log()}"

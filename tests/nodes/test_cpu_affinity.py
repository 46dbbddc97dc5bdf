"""``$NODES_CPU``: a node's runtime threads kept on chosen CPUs, ZeroMQ's I/O thread left free."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import nodecluster
import pytest

import nodes

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(60)]

needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and at least two usable CPUs")


class IdleCpuWatch:
    """Whether, while a test waited for a hold to move, some other CPU had room for it.

    A hold moves only to a CPU clearly less busy than its own. When other programs keep every
    CPU of this machine busy, staying is right, and a test that waits for a move is skipped
    instead of failed: it fails only if most of its wait had a CPU at most ``busy_below`` busy.
    """

    def __init__(self, busy_below: float) -> None:
        self.busy_below = busy_below
        self.windows = self.roomy = 0
        self.last = (time.monotonic(), self._sample())

    @staticmethod
    def _sample() -> dict[int, tuple[int, int]]:
        per_cpu = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    fields = [int(x) for x in line.split()[1:8]]
                    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
                    per_cpu[int(line.split()[0][3:])] = (busy, sum(fields))
        return per_cpu

    def look(self, held: int) -> None:
        t0, before = self.last
        if time.monotonic() - t0 < 0.5:
            return
        now = self._sample()
        self.last = (time.monotonic(), now)
        fractions = [(now[c][0] - before[c][0]) / max(1, now[c][1] - before[c][1])
                     for c in now if c != held and c in before and c in os.sched_getaffinity(0)]
        self.windows += 1
        self.roomy += any(f <= self.busy_below for f in fractions)

    def skip_unless_there_was_room(self) -> None:
        if self.roomy * 2 < self.windows:
            pytest.skip(f"other programs kept this machine's CPUs busy ({self.roomy} of {self.windows} "
                        "half-second windows had room): nowhere better to move")


@needs_two_cpus
def test_runtime_threads_stay_on_nodes_cpu_and_zeromq_stays_free(node_cluster) -> None:
    def affinities() -> dict[str, object]:
        """Run in a process of the peer (a local function: it travels by value)."""
        zmq_threads = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("ZMQbg/IO"):
                    zmq_threads.append(sorted(os.sched_getaffinity(int(tid))))
        return {"process_thread": sorted(os.sched_getaffinity(0)), "zmq_io": zmq_threads}

    cpu = max(os.sched_getaffinity(0))
    peer = node_cluster.start_node(env={"NODES_CPU": str(cpu)})
    # rpc runs the function in a process (a runtime thread) of the peer node
    seen = nodes.rpc.call(peer.name, affinities)
    assert seen["process_thread"] == [cpu]
    assert seen["zmq_io"] and all(len(cpus) > 1 for cpus in seen["zmq_io"]), seen
    # and it still works as a node
    assert nodes.rpc.call(peer.name, nodes.node) == peer.name


def test_a_bad_nodes_cpu_is_refused_with_a_clear_error() -> None:
    result = subprocess.run([sys.executable, "-c", "import nodes"], env={**os.environ, "NODES_CPU": "first"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "NODES_CPU must be CPU numbers like '0' or '0,1', got 'first'" in result.stderr


@needs_two_cpus
def test_a_held_cpu_keeps_every_process_thread_on_it_until_the_holder_exits(node_cluster) -> None:
    f = peer_functions()

    def _hold_scenario() -> dict[str, object]:
        """Run in a process of the peer (a local function: it travels by value)."""
        import nodes as n

        def probe() -> None:
            # answers each ("cpus", from) with the CPUs its own thread may run on
            while True:
                tag, sender = n.receive()
                if tag == "stop":
                    return
                n.send(sender, ("cpus", sorted(os.sched_getaffinity(0))))

        def ask(pid: n.Pid) -> list[int]:
            n.send(pid, ("cpus", n.self()))
            return n.receive(5000, lambda m: type(m) is tuple and m[0] == "cpus")[1]

        def holder(parent: n.Pid) -> None:
            n.send(parent, ("held", n.hold_one_cpu(True), sorted(os.sched_getaffinity(0))))
            n.receive(timeout=None, match=lambda m: m == "let go")

        before = n.spawn(probe)
        out: dict[str, object] = {"everywhere": sorted(os.sched_getaffinity(0)), "probe_before": ask(before)}
        h = n.spawn(holder, n.self())
        _, out["held"], out["holder_cpus"] = n.receive(5000, lambda m: type(m) is tuple and m[0] == "held")
        out["probe_during"] = ask(before)
        later = n.spawn(probe)
        out["later_during"] = ask(later)
        out.update(f.zmq_and_main_cpus())
        ref = n.monitor(h)
        n.send(h, "let go")
        n.receive(5000, lambda m: type(m) is tuple and m[0] == "DOWN" and m[1] == ref)
        out["probe_after"] = ask(before)
        out["later_after"] = ask(later)
        for pid in (before, later):
            n.send(pid, ("stop", None))
        return out

    # the watcher stays out of it: on a busy machine it might move the hold between two looks
    peer = node_cluster.start_node(env={"NODES_HOLD_CPU_WATCH": "0"})
    seen = nodes.rpc.call(peer.name, _hold_scenario, timeout=30_000)
    everywhere = seen["everywhere"]
    assert len(everywhere) > 1 and seen["probe_before"] == everywhere
    assert seen["held"] is True
    cpus = seen["holder_cpus"]
    assert len(cpus) == 1 and cpus[0] in everywhere, seen
    # processes that were running and processes started during the hold: on the held CPU
    assert seen["probe_during"] == cpus and seen["later_during"] == cpus, seen
    # ZeroMQ's I/O thread and the node's main thread (not a process) stay free
    assert seen["zmq"] == everywhere and seen["main"] == everywhere, seen
    # the holder's exit ends the hold: every process thread may use every CPU again
    assert seen["probe_after"] == everywhere and seen["later_after"] == everywhere, seen


def test_hold_one_cpu_gives_way_to_nodes_cpu_and_to_nodes_hold_cpu_0(node_cluster) -> None:
    def hold_and_look() -> tuple[bool, list[int]]:
        return nodes.hold_one_cpu(True), sorted(os.sched_getaffinity(0))

    everywhere = sorted(os.sched_getaffinity(0))
    off = node_cluster.start_node(env={"NODES_HOLD_CPU": "0"})
    assert nodes.rpc.call(off.name, hold_and_look) == (False, everywhere)
    cpu = max(everywhere)
    chosen = node_cluster.start_node(env={"NODES_CPU": str(cpu)})
    assert nodes.rpc.call(chosen.name, hold_and_look) == (False, [cpu])


def test_hold_one_cpu_takes_a_bool() -> None:
    with pytest.raises(TypeError, match="hold_one_cpu: expected True or False, got 1"):
        nodes.hold_one_cpu(1)  # type: ignore[arg-type]


@needs_two_cpus
def test_a_hold_moves_off_a_cpu_that_another_program_keeps_busy(node_cluster) -> None:
    def hold_forever() -> None:
        nodes.hold_one_cpu(True)
        nodes.receive()

    def process_cpus() -> list[int]:
        return sorted(os.sched_getaffinity(0))  # rpc runs this in a process of the peer

    peer = node_cluster.start_node()
    nodes.rpc.call(peer.name, nodes.spawn, hold_forever)
    held = nodes.rpc.call(peer.name, process_cpus)
    assert len(held) == 1
    # a busy loop kept on the held CPU: another program's work there
    burner = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{held[0]}}})\n"
                               "while True:\n    pass\n"])
    try:
        room = IdleCpuWatch(busy_below=0.75)  # the burner's CPU is fully busy: less than this is better

        def moved_cpus() -> list[int] | None:
            cpus = nodes.rpc.call(peer.name, process_cpus)
            room.look(held[0])
            return cpus if cpus != held else None

        try:
            moved = nodecluster.wait_until(moved_cpus, 30, "the hold to leave the busy CPU")
        except AssertionError:
            room.skip_unless_there_was_room()
            raise
        assert len(moved) == 1 and moved[0] in os.sched_getaffinity(0)
    finally:
        burner.kill()
        burner.wait()


@needs_two_cpus
@pytest.mark.timeout(90)
def test_two_busy_nodes_holding_one_cpu_part_and_stay_parted(node_cluster) -> None:
    first = min(os.sched_getaffinity(0))

    def hold_and_spin() -> None:
        os.sched_setaffinity(0, {first})  # both holds begin on the same CPU
        nodes.hold_one_cpu(True)
        while True:  # a busy node: its runtime threads want a whole CPU
            pass

    def process_cpus() -> list[int]:
        return sorted(os.sched_getaffinity(0))

    if len(os.sched_getaffinity(0)) != 2:
        pytest.skip("the parting is checked on exactly two CPUs")
    peers = [node_cluster.start_node() for _ in range(2)]
    for peer in peers:
        nodes.rpc.call(peer.name, nodes.spawn, hold_and_spin)

    def held() -> tuple[int, ...]:
        return tuple(nodes.rpc.call(peer.name, process_cpus, timeout=10_000)[0] for peer in peers)

    # each node sees the other's half of the shared CPU: a move pays only if the other CPU is idle
    room = IdleCpuWatch(busy_below=0.3)

    parted_since: list[float] = []

    def parted_past_any_decision_under_way() -> bool:
        # A watcher that made up its mind while both still shared the CPU may yet move: what
        # holds is the parting that outlasts a decision (a random wait and two short looks).
        room.look(first)
        if len(set(held())) != 2:
            parted_since.clear()
            return False
        if not parted_since:
            parted_since.append(time.monotonic())
        return time.monotonic() - parted_since[0] >= 2.0

    try:
        nodecluster.wait_until(parted_past_any_decision_under_way, 40, "the two nodes to hold different CPUs")
    except AssertionError:
        room.skip_unless_there_was_room()
        raise
    # parted, they stay so: neither sees the other's work on its own CPU any more
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert len(set(held())) == 2
        time.sleep(0.2)  # sampling what the nodes hold while time passes


KEEP_OFF = {"NODES_KEEP_OFF_HELD": "1"}  # the default, said here so that the test does not rely on it


def peer_functions() -> SimpleNamespace:
    """Functions for rpc to run on a peer (made here, so that they travel by value)."""

    def runtime_cpus() -> list[int]:
        # rpc runs this in a new process of the peer: where a process started now may run
        return sorted(os.sched_getaffinity(0))

    def start_probe() -> None:
        def probe() -> None:
            while True:
                _tag, sender = nodes.receive()
                nodes.send(sender, ("cpus", sorted(os.sched_getaffinity(0))))

        nodes.register("probe", nodes.spawn(probe))

    def probe_cpus() -> list[int]:
        # where the peer's long-lived process "probe" may run: moved, not just started so
        nodes.send("probe", ("cpus", nodes.self()))
        return nodes.receive(5000, lambda m: type(m) is tuple and m[0] == "cpus")[1]

    def zmq_and_main_cpus() -> dict[str, list[int]]:
        seen = {"main": sorted(os.sched_getaffinity(os.getpid()))}
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("ZMQbg/IO"):
                    seen["zmq"] = sorted(os.sched_getaffinity(int(tid)))
        return seen

    def looks_at_holds() -> bool:
        from nodes import _sched

        return _sched._board is not None

    def hold_until_told() -> None:
        nodes.register("holder", nodes.self())
        nodes.hold_one_cpu(True)
        nodes.receive(match=lambda m: m == "let go")

    return SimpleNamespace(runtime_cpus=runtime_cpus, start_probe=start_probe, probe_cpus=probe_cpus,
                           zmq_and_main_cpus=zmq_and_main_cpus, looks_at_holds=looks_at_holds,
                           hold_until_told=hold_until_told)


def holder_and_other(node_cluster, f: SimpleNamespace
                     ) -> tuple[nodecluster.NodeProcess, nodecluster.NodeProcess]:
    """A node that holds a CPU and another node, with a probe, of the same port-mapper."""
    # the holder's watcher stays out of it: on a busy machine it might move the hold meanwhile
    holder = node_cluster.start_node(env={**KEEP_OFF, "NODES_HOLD_CPU_WATCH": "0"})
    other = node_cluster.start_node(env=KEEP_OFF)
    nodes.rpc.call(other.name, f.start_probe)
    nodes.rpc.call(holder.name, nodes.spawn, f.hold_until_told)
    return holder, other


@needs_two_cpus
def test_nodes_of_one_port_mapper_keep_off_the_cpu_another_one_holds(node_cluster) -> None:
    f = peer_functions()
    everywhere = sorted(os.sched_getaffinity(0))
    unconcerned = node_cluster.start_node(env={"NODES_KEEP_OFF_HELD": "0"})
    nodes.rpc.call(unconcerned.name, f.start_probe)
    leader_like, other = holder_and_other(node_cluster, f)
    held = nodecluster.wait_until(
        lambda: (c := nodes.rpc.call(leader_like.name, f.runtime_cpus)) != everywhere and c, 10,
        "the node to hold a CPU")
    assert len(held) == 1
    rest = [c for c in everywhere if c != held[0]]

    # the other node moves its running processes off the held CPU, and starts new ones off it
    nodecluster.wait_until(lambda: nodes.rpc.call(other.name, f.probe_cpus) == rest, 10,
                           f"the other node's processes to leave CPU {held[0]}")
    assert nodes.rpc.call(other.name, f.runtime_cpus) == rest
    # ZeroMQ's I/O threads and the node's main thread are not the runtime's: they stay free
    assert nodes.rpc.call(other.name, f.zmq_and_main_cpus) == {"main": everywhere, "zmq": everywhere}
    # a node started with NODES_KEEP_OFF_HELD=0 does not look at the holds at all
    assert nodes.rpc.call(unconcerned.name, f.probe_cpus) == everywhere
    assert nodes.rpc.call(unconcerned.name, f.looks_at_holds) is False
    assert nodes.rpc.call(other.name, f.looks_at_holds) is True

    # the hold ends: every CPU again
    nodes.send(("holder", leader_like.name), "let go")
    nodecluster.wait_until(lambda: nodes.rpc.call(other.name, f.probe_cpus) == everywhere, 10,
                           "the other node's processes to use every CPU again")
    assert nodes.rpc.call(other.name, f.runtime_cpus) == everywhere


@needs_two_cpus
def test_a_node_killed_while_holding_stops_counting(node_cluster) -> None:
    f = peer_functions()
    everywhere = sorted(os.sched_getaffinity(0))
    holder, other = holder_and_other(node_cluster, f)
    nodecluster.wait_until(lambda: nodes.rpc.call(other.name, f.probe_cpus) != everywhere, 10,
                           "the other node to keep off the held CPU")
    holder.kill()  # SIGKILL: its entry stays on the board, naming a dead process
    nodecluster.wait_until(lambda: nodes.rpc.call(other.name, f.probe_cpus) == everywhere, 10,
                           "the other node to see that the holder is gone")

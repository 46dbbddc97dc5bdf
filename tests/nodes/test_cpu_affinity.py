"""``$NODES_CPU``: a node's runtime threads kept on chosen CPUs, ZeroMQ's I/O thread left free."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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

        def zmq_and_main() -> dict[str, list[int]]:
            seen = {"main": sorted(os.sched_getaffinity(os.getpid()))}
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/comm") as f:
                    if f.read().startswith("ZMQbg/IO"):
                        seen["zmq"] = sorted(os.sched_getaffinity(int(tid)))
            return seen

        before = n.spawn(probe)
        out: dict[str, object] = {"everywhere": sorted(os.sched_getaffinity(0)), "probe_before": ask(before)}
        h = n.spawn(holder, n.self())
        _, out["held"], out["holder_cpus"] = n.receive(5000, lambda m: type(m) is tuple and m[0] == "held")
        out["probe_during"] = ask(before)
        later = n.spawn(probe)
        out["later_during"] = ask(later)
        out.update(zmq_and_main())
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

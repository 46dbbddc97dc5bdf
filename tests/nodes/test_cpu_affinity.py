"""``$NODES_CPU``: a node's runtime threads kept on chosen CPUs, ZeroMQ's I/O thread left free."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import nodes

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(60)]

needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and at least two usable CPUs")


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

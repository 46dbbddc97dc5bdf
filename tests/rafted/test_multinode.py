"""A consensus group over real node OS processes: the seed README's example, then a node dies.

The data module is defined inside the test (like a class typed into a
shell), so it travels by value inside the config and the snapshots.
"""

from __future__ import annotations

import signal
from typing import Any

import nodecluster
import pytest

import nodes
import rafted
from rafted import RaftedValue

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


def make_queue_with_length() -> Any:
    class QueueWithLength(rafted.Data):
        def new():
            return ((), 0)

        def command(state, arg):
            q, n = state
            if arg == "dequeue":
                return q[0], (q[1:], n - 1)
            _, v = arg  # ("enqueue", v)
            return n, (q + (v,), n + 1)

        def query(state, arg):
            return state[1]

    return QueueWithLength


def find_leader(servers: list) -> Any:
    for s in servers:
        try:
            st = RaftedValue.status(s, 1000)
        except nodes.Exit:
            continue
        if st["state_name"] == "leader":
            return s
    return None


def wait_until(pred: Any, timeout: float, what: str) -> Any:
    return nodecluster.wait_until(pred, timeout, what, interval=0.02)


def test_seed_example_across_three_nodes_and_failover(node_cluster: Any) -> None:
    def start_member(group_info: Any, name: str) -> Any:
        # a local function travels by value (this module is not importable on the nodes)
        import rafted as r

        return r.RaftedValue.start_link(group_info, name=name)

    n1, n2, n3 = (node_cluster.start_node() for _ in range(3))
    config = RaftedValue.make_config(
        make_queue_with_length(),
        heartbeat_timeout=50,
        election_timeout=400,
        election_timeout_clock_drift_margin=100,
    )
    assert nodes.rpc.call(n1.name, start_member, ("create_new_consensus_group", config), "foo")[0] == "ok"
    foo = ("foo", n1.name)
    join = ("join_existing_consensus_group", [foo])
    assert nodes.rpc.call(n2.name, start_member, join, "bar")[0] == "ok"
    assert nodes.rpc.call(n3.name, start_member, join, "baz")[0] == "ok"
    bar, baz = ("bar", n2.name), ("baz", n3.name)

    for i, v in enumerate("abcde"):
        assert RaftedValue.command(foo, ("enqueue", v)) == ("ok", i)
    assert RaftedValue.command(foo, "dequeue") == ("ok", "a")
    assert RaftedValue.command(foo, "dequeue") == ("ok", "b")
    assert RaftedValue.command(foo, ("enqueue", "f")) == ("ok", 3)
    assert RaftedValue.query(foo, "length") == ("ok", 4)
    assert RaftedValue.command(bar, "dequeue") == (
        "error",
        ("not_leader", nodes.rpc.call(n1.name, nodes.whereis, "foo")),
    )
    status = RaftedValue.status(foo)
    assert len(status["members"]) == 3 and {p.node for p in status["members"]} == {n1.name, n2.name, n3.name}
    wait_until(lambda: RaftedValue.query_non_leader(baz, "length") == ("ok", 4), 5, "baz to catch up")

    # the leader's node dies: the others elect a new leader and keep the value
    n1.signal(signal.SIGKILL)
    leader = wait_until(lambda: find_leader([bar, baz]), 10, "a new leader")
    assert RaftedValue.command(leader, "dequeue") == ("ok", "c")
    assert RaftedValue.query(leader, "length") == ("ok", 3)

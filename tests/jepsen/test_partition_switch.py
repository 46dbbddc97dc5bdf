"""The transport's partition switch (``nodes.dist.partition`` / ``heal``) between real nodes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from nodecluster import wait_until

import nodes
from nodes import dist

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(90)]


def _wait(pred: Any, timeout: float, what: str) -> Any:
    return wait_until(pred, timeout, what, interval=0.05)


def _peers(node: str) -> list[str]:
    return nodes.rpc.call(node, nodes.list_nodes, timeout=5000)  # type: ignore[no-any-return]


def _ping(target: str, timeout: int) -> Any:
    """Run on one node: an rpc to ``target`` -> its node name, or the Exit reason."""
    import nodes as n

    try:
        return n.rpc.call(target, n.node, timeout=timeout)
    except n.Exit as e:
        return ("exit", e.reason)


def test_partition_drops_traffic_both_ways_and_heal_reconnects(node_cluster: Any) -> None:
    a, b, c = (node_cluster.start_node() for _ in range(3))
    _wait(lambda: set(_peers(a.name)) >= {b.name, c.name}, 20, "a full mesh")
    assert nodes.rpc.call(a.name, _ping, b.name, 5000) == b.name

    # cut a off from b (both sides), c stays connected to both
    nodes.rpc.call(a.name, dist.partition, [b.name])
    nodes.rpc.call(b.name, dist.partition, [a.name])
    assert nodes.rpc.call(a.name, dist.blocked_nodes) == [b.name]
    _wait(lambda: b.name not in _peers(a.name) and a.name not in _peers(b.name), 20,
          "the a-b connection to die of silence")
    assert nodes.rpc.call(a.name, _ping, b.name, 1500)[0] == "exit"
    assert nodes.rpc.call(b.name, _ping, a.name, 1500)[0] == "exit"
    assert nodes.rpc.call(a.name, nodes.connect, b.name, timeout=15000) is False
    # the rest of the mesh is untouched, and stays cut a while later (no sneaking back in)
    assert nodes.rpc.call(a.name, _ping, c.name, 5000) == c.name
    assert nodes.rpc.call(c.name, _ping, b.name, 5000) == b.name
    time.sleep(1.5)  # a few reconnect attempts' worth of time passing
    assert b.name not in _peers(a.name)
    assert {a.name, b.name} <= set(nodes.list_nodes())

    # heal: the connection comes back by itself (nobody calls connect)
    nodes.rpc.call(a.name, dist.heal)
    nodes.rpc.call(b.name, dist.heal)
    assert nodes.rpc.call(a.name, dist.blocked_nodes) == []
    _wait(lambda: b.name in _peers(a.name) and a.name in _peers(b.name), 20, "a and b to reconnect")
    assert nodes.rpc.call(a.name, _ping, b.name, 5000) == b.name


def test_partition_needs_distribution_and_valid_names(this_node: str) -> None:
    with pytest.raises(ValueError):
        dist.partition(["not-a-node-name"])
    dist.partition([])
    assert dist.blocked_nodes() == []
    dist.heal()

"""Two real nodes: connect, message a remote process, rpc, a monitor that sees the node die."""

from __future__ import annotations

import signal

import pytest

import nodes

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(60)]


def test_connect_send_rpc_and_noconnection(node_cluster) -> None:
    peer = node_cluster.start_node()
    assert peer.name in nodes.list_nodes()
    assert nodes.rpc.call(peer.name, nodes.node) == peer.name
    me = nodes.self()

    def echo() -> None:
        sender, msg = nodes.receive()
        nodes.send(sender, ("echo", msg))

    pid = nodes.rpc.call(peer.name, nodes.spawn, echo)
    assert pid.node == peer.name
    nodes.send(pid, (me, "hello"))
    assert nodes.receive(5000) == ("echo", "hello")
    holder = nodes.rpc.call(peer.name, nodes.spawn, nodes.receive)
    ref = nodes.monitor(holder)
    peer.signal(signal.SIGKILL)
    msg = nodes.receive(10000, lambda m: m[0] == "DOWN")
    assert msg == ("DOWN", ref, "process", holder, "noconnection")

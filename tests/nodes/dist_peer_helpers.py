"""Shared by the distribution tests: starting peers that can import test code, process bodies
that run on peer nodes, and small polling helpers.

Peer nodes import this module (and the test modules) *by name*, as an Erlang node loads the
modules a remote call names: :func:`start_peer` puts ``tests/nodes`` on the peer's
``PYTHONPATH`` (``tests``, for ``nodecluster``, is there already).  Code that must travel by
value instead is written in a ``__main__``-like namespace by the tests themselves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nodecluster

import nodes
from nodes import epmd

HERE = Path(__file__).resolve().parent


def start_peer(cluster: Any, short: str | None = None, *, importable: bool = True,
               env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """``node_cluster.start_node`` with ``tests/nodes`` importable on the peer (unless told not)."""
    child_env = dict(env or {})
    if importable:
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), child_env.get("PYTHONPATH", "")]))
    return cluster.start_node(short, env=child_env, **kwargs)


def wait_registered(short: str, timeout: float = 20.0) -> tuple[int, int]:
    """Wait until node ``short`` is registered with this host's epmd; its ``(port, creation)``."""
    port = int(os.environ["NODES_EPMD_PORT"])
    deadline = time.monotonic() + timeout
    while True:
        found = epmd.lookup("127.0.0.1", short, port)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"node {short!r} did not register with epmd within {timeout} s")
        time.sleep(0.02)


def wait_gone(node_name: str, timeout: float = 10.0) -> None:
    """Wait until ``node_name`` is no longer among our connected nodes."""
    deadline = time.monotonic() + timeout
    while node_name in nodes.list_nodes():
        if time.monotonic() > deadline:
            raise AssertionError(f"{node_name} still connected after {timeout} s")
        time.sleep(0.02)


def wait_until_true(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    return nodecluster.wait_until(predicate, timeout, what, interval=0.02)


def stays(predicate: Callable[[], Any], duration: float) -> bool:
    """True if ``predicate`` holds throughout ``duration`` seconds (an observation window)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.02)
    return bool(predicate())


def is_tuple(m: Any, head: str, n: int | None = None) -> bool:
    return type(m) is tuple and bool(m) and m[0] == head and (n is None or len(m) == n)


# -- process bodies run on peer nodes (imported there by name) -----------------------------------

def echo() -> None:
    """Answer ``(sender, x)`` with ``("echo", x, this node)``; stop on ``"stop"``."""
    while True:
        msg = nodes.receive()
        if msg == "stop":
            return
        sender, payload = msg
        nodes.send(sender, ("echo", payload, nodes.node()))


def spawn_registered(name: str, fn: Callable[..., Any], *args: Any) -> nodes.Pid:
    pid = nodes.spawn(fn, *args)
    nodes.register(name, pid)
    return pid


def forward_all(to: nodes.Pid) -> None:
    """Forward every message to ``to`` as ``("fwd", my pid, msg)``."""
    me = nodes.self()
    while True:
        nodes.send(to, ("fwd", me, nodes.receive()))


def exit_on_message() -> None:
    """Wait for one message and exit with it as the reason."""
    raise nodes.Exit(nodes.receive())


def check_order(report_to: nodes.Pid, n: int) -> None:
    """Receive ``("seq", i)`` n times; report ``("order", received, first out-of-order or None)``."""
    bad = None
    for expected in range(n):
        msg = nodes.receive()
        if bad is None and msg != ("seq", expected):
            bad = (expected, msg)
    nodes.send(report_to, ("order", n, bad))


def spawn_many_then(n: int, fn: Callable[..., Any], *args: Any) -> nodes.Pid:
    """Spawn ``n`` processes that end at once, then ``fn(*args)``: pushes pid ids up."""
    for _ in range(n):
        nodes.spawn(int)
    return nodes.spawn(fn, *args)


def spawn_until_id(target_id: int, fn: Callable[..., Any], *args: Any) -> list[nodes.Pid]:
    """Spawn ``fn(*args)`` processes until one gets pid id ``target_id`` (or one passes it)."""
    pids = []
    while True:
        pid = nodes.spawn(fn, *args)
        pids.append(pid)
        if pid.id >= target_id:
            return pids


# -- the driver of the network-namespace test (runs inside a namespace) -------------------------

def netns_driver(me: str, peers: list[str], partition_cmd: list[str], heal_cmd: list[str],
                 ghost: str) -> dict[str, Any]:
    """Drive nodes in other namespaces from node ``me``; return what it saw (the test asserts).

    ``peers`` are three nodes; the last one is cut off with ``partition_cmd`` and brought back
    with ``heal_cmd`` (subprocess argument lists) to see nodedown and the mesh heal by itself.
    """
    import subprocess

    out: dict[str, Any] = {}
    nodes.start(me)
    first, second, third = peers

    def poll(predicate: Callable[[], Any], timeout: float) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if predicate():
                return round(time.monotonic() - started, 3)
            time.sleep(0.02)
        return None

    out["connect_first"] = poll(lambda: nodes.connect(first), 20.0) is not None
    out["first_connects_second"] = nodes.rpc.call(first, nodes.connect, second, timeout=20_000)
    out["second_connects_third"] = nodes.rpc.call(second, nodes.connect, third, timeout=20_000)
    everyone = {me, *peers}

    def meshed() -> bool:
        if set(nodes.list_nodes()) != everyone - {me}:
            return False
        return all(set(nodes.rpc.call(n, nodes.list_nodes, timeout=5000)) == everyone - {n} for n in peers)

    out["mesh_s"] = poll(meshed, 15.0)
    out["lists"] = {n: nodes.rpc.call(n, nodes.list_nodes, timeout=5000) for n in peers}
    out["names"] = [nodes.rpc.call(n, nodes.node, timeout=5000) for n in peers]
    # messages: to a pid and to a registered name in another namespace
    me_pid = nodes.self()
    echo_pid = nodes.rpc.call(third, spawn_registered, "echo", echo, timeout=5000)
    nodes.send(echo_pid, (me_pid, "by pid"))
    nodes.send(("echo", third), (me_pid, "by name"))
    out["echoes"] = [list(nodes.receive(5000)) for _ in range(2)]
    # rpc from one namespace through another to a third
    out["nested_rpc"] = nodes.rpc.call(first, nodes.rpc.call, third, nodes.node, timeout=10_000)
    # a send to an address where no host answers returns at once
    times = []
    for _ in range(5):
        started = time.perf_counter()
        nodes.send(("x", ghost), "nobody there")
        times.append(time.perf_counter() - started)
    out["ghost_send_max_s"] = max(times)
    out["ghost_connect"] = nodes.connect(ghost)
    # a partition: nodedown within a few ticks, and the mesh heals without anyone connecting
    nodes.monitor_node(third)
    ref = nodes.monitor(echo_pid)
    subprocess.run(partition_cmd, check=True)
    started = time.monotonic()
    try:
        out["nodedown"] = list(nodes.receive(10_000, lambda m: is_tuple(m, "nodedown")))
        out["nodedown_s"] = round(time.monotonic() - started, 3)
        down = nodes.receive(5000, lambda m: is_tuple(m, "DOWN", 5) and m[1] == ref)
        out["down_reason"] = down[4]
    finally:
        subprocess.run(heal_cmd, check=True)
    out["heal_s"] = poll(lambda: third in nodes.list_nodes(), 30.0)
    out["healed_mesh_s"] = poll(meshed, 30.0)
    out["after_heal_rpc"] = nodes.rpc.call(third, nodes.node, timeout=10_000)
    return out

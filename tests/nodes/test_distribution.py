"""Distribution between real node OS processes: connections, messages, remote links and
monitors, incarnations, rpc, gen_statem across nodes, cookies.

The pytest process is a node (``this_node``); peers are ``python -m nodes --noshell`` OS
processes started by ``node_cluster`` and killed by PID after each test.  Peers import this
module and ``dist_peer_helpers`` by name (``tests/nodes`` is on their PYTHONPATH), as an
Erlang node loads the modules a remote call names.  The failure-detection tick is 500 ms
(``NODES_TICK_MS`` set by the harness): a SIGKILLed node is noticed within 3 ticks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
import types
from typing import Any

import pytest

import nodes
from nodes import dist, gen_statem

try:
    from . import dist_peer_helpers as h
    from .process_helpers import check_malformed_node_names_are_wrong_arguments
except ImportError:
    import dist_peer_helpers as h  # type: ignore[no-redef]
    from process_helpers import check_malformed_node_names_are_wrong_arguments

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(60)]

DOWN_BOUND_S = 5.0  # 3 ticks of 500 ms plus generous slack for a loaded machine


def _host() -> str:
    return nodes.node().partition("@")[2]


def down_for(ref: nodes.Ref) -> Any:
    return lambda m: h.is_tuple(m, "DOWN", 5) and m[1] == ref


def rpc(node_name: str, fn: Any, *args: Any) -> Any:
    return nodes.rpc.call(node_name, fn, *args, timeout=10_000)


# -- 1. connections ----------------------------------------------------------------------------

def test_connect_list_nodes_and_unknown_node(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    assert nodes.connect(peer.name) is True
    assert nodes.connect(peer.name) is True  # already connected
    assert peer.name in nodes.list_nodes()
    assert rpc(peer.name, nodes.list_nodes) == [nodes.node()]
    assert nodes.connect(nodes.node()) is True  # oneself
    started = time.monotonic()
    assert nodes.connect(f"nosuchnode@{_host()}") is False
    assert time.monotonic() - started < 5.0
    assert f"nosuchnode@{_host()}" not in nodes.list_nodes()


def test_transitive_connect_makes_a_full_mesh(node_cluster) -> None:
    a = h.start_peer(node_cluster)  # we connect to A only
    b = h.start_peer(node_cluster, connect=False)
    c = h.start_peer(node_cluster, connect=False)
    h.wait_registered(b.name.partition("@")[0])
    h.wait_registered(c.name.partition("@")[0])
    assert b.name not in nodes.list_nodes() and c.name not in nodes.list_nodes()
    assert rpc(a.name, nodes.connect, b.name) is True  # A connects B: we learn B through A
    assert rpc(b.name, nodes.connect, c.name) is True  # B connects C
    everyone = {nodes.node(), a.name, b.name, c.name}

    def meshed() -> bool:
        if set(nodes.list_nodes()) != everyone - {nodes.node()}:
            return False
        return all(set(rpc(n, nodes.list_nodes)) == everyone - {n} for n in (a.name, b.name, c.name))

    h.wait_until_true(meshed, 10.0, "a full mesh of 4 nodes")


def test_disconnect_does_not_reconnect(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    holder = rpc(peer.name, nodes.spawn, h.echo)
    ref = nodes.monitor(holder)
    nodes.monitor_node(peer.name)
    # A round trip with plain messages last: once the answer is here, nothing we sent before is
    # still queued (an rpc.call last would leave its demonitor queued and hit the transport bug
    # of test_a_send_just_before_disconnect_does_not_reconnect).
    nodes.send(holder, (nodes.self(), "sync"))
    assert nodes.receive(5000) == ("echo", "sync", peer.name)
    assert nodes.disconnect(peer.name) is True
    assert peer.name not in nodes.list_nodes()
    # as in Erlang, a disconnect is a lost connection to monitors
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "nodedown")) == ("nodedown", peer.name)
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", holder, "noconnection")
    # no background reconnect: watch for more than 3 ticks and a few retry back-offs
    assert h.stays(lambda: peer.name not in nodes.list_nodes(), 2.5)
    assert nodes.disconnect(peer.name) is False  # nothing left to drop
    assert nodes.connect(peer.name) is True  # an explicit connect still works
    assert rpc(peer.name, nodes.list_nodes) == [nodes.node()]


def test_a_send_just_before_disconnect_does_not_reconnect(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    for i in range(6):
        if i % 2:
            rpc(peer.name, nodes.node)  # ends by sending a demonitor
        else:
            nodes.send(("nobody", peer.name), "just before")  # queued, not yet on the wire
        assert nodes.disconnect(peer.name) is True
        assert h.stays(lambda: peer.name not in nodes.list_nodes(), 0.3)
        assert nodes.connect(peer.name)


def test_monitor_node_reports_nodedown_when_the_node_is_killed(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    other = h.start_peer(node_cluster)
    assert nodes.monitor_node(peer.name) is True
    assert nodes.monitor_node(other.name) is True
    assert nodes.monitor_node(other.name, False) is True  # turned off again: no nodedown for it
    killed_at = time.monotonic()
    peer.signal(signal.SIGKILL)
    assert nodes.receive(int(DOWN_BOUND_S * 1000), lambda m: h.is_tuple(m, "nodedown")) == (
        "nodedown", peer.name)
    assert time.monotonic() - killed_at < DOWN_BOUND_S
    assert peer.name not in nodes.list_nodes()
    other.signal(signal.SIGKILL)
    h.wait_gone(other.name)
    assert nodes.flush() == []
    # monitoring a node that cannot be reached reports it down at once
    nodes.monitor_node(f"ghost@{_host()}")
    assert nodes.receive(5000) == ("nodedown", f"ghost@{_host()}")


# -- 2. messages -------------------------------------------------------------------------------

def test_send_to_remote_pid_and_registered_name(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    me = nodes.self()
    pid = rpc(peer.name, h.spawn_registered, "echo", h.echo)
    assert pid.node == peer.name
    nodes.send(pid, (me, "by pid"))
    assert nodes.receive(5000) == ("echo", "by pid", peer.name)
    nodes.send(("echo", peer.name), (me, "by name"))
    assert nodes.receive(5000) == ("echo", "by name", peer.name)
    # an unregistered remote name: dropped, nothing raised
    assert nodes.send(("nobody", peer.name), "lost") == "lost"
    nodes.send(pid, "stop")


def test_order_of_10000_messages_is_kept(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    n = 10_000
    checker = rpc(peer.name, nodes.spawn, h.check_order, nodes.self(), n)

    def sender() -> None:
        for i in range(n):
            nodes.send(checker, ("seq", i))

    nodes.spawn(sender)
    assert nodes.receive(30_000) == ("order", n, None)


def test_send_to_a_node_not_connected_connects_in_the_background(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    me = nodes.self()
    rpc(peer.name, h.spawn_registered, "echo", h.echo)
    assert nodes.disconnect(peer.name)
    assert peer.name not in nodes.list_nodes()
    started = time.perf_counter()
    nodes.send(("echo", peer.name), (me, "after disconnect"))
    assert time.perf_counter() - started < 0.05
    assert nodes.receive(10_000) == ("echo", "after disconnect", peer.name)
    assert peer.name in nodes.list_nodes()

    # a node we never talked to: the send returns at once, the connection follows
    fresh = h.start_peer(node_cluster, connect=False)
    h.wait_registered(fresh.name.partition("@")[0])
    assert fresh.name not in nodes.list_nodes()
    started = time.perf_counter()
    nodes.send(("nobody", fresh.name), "hello")
    assert time.perf_counter() - started < 0.05
    h.wait_until_true(lambda: fresh.name in nodes.list_nodes(), 10.0, "the background connection")


def test_send_to_unreachable_nodes_returns_at_once(this_node) -> None:
    ghost = f"ghost{os.getpid()}@{_host()}"
    targets: list[Any] = [("x", ghost), nodes.Pid(ghost, 1, 1), ("x", "nohost@127.0.0.9")]
    for dest in targets:
        for _ in range(3):
            started = time.perf_counter()
            assert nodes.send(dest, "msg") == "msg"
            assert time.perf_counter() - started < 0.05, dest
    h.wait_until_true(lambda: ghost not in nodes.list_nodes(), 5.0, "nothing connected")


def test_a_malformed_node_name_is_dropped_by_send_and_refused_by_call(this_node, caplog) -> None:
    check_malformed_node_names_are_wrong_arguments(caplog)


# -- 3. remote links and monitors --------------------------------------------------------------

def test_monitor_remote_pid_down_noconnection_on_sigkill(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    holder = rpc(peer.name, nodes.spawn, nodes.receive)
    ref = nodes.monitor(holder)
    name_ref = nodes.monitor(("rex", peer.name))
    killed_at = time.monotonic()
    peer.signal(signal.SIGKILL)
    assert nodes.receive(int(DOWN_BOUND_S * 1000), down_for(ref)) == (
        "DOWN", ref, "process", holder, "noconnection")
    assert time.monotonic() - killed_at < DOWN_BOUND_S
    assert nodes.receive(1000, down_for(name_ref)) == (
        "DOWN", name_ref, "process", ("rex", peer.name), "noconnection")


def test_remote_link_with_trap_exit_gives_exit_noconnection(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    holder = rpc(peer.name, nodes.spawn, nodes.receive)
    nodes.process_flag("trap_exit", True)
    nodes.link(holder)
    # the link is in place on the remote side before the node dies
    h.wait_until_true(lambda: rpc(peer.name, _links_of, holder) == [nodes.self()], 5.0, "remote link")
    killed_at = time.monotonic()
    peer.signal(signal.SIGKILL)
    msg = nodes.receive(int(DOWN_BOUND_S * 1000), lambda m: h.is_tuple(m, "EXIT", 3))
    assert msg == ("EXIT", holder, "noconnection")
    assert time.monotonic() - killed_at < DOWN_BOUND_S


def _links_of(pid: nodes.Pid) -> list[nodes.Pid]:
    """(runs on the peer) the links of a local process, to know a remote link has arrived."""
    info = nodes.process_info(pid, "links")
    return sorted(info[1]) if info is not None else []


def _spawn_waiters(n: int) -> list[nodes.Pid]:
    """(runs on the peer) ``n`` processes that wait for a message forever."""
    return [nodes.spawn(nodes.receive) for _ in range(n)]


def _move_name(name: str) -> nodes.Pid:
    """(runs on the peer) give ``name`` to a new process that waits forever; its pid."""
    nodes.unregister(name)
    return h.spawn_registered(name, nodes.receive)


def test_a_remote_monitor_by_name_is_released_though_the_name_moved(node_cluster) -> None:
    # as Erlang's: the monitor is on the process that held the name when it was set, and
    # demonitor takes it off that process wherever the name has gone since
    peer = h.start_peer(node_cluster)
    holder = rpc(peer.name, h.spawn_registered, "svc", nodes.receive)
    ref = nodes.monitor(("svc", peer.name))
    h.wait_until_true(lambda: rpc(peer.name, nodes.process_info, holder, "monitored_by")
                      == ("monitored_by", [nodes.self()]), 5.0, "remote monitor")
    second = rpc(peer.name, _move_name, "svc")
    nodes.demonitor(ref)
    h.wait_until_true(lambda: rpc(peer.name, nodes.process_info, holder, "monitored_by")
                      == ("monitored_by", []), 5.0, "remote demonitor")
    assert rpc(peer.name, nodes.process_info, second, "monitored_by") == ("monitored_by", [])
    # and one that stays ends with the process it was set on, not with the name's new holder
    ref = nodes.monitor(("svc", peer.name))
    third = rpc(peer.name, _move_name, "svc")
    rpc(peer.name, nodes.exit, third, "the_name_holder_gone")
    rpc(peer.name, nodes.exit, second, "the_monitored_gone")
    assert nodes.receive(int(DOWN_BOUND_S * 1000), down_for(ref)) == (
        "DOWN", ref, "process", ("svc", peer.name), "the_monitored_gone")
    assert rpc(peer.name, nodes.process_info, holder, "monitored_by") == ("monitored_by", [])


def test_a_node_stopped_by_sigterm_tells_remote_monitors_and_links_shutdown(node_cluster) -> None:
    # A clean stop sends every exit signal, then a bye, then closes the connection. All of
    # it must be read here even when the close comes before this node's I/O thread reads
    # the frames (ZeroMQ once discarded that tail: the last DOWNs said "noconnection").
    nodes.process_flag("trap_exit", True)
    for _ in range(5):  # the race lost the tail in about one stop of four
        _stop_a_peer_holding_watched_processes(node_cluster)


def _stop_a_peer_holding_watched_processes(node_cluster: Any) -> None:
    peer = h.start_peer(node_cluster)
    waiters = rpc(peer.name, _spawn_waiters, 20)
    refs = {nodes.monitor(pid): pid for pid in waiters}
    nodes.link(waiters[0])
    h.wait_until_true(lambda: rpc(peer.name, _links_of, waiters[0]) == [nodes.self()], 5.0,
                      "remote link")  # the monitors went first on the same connection
    peer.signal(signal.SIGTERM)
    assert peer.popen.wait(20) == 0
    downs = [nodes.receive(5000, down_for(ref)) for ref in refs]
    assert downs == [("DOWN", ref, "process", pid, "shutdown") for ref, pid in refs.items()]
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "EXIT", 3)) == ("EXIT", waiters[0], "shutdown")


def _drain() -> None:
    while True:
        nodes.receive()


def _stream_to(sink: nodes.Pid) -> None:
    while True:
        nodes.send(sink, "x")


def _spawn_streamers(n: int) -> list[nodes.Pid]:
    """(runs on the peer) ``n`` processes sending to one sink as fast as they can."""
    sink = nodes.spawn(_drain)
    return [nodes.spawn(_stream_to, sink) for _ in range(n)]


def _all_watched_by_me(node_name: str, pids: list[nodes.Pid]) -> bool:
    watched = ("monitored_by", [nodes.self()])
    return all(rpc(node_name, nodes.process_info, pid, "monitored_by") == watched for pid in pids)


# A --noshell node whose processes tell their deaths slowly when their own thread does it (a
# thread starved of CPU), as a process caught in a send does: what stopping must wait for.
SLOW_TO_TELL = r'''
import sys, threading, time
from nodes import process
from nodes.__main__ import main

told = process._announce_death

def told_late(*args):
    if threading.current_thread() is not threading.main_thread():
        time.sleep(1.5)
    return told(*args)

process._announce_death = told_late
sys.exit(main(["--sname", sys.argv[1], "--noshell"]))
'''


# A --noshell node whose transport thread, once the node starts stopping, is caught between
# the flush of its send queue and the commands of one round: the deaths its main thread tells
# meanwhile, and the stop it posts after them, are both seen there (as a thread preempted at
# that point sees them).
CAUGHT_BETWEEN_FLUSH_AND_STOP = r'''
import sys, time
from nodes import dist, process
from nodes.__main__ import main
from nodes.transport import Transport

stopping = False
run_commands = Transport._run_commands

def late_commands(self):
    if stopping:
        time.sleep(0.5)  # the lock held: every send meanwhile is queued
    return run_commands(self)

shutdown_all = process.shutdown_all

def shutdown_all_caught(*args):
    global stopping
    stopping = True
    dist._transport._post(lambda: None)  # a round with a command: the thread stops in it
    time.sleep(0.1)
    return shutdown_all(*args)

Transport._run_commands = late_commands
process.shutdown_all = shutdown_all_caught
sys.exit(main(["--sname", sys.argv[1], "--noshell"]))
'''


def test_deaths_told_while_the_transport_is_between_its_flush_and_the_stop_still_leave(
        node_cluster, tmp_path) -> None:
    peer = start_script_node(node_cluster, tmp_path, CAUGHT_BETWEEN_FLUSH_AND_STOP, f"caught{os.getpid()}")
    waiters = rpc(peer.name, _spawn_waiters, 5)
    refs = {nodes.monitor(pid): pid for pid in waiters}
    h.wait_until_true(lambda: _all_watched_by_me(peer.name, waiters), 5.0, "remote monitors")
    peer.signal(signal.SIGTERM)
    assert peer.popen.wait(20) == 0
    downs = [nodes.receive(5000, down_for(ref)) for ref in refs]
    assert downs == [("DOWN", ref, "process", pid, "shutdown") for ref, pid in refs.items()]


class SlowToPickle:
    """Takes 0.2 s to pickle: a process sending it to another node is nearly always mid-send."""

    def __reduce__(self) -> tuple[Any, ...]:
        time.sleep(0.2)
        return (str, ("slow",))


def _send_slowly_for_ever(to: nodes.Pid) -> None:
    """(runs on the peer)"""
    while True:
        nodes.send(to, SlowToPickle())


def test_stopping_waits_for_a_death_its_process_is_still_telling(node_cluster, tmp_path) -> None:
    peer = start_script_node(node_cluster, tmp_path, SLOW_TO_TELL, f"slowteller{os.getpid()}")
    sink = nodes.spawn(_drain)
    sender = rpc(peer.name, nodes.spawn, _send_slowly_for_ever, sink)
    ref = nodes.monitor(sender)
    h.wait_until_true(lambda: _all_watched_by_me(peer.name, [sender]), 5.0, "the remote monitor")
    peer.signal(signal.SIGTERM)  # the sender is mid-send: its own thread tells its death, 1.5 s late
    assert peer.popen.wait(20) == 0
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", sender, "shutdown")
    nodes.exit(sink, "kill")


def test_a_node_stopped_while_its_processes_send_tells_their_monitors_shutdown(node_cluster) -> None:
    # a process caught half-way through a send tells its own death once the send is done
    # (what it sent comes first): the node must wait for that before it closes its connections
    for _ in range(3):
        peer = h.start_peer(node_cluster)
        streamers = rpc(peer.name, _spawn_streamers, 4)
        refs = {nodes.monitor(pid): pid for pid in streamers}
        h.wait_until_true(lambda name=peer.name, pids=streamers: _all_watched_by_me(name, pids),
                          5.0, "remote monitors")
        peer.signal(signal.SIGTERM)
        assert peer.popen.wait(20) == 0
        downs = [nodes.receive(5000, down_for(ref)) for ref in refs]
        assert downs == [("DOWN", ref, "process", pid, "shutdown") for ref, pid in refs.items()]


def _trap_and_forward(to: nodes.Pid) -> None:
    """(runs on the peer) trap exits and forward every message to ``to``."""
    nodes.process_flag("trap_exit", True)
    h.forward_all(to)


class _HoldsALock(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()  # cannot be pickled


def test_a_death_whose_reason_cannot_be_pickled_still_reaches_every_link_and_monitor(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    me = nodes.self()
    remote = rpc(peer.name, nodes.spawn, _trap_and_forward, me)

    def crash_linked() -> None:
        nodes.link(remote)
        nodes.receive(match=lambda m: m == "go")
        raise _HoldsALock()

    local, ref = nodes.spawn_monitor(crash_linked)
    h.wait_until_true(lambda: rpc(peer.name, _links_of, remote) == [local], 5.0, "remote link")
    nodes.send(local, "go")
    down = nodes.receive(10_000, down_for(ref))
    assert down[4][0] == "exception" and isinstance(down[4][1], _HoldsALock)  # here, as it was
    _fwd, _from, exit_signal = nodes.receive(10_000, lambda m: h.is_tuple(m, "fwd", 3))
    assert exit_signal[:2] == ("EXIT", local)
    assert exit_signal[2][0] == "unpicklable" and "holds a lock" in exit_signal[2][1]
    nodes.exit(remote, "kill")


def test_remote_abnormal_exit_kills_a_linked_local_process(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    remote = rpc(peer.name, nodes.spawn, h.exit_on_message)
    me = nodes.self()

    def linked_local() -> None:
        nodes.link(remote)
        nodes.send(me, "linked")
        nodes.receive()  # never comes: the exit signal ends this process

    local = nodes.spawn(linked_local)
    ref = nodes.monitor(local)
    assert nodes.receive(5000, lambda m: m == "linked") == "linked"
    h.wait_until_true(lambda: rpc(peer.name, _links_of, remote) == [local], 5.0, "remote link")
    nodes.send(remote, "boom")
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", local, "boom")

    # a normal exit does not kill a linked process; trapping turns an abnormal one into a message
    nodes.process_flag("trap_exit", True)
    quiet = rpc(peer.name, nodes.spawn, h.exit_on_message)
    noisy = rpc(peer.name, nodes.spawn, h.exit_on_message)
    nodes.link(quiet)
    nodes.link(noisy)
    h.wait_until_true(lambda: rpc(peer.name, _links_of, noisy) == [nodes.self()], 5.0, "remote link")
    nodes.send(quiet, "normal")
    nodes.send(noisy, ("shutdown", "bye"))
    got = {nodes.receive(5000, lambda m: h.is_tuple(m, "EXIT", 3)) for _ in range(2)}
    assert got == {("EXIT", quiet, "normal"), ("EXIT", noisy, ("shutdown", "bye"))}


class TwoArgError(Exception):
    """A common slip: pickles, but cannot be rebuilt (``__init__`` does not take its own args)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def crash_on_message() -> None:
    """Wait for one message, then crash with the exception it names."""
    if nodes.receive() == "unloadable":
        raise TwoArgError(1, "x")
    raise ValueError("plain")


def test_a_remote_crash_whose_reason_cannot_be_rebuilt_still_fires_links_and_monitors(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    me = nodes.self()
    bad = rpc(peer.name, nodes.spawn, crash_on_message)
    good = rpc(peer.name, nodes.spawn, crash_on_message)

    def trapping_link() -> None:
        nodes.process_flag("trap_exit", True)
        nodes.link(bad)
        nodes.send(me, "linked")
        nodes.send(me, ("got", nodes.receive(10_000, lambda m: h.is_tuple(m, "EXIT", 3))))

    nodes.spawn(trapping_link)
    assert nodes.receive(5000, lambda m: m == "linked") == "linked"
    h.wait_until_true(lambda: len(rpc(peer.name, _links_of, bad)) == 1, 5.0, "remote link")
    bad_ref, good_ref = nodes.monitor(bad), nodes.monitor(good)
    nodes.send(bad, "unloadable")
    nodes.send(good, "plain")
    _, _, _, _, reason = nodes.receive(10_000, down_for(bad_ref))
    assert reason[0] == "unloadable" and "TwoArgError('1: x')" in reason[1], reason
    _, (_, from_pid, exit_reason) = nodes.receive(10_000, lambda m: h.is_tuple(m, "got", 2))
    assert from_pid == bad and exit_reason == reason
    # a reason that can be rebuilt arrives whole
    _, _, _, _, reason = nodes.receive(10_000, down_for(good_ref))
    assert reason[0] == "exception" and type(reason[1]) is ValueError and "plain" in reason[2]


class ExitsWhenLoaded:
    """Unpickling this raises SystemExit (a BaseException, not an Exception)."""

    def __reduce__(self) -> tuple[Any, ...]:
        import sys
        return (sys.exit, ("loaded",))


def test_a_message_whose_loading_raises_system_exit_is_dropped_and_the_node_runs_on(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    remote = rpc(peer.name, nodes.spawn, h.exit_on_message)
    nodes.send(remote, ExitsWhenLoaded())
    # frames are handled in order: the rpc's request comes after it, on the same connection
    assert rpc(peer.name, nodes.node) == peer.name
    assert rpc(peer.name, nodes.is_alive, remote) and peer.name in nodes.list_nodes()
    h.wait_until_true(lambda: "cannot decode a message" in peer.log(), 10, "the drop to be logged")


def test_monitor_and_link_of_a_dead_remote_pid_give_noproc(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    dead = rpc(peer.name, nodes.spawn, int)  # int() returns at once: the process ends normally
    h.wait_until_true(lambda: not nodes.is_alive(dead), 5.0, "the remote process to end")
    ref = nodes.monitor(dead)
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", dead, "noproc")
    nodes.process_flag("trap_exit", True)
    nodes.link(dead)
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "EXIT", 3)) == ("EXIT", dead, "noproc")
    ref = nodes.monitor(("nobody", peer.name))
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", ("nobody", peer.name), "noproc")


def test_monitor_remote_registered_name(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    pid = rpc(peer.name, h.spawn_registered, "worker", h.exit_on_message)
    ref = nodes.monitor(("worker", peer.name))
    # the monitor is set up on the remote side before the process exits
    h.wait_until_true(lambda: rpc(peer.name, _monitored_by_count, pid) == 1, 5.0, "remote monitor")
    nodes.send(("worker", peer.name), "done")
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", ("worker", peer.name), "done")
    # demonitor: no DOWN afterwards
    pid = rpc(peer.name, h.spawn_registered, "worker2", h.exit_on_message)
    ref = nodes.monitor(("worker2", peer.name))
    h.wait_until_true(lambda: rpc(peer.name, _monitored_by_count, pid) == 1, 5.0, "remote monitor")
    nodes.demonitor(ref)
    h.wait_until_true(lambda: rpc(peer.name, _monitored_by_count, pid) == 0, 5.0, "remote demonitor")
    nodes.send(pid, "done")
    h.wait_until_true(lambda: not nodes.is_alive(pid), 5.0, "worker2 to end")
    assert nodes.flush() == []


def _monitored_by_count(pid: nodes.Pid) -> int:
    import importlib

    this_node = importlib.import_module("nodes.this_node")
    proc = this_node.local_proc(pid)
    return len(proc.monitored_by) if proc is not None else -1


def _trap_say_so_and_forward(to: nodes.Pid) -> None:
    """(runs on the peer) trap exits, tell ``to``, and forward every message to it."""
    nodes.process_flag("trap_exit", True)
    nodes.send(to, ("trapping", nodes.self()))
    h.forward_all(to)


def test_exit_signals_and_unlink_across_nodes(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    me = nodes.self()
    # exit/2 with "kill" ends a remote process; its monitor says "killed"
    victim = rpc(peer.name, nodes.spawn, nodes.receive)
    ref = nodes.monitor(victim)
    nodes.exit(victim, "kill")
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", victim, "killed")
    # a remote process that traps exits gets exit/2 as a message; "normal" does not kill
    trapper = rpc(peer.name, nodes.spawn, _trap_say_so_and_forward, me)
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "trapping")) == ("trapping", trapper)
    nodes.exit(trapper, "please")
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "fwd")) == ("fwd", trapper, ("EXIT", me, "please"))
    plain = rpc(peer.name, nodes.spawn, nodes.receive)
    ref = nodes.monitor(plain)
    trapper_ref = nodes.monitor(trapper)
    nodes.exit(plain, "normal")
    nodes.exit(trapper, "kill")  # sent after on the same connection: once it is done, so is the first
    assert nodes.receive(5000, down_for(trapper_ref)) == ("DOWN", trapper_ref, "process", trapper, "killed")
    assert rpc(peer.name, nodes.is_alive, plain) is True
    nodes.exit(plain, "shutdown")
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", plain, "shutdown")
    # after unlink, a remote death sends no exit signal
    nodes.process_flag("trap_exit", True)
    linked = rpc(peer.name, nodes.spawn, h.exit_on_message)
    nodes.link(linked)
    h.wait_until_true(lambda: rpc(peer.name, _links_of, linked) == [me], 5.0, "remote link")
    nodes.unlink(linked)
    h.wait_until_true(lambda: rpc(peer.name, _links_of, linked) == [], 5.0, "remote unlink")
    ref = nodes.monitor(linked)
    nodes.send(linked, "bye")
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", linked, "bye")
    assert nodes.flush() == []


def test_links_and_monitors_to_a_node_that_cannot_be_reached(this_node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="nodes.transport")
    ghost = nodes.Pid(f"ghost{os.getpid()}@{_host()}", 5, 1)
    ref = nodes.monitor(ghost)
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", ghost, "noconnection")
    nodes.process_flag("trap_exit", True)
    nodes.link(ghost)
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "EXIT", 3)) == ("EXIT", ghost, "noconnection")
    # the failed link and monitor are told by their noconnection, not by a warning as well
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    nodes.send(ghost, "a lost message")
    h.wait_until_true(lambda: any(r.levelno == logging.WARNING and "dropped 1 message(s)" in r.getMessage()
                                  for r in caplog.records), 5.0, "a warning about the lost message")
    with pytest.raises(nodes.Exit) as info:
        gen_statem.call(ghost, "hello", timeout=5000)
    assert info.value.reason == ("nodedown", ghost.node)


def test_a_large_message_and_pids_round_trip(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    echo = rpc(peer.name, nodes.spawn, h.echo)
    big = {"blob": os.urandom(8 * 1024 * 1024), "pids": [nodes.self(), echo], "ref": nodes.make_ref()}
    nodes.send(echo, (nodes.self(), big))
    assert nodes.receive(20_000) == ("echo", big, peer.name)
    nodes.send(echo, "stop")


# -- 4. incarnations ---------------------------------------------------------------------------

def test_restarted_node_gets_new_pids_and_old_pids_reach_nothing(node_cluster) -> None:
    short = f"inc{os.getpid()}"
    old_node = h.start_peer(node_cluster, short)
    old_pid = rpc(old_node.name, h.spawn_many_then, 20, nodes.receive)
    old_node.signal(signal.SIGKILL)
    h.wait_gone(old_node.name)

    new_node = h.start_peer(node_cluster, short)
    assert new_node.name == old_node.name
    me = nodes.self()
    forwarders = rpc(new_node.name, h.spawn_until_id, old_pid.id, h.forward_all, me)
    twin = forwarders[-1]
    assert twin.id == old_pid.id, f"could not make the id collide: {forwarders[-1]} vs {old_pid}"
    assert twin.node == old_pid.node and twin != old_pid and twin.creation != old_pid.creation

    nodes.send(old_pid, "for the old incarnation")
    nodes.send(twin, "marker")  # same connection, sent after: once it is back, the first one is not coming
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "fwd", 3) and m[2] == "marker") == (
        "fwd", twin, "marker")
    assert nodes.flush() == []
    # signals to the old incarnation find no process either
    ref = nodes.monitor(old_pid)
    assert nodes.receive(5000, down_for(ref)) == ("DOWN", ref, "process", old_pid, "noproc")
    nodes.process_flag("trap_exit", True)
    nodes.link(old_pid)
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "EXIT", 3)) == ("EXIT", old_pid, "noproc")
    nodes.exit(old_pid, "kill")
    assert rpc(new_node.name, nodes.is_alive, twin) is True
    assert nodes.is_alive(old_pid) is False


# -- 5. rpc ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int

    def norm2(self) -> int:
        return self.x * self.x + self.y * self.y


def scale(p: Point, k: int) -> Point:
    return Point(p.x * k, p.y * k)


class RemoteBoom(Exception):
    pass


def boom(x: int) -> None:
    raise RemoteBoom(f"boom {x}")


def loaded_by_import() -> bool:
    """(runs on the peer) True if this module was imported there (by reference)."""
    import sys

    return __name__ in sys.modules


MAIN_LIKE_SOURCE = '''
class Accumulator:
    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)
        return self

def build(n):
    acc = Accumulator()
    for i in range(n):
        acc.add(i * i)
    return acc

def where():
    import nodes
    return (nodes.node(), Accumulator.__module__)
'''


def main_like_namespace() -> types.ModuleType:
    """Code as typed in a shell or run as a script: it lives in a module named ``__main__``."""
    module = types.ModuleType("__main__")
    exec(compile(MAIN_LIKE_SOURCE, "<shell>", "exec"), module.__dict__)
    return module


def test_rpc_function_and_class_from_this_module(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    assert rpc(peer.name, scale, Point(1, 2), 3) == Point(3, 6)
    assert rpc(peer.name, Point.norm2, Point(3, 4)) == 25
    assert rpc(peer.name, loaded_by_import) is True
    assert rpc(peer.name, max, [3, 9, 2]) == 9  # a builtin


def test_rpc_ships_main_code_by_value(node_cluster) -> None:
    peer = h.start_peer(node_cluster, importable=False)  # cannot import anything from tests/
    module = main_like_namespace()
    acc = rpc(peer.name, module.build, 4)
    assert acc.items == [0, 1, 4, 9]
    assert type(acc).__name__ == "Accumulator"
    assert rpc(peer.name, module.where) == (peer.name, "__main__")
    # an instance goes there and back
    back = rpc(peer.name, module.Accumulator.add, module.Accumulator(), "x")
    assert back.items == ["x"]


def test_rpc_function_the_peer_cannot_import_raises_instead_of_hanging(node_cluster) -> None:
    peer = h.start_peer(node_cluster, importable=False)
    started = time.monotonic()
    with pytest.raises(ImportError) as info:
        nodes.rpc.call(peer.name, scale, Point(1, 2), 3, timeout=10_000)
    assert time.monotonic() - started < 5.0
    assert "test_distribution" in str(info.value)
    assert peer.name in "".join(getattr(info.value, "__notes__", []))


def test_rpc_reraises_the_remote_exception_with_its_traceback(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    with pytest.raises(RemoteBoom, match="boom 7") as info:
        rpc(peer.name, boom, 7)
    notes = "\n".join(info.value.__notes__)
    assert f"remote traceback from {peer.name}" in notes
    assert "in boom" in notes and "RemoteBoom: boom 7" in notes
    with pytest.raises(ZeroDivisionError) as info2:
        rpc(peer.name, divmod, 1, 0)
    assert peer.name in "\n".join(info2.value.__notes__)
    assert rpc(peer.name, nodes.node) == peer.name  # rex keeps serving


# A node whose main thread is held up in nodes.start right after its transport started (what a
# loaded machine does by preempting it), until the file argv[2] exists: its I/O thread and rex
# already serve peers meanwhile.
STALLED_IN_START = r'''
import os, sys, threading, time
import nodes
stalled = False

def hold_after_transport_start(frame, event, arg):
    global stalled
    code = frame.f_code
    if event == "return" and code.co_name == "start" and code.co_filename.endswith("transport.py"):
        stalled = True
        deadline = time.monotonic() + 30
        while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
            time.sleep(0.01)
        stalled = False

sys.setprofile(hold_after_transport_start)  # this (main) thread only
nodes.start(sys.argv[1])
sys.setprofile(None)
threading.Event().wait()
'''


def main_flag(name: str) -> Any:
    """A global of the peer's ``__main__`` (run there by rpc)."""
    import sys
    return getattr(sys.modules["__main__"], name)


def start_script_node(node_cluster: Any, tmp_path: Any, source: str, short: str, *args: str) -> Any:
    """A node OS process running ``source`` (argv: ``short``, then ``args``), this module importable
    there; connected to when this returns, killed by PID when the test ends."""
    import subprocess
    import sys

    import nodecluster

    env = nodecluster.node_env({"PYTHONPATH": str(h.HERE)})
    log_path = tmp_path / f"{short}.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen([sys.executable, "-c", source, short, *args], env=env,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    peer = nodecluster.NodeProcess(f"{short}@{nodecluster.HOST}", popen, log_path)
    node_cluster.procs.append(peer)
    peer.connect(20)
    return peer


def test_a_node_still_in_start_answers_an_rpc_it_already_serves(node_cluster, tmp_path) -> None:
    release = tmp_path / "release"
    peer = start_script_node(node_cluster, tmp_path, STALLED_IN_START, f"stalled{os.getpid()}", str(release))
    # rex's reply leaves while the peer's nodes.start has not returned: it once went nowhere
    assert nodes.rpc.call(peer.name, main_flag, "stalled", timeout=10_000) is True
    release.touch()
    h.wait_until_true(lambda: rpc(peer.name, main_flag, "stalled") is False, 20, "the peer's start to return")


def _raise_unloadable() -> None:
    """(runs on the peer) raise an exception whose class exists only on the peer."""
    import sys

    module = types.ModuleType("only_on_the_peer")
    exec("class Unloadable(Exception):\n    pass\n", module.__dict__)
    sys.modules["only_on_the_peer"] = module
    raise module.Unloadable("from a class the caller cannot load")


def _return_unloadable() -> Any:
    import sys

    module = types.ModuleType("only_on_the_peer2")
    exec("class Thing:\n    pass\n", module.__dict__)
    sys.modules["only_on_the_peer2"] = module
    return module.Thing()


def _exit_unloadable() -> None:
    """(runs on the peer) end the worker with an exit reason whose class exists only there."""
    import sys

    module = types.ModuleType("only_on_the_peer3")
    exec("class Gone:\n    def __repr__(self):\n        return 'Gone()'\n", module.__dict__)
    sys.modules["only_on_the_peer3"] = module
    nodes.exit(nodes.self(), module.Gone())  # an exit signal: the worker ends without an outcome
    nodes.receive()


def test_rpc_exception_whose_class_does_not_load_here_is_a_remote_error(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    with pytest.raises(nodes.rpc.RemoteError) as info:
        nodes.rpc.call(peer.name, _raise_unloadable, timeout=10_000)
    assert "from a class the caller cannot load" in str(info.value)
    assert "Unloadable" in str(info.value)
    with pytest.raises(ImportError, match="only_on_the_peer2") as loading:
        nodes.rpc.call(peer.name, _return_unloadable, timeout=10_000)
    assert "the result (a only_on_the_peer2.Thing) of the call on" in "".join(loading.value.__notes__)
    # an exit reason that cannot be rebuilt here arrives as a DOWN's would
    with pytest.raises(nodes.Exit) as exited:
        nodes.rpc.call(peer.name, _exit_unloadable, timeout=10_000)
    assert exited.value.reason == ("badrpc", ("EXIT", ("unloadable", "Gone()")))
    assert nodes.rpc.call(peer.name, sum, (1, 2), timeout=10_000) == 3  # rex serves on


def test_rpc_to_a_dead_node_and_rpc_timeout(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    with pytest.raises(nodes.Exit) as info:
        nodes.rpc.call(peer.name, time.sleep, 2, timeout=200)
    assert info.value.reason == ("badrpc", "timeout")
    assert nodes.flush() == []  # no late reply, no DOWN left behind
    # the node dies during the call
    holder = rpc(peer.name, nodes.spawn, nodes.receive)
    assert holder.node == peer.name

    started = time.monotonic()
    threading.Timer(0.2, peer.signal, (signal.SIGKILL,)).start()
    with pytest.raises(nodes.Exit) as info:
        nodes.rpc.call(peer.name, time.sleep, 30)
    assert info.value.reason == ("badrpc", "nodedown")
    assert time.monotonic() - started < DOWN_BOUND_S + 0.2
    h.wait_gone(peer.name)
    # the node is gone: at once
    with pytest.raises(nodes.Exit) as info:
        nodes.rpc.call(peer.name, nodes.node, timeout=10_000)
    assert info.value.reason == ("badrpc", "nodedown")
    with pytest.raises(nodes.Exit) as info:
        nodes.rpc.call(f"neverexisted@{_host()}", nodes.node)
    assert info.value.reason == ("badrpc", "nodedown")
    assert nodes.flush() == []



def _exit_the_process() -> None:
    """(runs on the peer) end the rpc worker's process with SystemExit."""
    raise SystemExit(3)


def _kill_own_process() -> None:
    nodes.exit(nodes.self(), "kill")
    nodes.receive()


def _raise_exit(reason: str) -> None:
    raise nodes.Exit(reason)


def _die_with_a_linked_process() -> None:
    nodes.spawn_link(_raise_exit, "lost_partner")
    nodes.receive()


def test_rpc_whose_remote_process_ends_without_an_outcome_fails_at_once(node_cluster) -> None:
    # Erlang: {badrpc, {'EXIT', Reason}}, as the local path gives, never the whole time-out
    peer = h.start_peer(node_cluster)
    for target in (peer.name, nodes.node()):
        for fn, reason_is in (
                (_exit_the_process, lambda r: r[0] == "exception" and isinstance(r[1], SystemExit)),
                (_kill_own_process, lambda r: r == "killed"),
                (_die_with_a_linked_process, lambda r: r == "lost_partner")):
            started = time.monotonic()
            with pytest.raises(nodes.Exit) as info:
                nodes.rpc.call(target, fn, timeout=20_000)
            assert time.monotonic() - started < 10.0, (target, fn)
            badrpc, (tag, reason) = info.value.reason
            assert (badrpc, tag) == ("badrpc", "EXIT") and reason_is(reason), (target, fn, reason)
    assert rpc(peer.name, nodes.node) == peer.name  # rex keeps serving
    assert nodes.flush() == []  # no second answer, no DOWN left behind


@pytest.mark.parametrize("timeout", [True, False, "100", -1, 1.5])
def test_rpc_call_rejects_a_bad_timeout_at_the_call_site(timeout: Any) -> None:
    with pytest.raises(TypeError, match="int of ms"):
        nodes.rpc.call(nodes.node(), nodes.node, timeout=timeout)
    assert nodes.flush() == []  # nothing was started, so nothing answers later

# -- 6. gen_statem across nodes ----------------------------------------------------------------

class Counter:
    """A gen_statem callback module: counts casts, answers calls, can defer a reply."""

    def init(start: int) -> tuple:
        return ("ok", "counting", {"n": start, "waiting": []})

    def counting(event_type: Any, content: Any, data: dict) -> tuple:
        if event_type == "cast":
            if content == "release":
                replies = [("reply", from_, ("released", data["n"])) for from_ in data["waiting"]]
                return ("keep_state", {**data, "waiting": []}, replies)
            return ("keep_state", {**data, "n": data["n"] + content})
        if event_type == "info":
            return ("keep_state", data)
        _, from_ = event_type
        if content == "get":
            return ("keep_state", data, [("reply", from_, data["n"])])
        if content == "where":
            gen_statem.reply(from_, (nodes.node(), from_[0].node))  # reply/2 from the callback
            return ("keep_state", data)
        if content == "wait":
            return ("keep_state", {**data, "waiting": [*data["waiting"], from_]})
        if content == "freeze":
            return ("next_state", "frozen", data, [("reply", from_, "frozen")])
        if content == "unloadable":
            return ("keep_state", data, [("reply", from_, ("ok", TwoArgError(2, "y")))])
        return ("keep_state", data, [("reply", from_, ("unknown", content))])

    def frozen(event_type: Any, content: Any, data: dict) -> tuple:
        return ("keep_state", data)  # ignores everything: calls time out


def test_a_call_or_stop_that_cannot_be_sent_leaves_no_monitor_behind(node_cluster) -> None:
    import threading

    from nodes import process

    peer = h.start_peer(node_cluster)
    _, pid = rpc(peer.name, gen_statem.start, Counter, 0, "counter")
    me = nodes.self()
    monitors_before = sorted(map(repr, nodes.process_info(me, "monitors")[1]))
    aliases_before = len(process.current().mailbox._aliases)
    for _ in range(3):
        with pytest.raises(TypeError):  # nodes.EncodeError: a lock cannot be pickled for the other node
            gen_statem.call(pid, ("add", threading.Lock()))
        with pytest.raises(TypeError):
            gen_statem.stop(pid, threading.Lock())
    assert sorted(map(repr, nodes.process_info(me, "monitors")[1])) == monitors_before
    assert len(process.current().mailbox._aliases) == aliases_before
    h.wait_until_true(lambda: rpc(peer.name, nodes.process_info, pid, "monitored_by") == ("monitored_by", []),
                      10, "the server's monitors to be taken off")
    assert gen_statem.call(pid, "get") == 0


def test_a_reply_the_caller_cannot_rebuild_raises_at_the_caller_at_once(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    _, pid = rpc(peer.name, gen_statem.start, Counter, 3, "counter")
    with pytest.raises(TypeError) as info:  # the loading error, not the call's time-out
        gen_statem.call(pid, "unloadable", timeout=10_000)
    notes = "".join(info.value.__notes__)
    assert "the reply (a builtins.tuple)" in notes and f"cannot be loaded on {nodes.node()}" in notes
    assert gen_statem.call(pid, "get") == 3  # the server and the connection carry on
    assert nodes.flush() == []


def test_gen_statem_across_nodes(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    status, pid = rpc(peer.name, gen_statem.start, Counter, 10, "counter")
    assert status == "ok" and pid.node == peer.name
    assert gen_statem.call(("counter", peer.name), "get") == 10
    assert gen_statem.cast(("counter", peer.name), 5) == "ok"
    assert gen_statem.cast(pid, 2) == "ok"
    assert gen_statem.call(pid, "get") == 17
    assert gen_statem.call(pid, "where") == (peer.name, nodes.node())
    assert nodes.sys.get_state(pid) == ("counting", {"n": 17, "waiting": []})

    # a deferred reply, released by a cast from a third process
    me = nodes.self()
    nodes.spawn(lambda: nodes.send(me, ("answer", gen_statem.call(pid, "wait", 5000))))
    h.wait_until_true(lambda: nodes.sys.get_state(pid)[1]["waiting"], 5.0, "the call to be queued")
    gen_statem.cast(pid, "release")
    assert nodes.receive(5000, lambda m: h.is_tuple(m, "answer")) == ("answer", ("released", 17))

    # a call the remote server never answers times out, and its late reply is not left behind
    assert gen_statem.call(pid, "freeze") == "frozen"
    with pytest.raises(nodes.Exit) as info:
        gen_statem.call(pid, "get", timeout=200)
    assert info.value.reason == "timeout"

    # stopped: calls raise noproc
    assert rpc(peer.name, gen_statem.stop, pid) == "ok"
    with pytest.raises(nodes.Exit) as info:
        gen_statem.call(pid, "get")
    assert info.value.reason == "noproc"
    with pytest.raises(nodes.Exit) as info:
        gen_statem.call(("counter", peer.name), "get")
    assert info.value.reason == "noproc"
    assert nodes.flush() == []


def test_gen_statem_call_to_a_killed_remote_node_raises(node_cluster) -> None:
    peer = h.start_peer(node_cluster)
    status, pid = rpc(peer.name, gen_statem.start, Counter, 0, "counter")
    assert status == "ok"
    assert gen_statem.call(pid, "freeze") == "frozen"
    threading.Timer(0.3, peer.signal, (signal.SIGKILL,)).start()
    started = time.monotonic()
    with pytest.raises(nodes.Exit) as info:
        gen_statem.call(pid, "get", timeout=None)  # no timeout: only the lost connection ends it
    assert info.value.reason == ("nodedown", peer.name)
    assert time.monotonic() - started < DOWN_BOUND_S + 0.3
    h.wait_gone(peer.name)
    with pytest.raises(nodes.Exit):
        gen_statem.call(("counter", peer.name), "get", timeout=5000)
    assert gen_statem.cast(pid, 1) == "ok"  # never raises


# -- 7. cookies --------------------------------------------------------------------------------

def test_wrong_cookie_is_refused(node_cluster) -> None:
    peer = h.start_peer(node_cluster, connect=False, env={"NODES_COOKIE": "not-the-cookie"})
    h.wait_registered(peer.name.partition("@")[0])
    assert nodes.connect(peer.name) is False
    assert peer.name not in nodes.list_nodes()
    with pytest.raises(nodes.Exit) as info:
        nodes.rpc.call(peer.name, nodes.node, timeout=10_000)
    assert info.value.reason == ("badrpc", "nodedown")
    assert peer.name not in nodes.list_nodes()
    assert peer.alive()
    # --cookie wins over the environment
    good = h.start_peer(node_cluster, env={"NODES_COOKIE": "not-the-cookie"},
                        args=["--cookie", os.environ["NODES_COOKIE"]])
    assert rpc(good.name, nodes.node) == good.name


COOKIE_RACE = '''
import os
import sys
import time
from pathlib import Path

from nodes import dist

base, me, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for r in range(rounds):
    os.environ["HOME"] = str(base / f"home{r}")  # a fresh home each round, shared by every reader
    (base / f"ready{r}.{me}").touch()
    deadline = time.monotonic() + 30
    while not (base / f"go{r}").exists():  # every reader reads the cookie at the same moment
        if time.monotonic() > deadline:
            raise SystemExit(f"no go signal for round {r}")
        time.sleep(0.0002)
    print(r, dist.default_cookie(), flush=True)
'''


@pytest.mark.timeout(120)
def test_nodes_starting_at_once_on_a_fresh_home_agree_on_one_cookie(tmp_path) -> None:
    import subprocess
    import sys

    n, rounds = 6, 30  # many rounds: the race is over in microseconds
    homes = [tmp_path / f"home{r}" for r in range(rounds)]
    for home in homes:
        home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NODES_COOKIE"}
    env["PYTHONPATH"] = str(h.HERE.parent.parent)
    env["HOME"] = str(homes[0])
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(n):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", COOKIE_RACE, str(tmp_path), str(i), str(rounds)], env=env,
                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for r in range(rounds):
            deadline = time.monotonic() + 30
            while not all((tmp_path / f"ready{r}.{i}").exists() for i in range(n)):
                assert time.monotonic() < deadline, f"the cookie readers did not get to round {r}"
                dead = [p for p in procs if p.poll() is not None]
                assert not dead, f"a cookie reader died in round {r - 1}: {dead[0].communicate()[1]}"
                time.sleep(0.001)
            (tmp_path / f"go{r}").touch()
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.communicate()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    for r, home in enumerate(homes):
        path = home / ".nodes.cookie"
        seen = {line.split(" ", 1)[1] for out, _ in outs for line in out.splitlines()
                if line.split(" ", 1)[0] == str(r)}
        assert seen == {path.read_text().strip()} and "" not in seen, (r, seen)
        assert path.stat().st_mode & 0o777 == 0o600
        assert sorted(home.iterdir()) == [path]  # no temporary file left behind


# -- start -------------------------------------------------------------------------------------

START_TWICE = '''
import sys
import nodes
from nodes import epmd
taken, other = sys.argv[1], sys.argv[2]
before = nodes.self()
try:
    nodes.start(taken)
except epmd.NameTaken:
    pass
else:
    raise SystemExit("started under a taken name")
assert nodes.node() == "nonode@nohost", nodes.node()
assert nodes.whereis("rex") is None
name = nodes.start(other)
assert nodes.self().node == name and nodes.self().id == before.id
assert nodes.rpc.call(name, nodes.node) == name
print("ok", name)
'''


def run_script(tmp_path: Any, source: str, *args: str) -> str:
    """Run ``source`` in a fresh Python process (it may start a node: this test's port-mapper
    and cookie come with the environment); its output, once it exited 0."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(h.HERE.parent.parent)}
    done = subprocess.run([sys.executable, "-c", source, *args], env=env, capture_output=True, text=True,
                          timeout=40, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_start_under_a_taken_name_leaves_the_node_as_it_was(node_cluster, tmp_path) -> None:
    peer = h.start_peer(node_cluster)
    out = run_script(tmp_path, START_TWICE, peer.name.partition("@")[0], f"other{os.getpid()}")
    assert out.startswith("ok other")


# A monitor set on a remote process while nodes.start is under way, in the start that fails
# (its name is taken): the start's main thread is held at the port-mapper registration until
# the monitor is set.
MONITOR_IN_A_FAILED_START = r'''
import sys, threading
import nodes
from nodes import epmd
taken, ghost = sys.argv[1], sys.argv[2]
inside, monitored = threading.Event(), threading.Event()

def hold_at_registration(frame, event, arg):
    code = frame.f_code
    if event == "call" and code.co_name == "register" and code.co_filename.endswith("epmd.py"):
        inside.set()
        monitored.wait(10)

got = []

def watcher():
    inside.wait(10)
    ref = nodes.monitor(("srv", ghost))
    monitored.set()
    got.append((ref, nodes.receive(10_000, match=lambda m: m[0] == "DOWN" and m[1] == ref)))

t = threading.Thread(target=watcher)
t.start()
sys.setprofile(hold_at_registration)  # this (main) thread only
try:
    nodes.start(taken)
except epmd.NameTaken:
    pass
sys.setprofile(None)
t.join()
ref, down = got[0]
assert down == ("DOWN", ref, "process", ("srv", ghost), "noconnection"), down
print("ok")
'''


def test_a_monitor_set_during_a_start_that_fails_reports_noconnection(node_cluster, tmp_path) -> None:
    peer = h.start_peer(node_cluster)
    short, _, host = peer.name.partition("@")
    out = run_script(tmp_path, MONITOR_IN_A_FAILED_START, short, f"ghost{os.getpid()}@{host}")
    assert out.startswith("ok")


# A monitor on a process of a node that accepts TCP connections but never answers: the
# connection attempt is still under way when distribution stops.
MONITOR_WHILE_STOPPING = r'''
import os, socket, sys
import nodes
from nodes import dist, epmd
name = nodes.start(sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(5)
registration = epmd.register("blackhole", listener.getsockname()[1], 7, int(os.environ["NODES_EPMD_PORT"]))
ghost = "blackhole@" + name.partition("@")[2]
ref = nodes.monitor(("srv", ghost))
try:
    early = nodes.receive(300, match=lambda m: m[0] == "DOWN")
except TimeoutError:
    early = None  # still connecting, as wanted
assert early is None, early
dist.stop()
down = nodes.receive(10_000, match=lambda m: m[0] == "DOWN" and m[1] == ref)
assert down == ("DOWN", ref, "process", ("srv", ghost), "noconnection"), down
print("ok")
'''


def test_a_monitor_waiting_for_a_connection_reports_noconnection_when_distribution_stops(
        node_cluster, tmp_path) -> None:
    h.start_peer(node_cluster)  # a running port-mapper for this test's nodes
    assert run_script(tmp_path, MONITOR_WHILE_STOPPING, f"stopper{os.getpid()}").startswith("ok")


def test_a_second_start_returns_the_running_node_only_under_its_name_and_cookie(node_cluster) -> None:
    me = nodes.node()
    cookie = os.environ["NODES_COOKIE"]  # the harness started this node with it
    assert nodes.start(me) == me
    assert nodes.start(me.partition("@")[0], cookie=cookie) == me  # its short name, its cookie
    with pytest.raises(RuntimeError, match="another cookie"):
        nodes.start(me, cookie=cookie + "-other")
    with pytest.raises(TypeError, match="non-empty str"):
        nodes.start(me, cookie=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty str"):
        nodes.start(me, cookie="")
    with pytest.raises(RuntimeError, match="already is node"):
        nodes.start(f"other{os.getpid()}")
    assert nodes.node() == me and rpc(h.start_peer(node_cluster).name, nodes.node)  # still serving


def test_the_cookie_file_is_made_without_hard_links_too(tmp_path, monkeypatch) -> None:
    # some file systems refuse os.link: the cookie file is then created exclusively instead
    monkeypatch.delenv("NODES_COOKIE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(dist.os, "link", no_links)
    cookie = dist.default_cookie()
    path = tmp_path / ".nodes.cookie"
    assert cookie and path.read_text().strip() == cookie
    assert path.stat().st_mode & 0o777 == 0o600
    assert dist.default_cookie() == cookie  # read back, not made again
    assert sorted(p.name for p in tmp_path.iterdir()) == [".nodes.cookie"]  # no temporary left


PIDS_BEFORE_START = '''
import sys
import nodes
nodes.process_flag("trap_exit", True)
me = nodes.self()

def echo():
    while True:
        m = nodes.receive()
        if m == "stop":
            return
        nodes.send(m[0], ("echo", m[1]))

p = nodes.spawn_link(echo)
old_node, old_creation = p.node, p.creation
nodes.register("pp", p)
ref = nodes.monitor(p)
held = {p: "value"}  # user data keyed by the pid
name = nodes.start(sys.argv[1])
# as Erlang: a local pid taken before distribution started names the same process after it
assert me == nodes.self() and me.node == name, (me, nodes.self())
assert p.node == name and nodes.whereis("pp") == p, (p, nodes.whereis("pp"))
assert held[p] == "value" and held[nodes.whereis("pp")] == "value"
copy = nodes.Pid(old_node, p.id, old_creation)  # an old pid built by hand still routes
nodes.send(copy, (me, 1))
assert nodes.receive(5000, match=lambda m: m[0] == "echo") == ("echo", 1)
nodes.send(p, "stop")
assert nodes.receive(5000, match=lambda m: m[0] == "EXIT") == ("EXIT", p, "normal")
assert nodes.receive(5000, match=lambda m: m[0] == "DOWN") == ("DOWN", ref, "process", p, "normal")
print("ok", name)
'''


def test_pids_taken_before_start_name_the_same_processes_after_it(node_cluster, tmp_path) -> None:
    h.start_peer(node_cluster)  # a running port-mapper for this test's nodes
    assert run_script(tmp_path, PIDS_BEFORE_START, f"early{os.getpid()}").startswith("ok early")

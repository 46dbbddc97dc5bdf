"""nodes.transport between real OS processes: handshake, order, mesh, failures, hostile input.

Each test gets its own epmd port; every process it starts (peers, the epmd some node started)
is killed by PID at the end (see transport_support.Cluster).  The test process itself runs a
node ("t@127.0.0.1", a LocalNode) and drives peers (transport_peer.py) with messages.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from nodes import codec, epmd
from nodes.transport import PROTOCOL_VERSION, Transport

try:
    from . import transport_support as support
    from .frames import frame_fields, frame_like
except ImportError:
    import transport_support as support  # type: ignore[no-redef]
    from frames import frame_fields, frame_like  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(90)

HOST = "127.0.0.1"
T, A, B, C, D = (f"{n}@{HOST}" for n in "tabcd")


@pytest.fixture
def c(tmp_path: Path) -> Iterator[support.Cluster]:
    with support.cluster(tmp_path) as cluster:
        yield cluster


def connected(node: support.LocalNode, peer: str) -> None:
    assert node.transport.connect(peer), f"{node.name} could not connect to {peer}"


def stays(predicate: Any, duration: float) -> bool:
    """True if predicate holds throughout ``duration`` seconds (checked every 20 ms)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------- basics


def test_connect_node_up_and_round_trips(c: support.Cluster) -> None:
    t = c.local(T)
    a = c.peer(A)
    assert t.transport.connected_nodes() == []
    connected(t, A)
    assert t.wait_event(("up", A)) == ("up", A, a.creation)
    assert t.transport.connected_nodes() == [A]
    assert t.call(A, "nodes") == [T]
    assert t.call(A, "events") == [("up", T, 1)]
    assert t.transport.connect(A)  # already connected: at once

    class Local:  # plain pickle cannot do this: it travels by value (cloudpickle)
        def __init__(self, value: int):
            self.value = value

    payloads: list[Any] = [None, 1, "x", ("tuple", [1, 2], {"k": b"v"}), list(range(1000)), b"x" * 1_000_000]
    for obj in payloads:
        t.transport.send(A, ("echo", obj))
        assert t.recv() == (A, obj)
    t.transport.send(A, ("echo", Local(5)))
    frm, back = t.recv()
    assert frm == A and type(back).__name__ == "Local" and back.value == 5


def test_the_poller_reports_readable_descriptors_until_they_are_unregistered() -> None:
    # The I/O thread sleeps in FdPoller.poll; registering twice or dropping an unknown
    # descriptor (a connection closed twice) must not raise in that thread.
    from nodes.zsockets import FdPoller

    poller = FdPoller()
    r, w = socket.socketpair()
    try:
        poller.register(r.fileno())
        poller.register(r.fileno())
        assert poller.poll(0) == []
        w.send(b"x")
        assert poller.poll(5000) == [r.fileno()]
        assert poller.poll(0) == [r.fileno()]  # level-triggered: still readable, still reported
        poller.unregister(r.fileno())
        poller.unregister(r.fileno())
        assert poller.poll(0) == []
    finally:
        poller.close()
        r.close()
        w.close()


def test_a_message_is_a_snapshot_taken_at_send(c: support.Cluster) -> None:
    t = c.local(T)
    c.peer(A)
    connected(t, A)
    data = [1, 2, 3]
    t.transport.send(A, ("echo", data))
    data.append(4)  # mutating after the send does not change what was sent
    assert t.recv() == (A, [1, 2, 3])


def test_send_auto_connects_and_keeps_the_order_of_10000_messages(c: support.Cluster) -> None:
    t = c.local(T)
    c.peer(A)
    n = 10_000
    frames_before = t.transport.stats["frames_sent"]
    for i in range(n):  # not connected yet: queued, connected in the background
        t.transport.send(A, ("echo", i))
    assert [t.recv()[1] for _ in range(n)] == list(range(n))
    # Queued messages travel batched, several to a frame.
    assert t.transport.stats["frames_sent"] - frames_before < n / 2
    # The other direction: the peer floods us, then replies to the call.
    t.transport.send(A, ("call", "ref", "flood", T, n))
    received = [t.recv()[1] for _ in range(n + 1)]
    assert received[:n] == [("flood", i) for i in range(n)]
    assert received[n] == ("reply", "ref", None)
    # Bursts are drained asking ZMQ_EVENTS whether more waits, never by a recv that fails
    # (pyzmq raises zmq.Again from Python code: 8-12 µs per burst on a follower).
    assert t.transport.stats["empty_recvs"] == 0


def test_unpicklable_objects_and_bad_names_fail_at_the_call_site(c: support.Cluster) -> None:
    t = c.local(T)
    with pytest.raises(codec.EncodeError):
        t.transport.send(A, threading.Lock())
    for bad in ("no-at-sign", "@host", "name@", "a b@host"):
        with pytest.raises(ValueError):
            t.transport.send(bad, 1)
    with pytest.raises(codec.EncodeError, match="frame limit"):
        Transport("x@127.0.0.1", 1, b"c", on_message=print, on_node_up=print, on_node_down=print,
                  max_frame_size=10).send(A, b"x" * 100)


def test_unknown_node_fails_fast_and_send_never_blocks(c: support.Cluster) -> None:
    t = c.local(T)
    nobody = f"nobody@{HOST}"
    start = time.monotonic()
    assert t.transport.connect(nobody) is False
    assert time.monotonic() - start < 3
    t.wait_event(("down", nobody))
    start = time.monotonic()
    for i in range(1000):
        t.transport.send(nobody, i)
    assert time.monotonic() - start < 1.0
    t.wait_event(("down", nobody))  # the queued messages were dropped, and that is reported
    assert t.transport.disconnect(nobody) is False


def test_only_lost_messages_are_warned_about_not_lost_runtime_signals(
        c: support.Cluster, caplog: pytest.LogCaptureFixture) -> None:
    # A demonitor after a call to a node that has just gone is lost as in Erlang, silently;
    # a message a process sent is worth a warning.
    caplog.set_level(logging.DEBUG, logger="nodes.transport")
    t = c.local(T)
    nobody = f"nobody@{HOST}"

    def dropped(level: int, what: str) -> int:
        """How many ``what`` the records at ``level`` say were dropped for nobody (sends
        racing the failed lookup may be dropped in more than one attempt)."""
        pattern = re.compile(rf"cannot connect to {re.escape(nobody)} \(.*\): "
                             rf"dropped (\d+) {re.escape(what)}$")
        return sum(int(m[1]) for r in caplog.records
                   if r.levelno == level and (m := pattern.match(r.getMessage())))

    for i in range(3):
        t.transport.send(nobody, ("demonitor", i), quiet=True)
    support.wait_until(lambda: dropped(logging.DEBUG, "runtime signal(s)") == 3, 10,
                       "the signals to be dropped")
    t.wait_event(("down", nobody))  # still reported: links and monitors to it fire
    assert dropped(logging.WARNING, "message(s)") == 0, caplog.records

    t.transport.send(nobody, ("demonitor", 3), quiet=True)
    t.transport.send(nobody, "hello")
    t.transport.send(nobody, "world")
    support.wait_until(lambda: dropped(logging.WARNING, "message(s)") == 2, 10,
                       "the messages to be warned about")
    assert dropped(logging.DEBUG, "runtime signal(s)") <= 4, caplog.records


def test_runtime_signals_lost_with_a_breaking_connection_are_not_warned_about(
        c: support.Cluster, caplog: pytest.LogCaptureFixture) -> None:
    # The same rule when a connection breaks in the middle of a batch: only the messages among
    # what is lost count in the warning.
    caplog.set_level(logging.DEBUG, logger="nodes.transport")
    t = c.local(T)
    c.peer(A)
    connected(t, A)
    transport = t.transport

    def lost(level: int, what: str) -> list[int]:
        pattern = re.compile(rf".*: (\d+) {re.escape(what)} to {re.escape(A)} lost with the connection$")
        return [int(m[1]) for r in caplog.records
                if r.levelno == level and (m := pattern.match(r.getMessage()))]

    def send_batch_on_broken_connection(items: list[bytes], quiet_at: list[int]) -> bool:
        with transport._lock:  # the I/O thread's: it owns the sockets while it holds this
            conn = transport._peers[A].conn
            assert conn is not None
            conn.broken = True  # as after a direct send ZeroMQ refused
            return transport._send_data(conn, items, quiet_at)

    signals = [codec.dumps(("demonitor", i)) for i in range(3)]
    assert send_batch_on_broken_connection(signals, [0, 1, 2]) is False
    assert lost(logging.DEBUG, "runtime signal(s)") == [3]
    assert lost(logging.WARNING, "message(s)") == []

    connected(t, A)  # it comes back
    items = [codec.dumps(x) for x in (("demonitor", 0), "hello", ("demonitor", 1), "world")]
    assert send_batch_on_broken_connection(items, [0, 2]) is False
    assert lost(logging.WARNING, "message(s)") == [2]


def test_a_node_is_not_capped_at_zeromqs_default_of_1023_sockets(c: support.Cluster) -> None:
    # Each connection takes three sockets, so ZeroMQ's default limit per context would stop a
    # node at about 340 peers. Stand-ins for 400 peers' sockets, then a real connection.
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1600:
        pytest.skip("needs a file-descriptor limit of at least 1,600")
    t = c.local(T)
    c.peer(A)
    ctx = t.transport._ctx
    assert ctx is not None
    stand_ins = []
    try:
        for _ in range(1200):
            stand_ins.append(ctx.socket(zmq.PAIR))
        connected(t, A)
        t.transport.send(A, ("echo", "after 1,200 sockets"))
        assert t.recv() == (A, "after 1,200 sockets")
    finally:
        for sock in stand_ins:
            sock.close(linger=0)


def test_a_second_node_with_the_same_name_cannot_start(c: support.Cluster) -> None:
    c.local(T)
    with pytest.raises(epmd.NameTaken):
        c.local(T)


def test_short_names_resolve_the_host_name(c: support.Cluster) -> None:
    host = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(host)
    except OSError:
        pytest.skip(f"host name {host!r} does not resolve here")
    t = c.local(f"t@{host}")
    assert t.transport.bind_host == "0.0.0.0"
    c.peer(f"a@{host}")
    connected(t, f"a@{host}")
    t.transport.send(f"a@{host}", ("echo", "short"))
    assert t.recv() == (f"a@{host}", "short")


# --------------------------------------------------------------------------- mesh


def test_connections_are_transitive_and_form_a_full_mesh(c: support.Cluster) -> None:
    t = c.local(T)
    c.peer(B)
    c.peer(C)
    connected(t, B)
    assert t.call(B, "connect", C) is True  # B connects C → T and C connect too
    support.wait_until(lambda: C in t.transport.connected_nodes(), 10, "t to be connected to c")
    support.wait_until(lambda: sorted(t.call(C, "nodes")) == [B, T], 10, "c's view")
    c.peer(D, connect=C)  # a newcomer that knows only C ends up connected to everyone
    support.wait_until(lambda: D in t.transport.connected_nodes(), 10, "t to be connected to d")
    for peer in (B, C, D):
        support.wait_until(lambda p=peer: len(t.call(p, "nodes")) == 3, 10, f"{peer} to know all others")


def test_simultaneous_connects_end_with_one_connection(c: support.Cluster) -> None:
    t = c.local(T)
    c.peer(B)
    c.peer(C)
    connected(t, B)
    connected(t, C)  # both B and C are told about each other and connect at the same moment
    support.wait_until(lambda: C in t.call(B, "nodes") and B in t.call(C, "nodes"), 10, "b and c to meet")
    rounds = 5
    for i in range(rounds):
        assert t.call(B, "disconnect", C) is True
        support.wait_until(lambda: C not in t.call(B, "nodes") and B not in t.call(C, "nodes"), 10,
                           "b and c to part")
        # Both ask at once.
        t.transport.send(B, ("call", f"b{i}", "connect", C))
        t.transport.send(C, ("call", f"c{i}", "connect", B))
        for ref in (f"b{i}", f"c{i}"):
            assert t.recv(match=lambda f, o, ref=ref: o == ("reply", ref, True))
    for me, other in ((B, C), (C, B)):
        events = [e[0] for e in t.call(me, "events") if e[1] == other]
        # Exactly one connection at a time: up, then down/up per round, never two ups in a row.
        assert events == ["up"] + ["down", "up"] * rounds, (me, events)


def test_a_connect_answered_by_a_greater_node_whose_own_attempt_hangs_still_succeeds(
        c: support.Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tie-break of simultaneous connects lets the greater name's attempt win, but only
    # an attempt whose connection is up: one stuck on a stale port must not refuse ours.
    real_lookup = epmd.lookup
    with socket.socket() as s:
        s.bind((HOST, 0))
        stale_port = s.getsockname()[1]  # nothing listens here once the socket is closed

    def stale_for_a(host: str, short: str, port: int, timeout: float) -> Any:
        found = real_lookup(host, short, port, timeout)
        return (stale_port, found[1]) if short == "a" and found is not None else found

    monkeypatch.setattr(epmd, "lookup", stale_for_a)
    z = c.local(f"z@{HOST}")
    a = c.local(A)
    z.transport.send(A, "from z")  # z's attempt towards a goes to the stale port
    support.wait_until(lambda: (p := z.transport._peers.get(A)) is not None and p.hs is not None, 10,
                       "z's attempt")
    started = time.monotonic()
    assert a.transport.connect(z.name, 3000) is True
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("who_connected", ["this node", "the peer"])
def test_everything_a_stopping_peer_sent_is_read_even_by_a_late_reader(
        c: support.Cluster, who_connected: str) -> None:
    # ZeroMQ may report the closed connection before this node's I/O thread has read what came
    # before it; none of it may be lost (with ZMQ_IMMEDIATE all of it was, on a DEALER).
    t = c.local(T)
    a = c.local(A)
    if who_connected == "this node":
        connected(t, A)  # our DEALER
    else:
        connected(a, T)  # our ROUTER
    t.wait_event(("up", A))
    n = 1500  # more than a few read batches
    with t.transport._lock:  # this node's I/O thread is held up meanwhile
        for i in range(n):
            a.transport.send(T, i)
            time.sleep(0.0002)  # apart: mostly one frame per message (direct sends)
        a.stop()  # the bye, then the connection closes
        time.sleep(0.3)  # the stall of this node's I/O thread goes on after the close
    t.wait_event(("down", A))
    got = [t.recv(timeout=10, match=lambda frm, obj: frm == A)[1] for _ in range(n)]
    assert got == list(range(n))


# --------------------------------------------------------------------------- failures


def test_killed_peer_is_detected_within_the_tick_bound(c: support.Cluster) -> None:
    t = c.local(T)  # the default tick: 1000 ms
    a = c.peer(A)
    connected(t, A)
    t.wait_event(("up", A))
    start = time.monotonic()
    a.kill()
    t.wait_event(("down", A), timeout=10)
    assert time.monotonic() - start < 4.0
    # It died, so epmd does not list it: no reconnect attempts go on (white-box check).
    support.wait_until(lambda: A not in t.transport._peers, 10, "retries to stop")
    assert [e for e in t.event_log if e[1] == A] == [("up", A, a.creation), ("down", A)]


@pytest.mark.parametrize("connector", ["we", "they"])
def test_a_killed_peer_is_down_when_its_tcp_connection_closes(c: support.Cluster, connector: str) -> None:
    """As Erlang's nodedown when the distribution socket closes: nothing is sent to the dead
    peer and the ticks are a minute apart, yet it is reported down at once, whichever side
    opened the connection (our DEALER's monitor, or our ROUTER's and a probe)."""
    tick = 60_000
    t = c.local(T, tick_ms=tick)
    a = c.peer(A, tick_ms=tick, connect=T if connector == "they" else None)
    if connector == "we":
        connected(t, A)
    t.wait_event(("up", A))
    conn = t.transport._peers[A].conn
    assert conn is not None and conn.outgoing == (connector == "we")  # the side under test
    a.kill()
    t.wait_event(("down", A), timeout=10)  # the ticks would take 3 minutes
    # it died, so epmd does not list it: no reconnect attempts go on
    support.wait_until(lambda: A not in t.transport._peers, 10, "retries to stop")


def test_sending_to_a_killed_peer_never_raises_and_reports_it_down(c: support.Cluster) -> None:
    t = c.local(T)
    a = c.peer(A)
    c.peer(B)
    connected(t, A)
    connected(t, B)
    t.wait_event(("up", A))
    a.kill()
    # Sends go on (most of them from this thread directly, the I/O thread being idle); the TCP
    # connection's close brings the connection down, long before the tick bound would.
    deadline = time.monotonic() + 10
    while ("down", A) not in t.event_log:
        t.transport.send(A, ("echo", "lost"))
        assert time.monotonic() < deadline, "the dead peer was never reported down"
        time.sleep(0.005)
    for _ in range(20):
        t.transport.send(A, ("echo", "lost"))  # still no exception
    support.wait_until(lambda: A not in t.transport._peers, 10, "retries to stop")
    # up once, then down (a later send makes a new attempt, which fails and says down again)
    events = [e for e in t.event_log if e[1] == A]
    assert events[0] == ("up", A, a.creation)
    assert events[1:] and all(e == ("down", A) for e in events[1:]), events
    # the other connection is untouched
    t.transport.send(B, ("echo", "still here"))
    assert t.recv(match=lambda frm, obj: frm == B) == (B, "still here")


def test_a_connection_attempt_during_interpreter_exit_fails_and_the_io_thread_lives_on(
        c: support.Cluster, caplog: pytest.LogCaptureFixture) -> None:
    t = c.local(T)
    # At interpreter exit every executor refuses new work, as this one does now; a send to a
    # node that is not connected then still ends in a reported failure, not a crashed thread.
    assert t.transport._executor is not None
    t.transport._executor.shutdown()
    nobody = f"nobody@{HOST}"
    with caplog.at_level(logging.DEBUG, logger="nodes.transport"):
        t.transport.send(nobody, "lost")
        t.wait_event(("down", nobody))
    assert "interpreter is exiting" in caplog.text
    assert "crashed" not in caplog.text
    assert t.transport._thread is not None and t.transport._thread.is_alive()


def test_epmd_forgets_a_killed_node(c: support.Cluster) -> None:
    a = c.peer(A)
    assert epmd.lookup(HOST, "a", c.epmd_port) == (a.port, a.creation)
    a.kill()
    support.wait_until(lambda: epmd.lookup(HOST, "a", c.epmd_port) is None, 5, "the entry to go")


def test_hung_peer_is_detected_by_ticks_and_the_healed_partition_reconnects(c: support.Cluster) -> None:
    tick = 200
    t = c.local(T, tick_ms=tick)
    a = c.peer(A, tick_ms=tick)
    connected(t, A)
    t.wait_event(("up", A))
    a.signal(signal.SIGSTOP)  # alive to TCP, silent to us: only the ticks can tell
    start = time.monotonic()
    t.wait_event(("down", A), timeout=10)
    elapsed = time.monotonic() - start
    assert 1.5 * tick / 1000 <= elapsed <= 3.0, elapsed
    a.signal(signal.SIGCONT)
    # Nobody calls connect: the background retries heal the connection.
    assert t.wait_event(("up", A), timeout=15) == ("up", A, a.creation)
    t.transport.send(A, ("echo", "healed"))
    assert t.recv() == (A, "healed")


def test_background_reconnection_ends_after_its_window_and_a_send_tries_again(c: support.Cluster) -> None:
    tick = 200
    t = c.local(T, tick_ms=tick, connect_timeout_ms=500, reconnect_for_ms=1500)
    a = c.peer(A, tick_ms=tick)
    connected(t, A)
    t.wait_event(("up", A))
    a.signal(signal.SIGSTOP)  # still listed by epmd, never answering: retried until the window ends
    try:
        t.wait_event(("down", A), timeout=10)
        support.wait_until(lambda: A not in t.transport._peers, 20.0, "the retries to end, A forgotten")
    finally:
        a.signal(signal.SIGCONT)
    t.transport.send(A, ("echo", "on demand"))  # as Erlang: the next send connects
    assert t.recv() == (A, "on demand")


def test_an_attempt_at_a_hung_peer_fails_at_its_deadline_however_often_we_send(c: support.Cluster) -> None:
    t = c.local(T, connect_timeout_ms=1000)
    a = c.peer(A)
    a.signal(signal.SIGSTOP)  # registered and listening, but it never answers a handshake
    stop = threading.Event()

    def keep_sending() -> None:
        while not stop.is_set():
            t.transport.send(A, "lost")
            stop.wait(0.01)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        start = time.monotonic()
        t.wait_event(("down", A), timeout=10)  # sends go on all the while
        assert time.monotonic() - start < 5.0
    finally:
        stop.set()
        sender.join()
        a.signal(signal.SIGCONT)


def test_restarted_peer_is_a_new_connection(c: support.Cluster) -> None:
    t = c.local(T)
    a = c.peer(A)
    connected(t, A)
    t.wait_event(("up", A))
    a.kill()
    t.wait_event(("down", A), timeout=10)
    a2 = c.peer(A)
    assert a2.creation != a.creation
    t.transport.send(A, ("echo", "again"))  # auto-connects to the new incarnation
    assert t.recv() == (A, "again")
    assert t.wait_event(("up", A)) == ("up", A, a2.creation)


def test_fast_restart_reports_the_old_down_before_the_new_up(c: support.Cluster) -> None:
    t = c.local(T)
    a = c.peer(A)
    connected(t, A)
    a.kill()
    a2 = c.peer(A, connect=T)  # may reach us before we noticed the old one died
    support.wait_until(lambda: len([e for e in t.event_log if e[1] == A]) >= 3, 10, "down and up")
    expected = [("up", A, a.creation), ("down", A), ("up", A, a2.creation)]
    assert [e for e in t.event_log if e[1] == A] == expected
    t.transport.send(A, ("echo", "new"))
    assert t.recv() == (A, "new")


def test_disconnect_is_not_undone_by_retries_but_a_send_reconnects(c: support.Cluster) -> None:
    tick = 200
    t = c.local(T, tick_ms=tick)
    a = c.peer(A, tick_ms=tick)
    connected(t, A)
    t.wait_event(("up", A))
    assert t.transport.disconnect(A) is True
    t.wait_event(("down", A))
    support.wait_until(lambda: f"{T} disconnected" in a.log(), 5, "the peer to hear the bye")
    assert stays(lambda: A not in t.transport.connected_nodes(), 5 * tick / 1000)
    t.transport.send(A, ("echo", "back"))  # like Erlang: a send connects again
    assert t.recv() == (A, "back")
    assert [e[0] for e in t.call(A, "events")] == ["up", "down", "up"]


def test_stop_says_bye_and_unregisters(c: support.Cluster) -> None:
    t = c.local(T)
    a = c.peer(A)
    connected(t, A)
    t.stop()
    assert t.event_log[-1] == ("down", A)
    support.wait_until(lambda: epmd.lookup(HOST, "t", c.epmd_port) is None, 5, "t's entry to go")
    support.wait_until(lambda: f"{T} disconnected" in a.log(), 5, "the peer to hear the bye")
    t.stop()  # idempotent


def test_wrong_cookie_is_refused_and_both_sides_log_it(c: support.Cluster, caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    caplog.set_level(logging.INFO, logger="nodes.transport")
    t = c.local(T)
    a = c.peer(A, cookie="another cookie")
    start = time.monotonic()
    assert t.transport.connect(A) is False
    assert time.monotonic() - start < 3  # refused, not timed out
    assert any("refused" in r.getMessage() and "cookie" in r.getMessage() for r in caplog.records)
    support.wait_until(lambda: "does not have our cookie" in a.log(), 5, "the peer to log the refusal")
    t.wait_event(("down", A))
    t.transport.send(A, ("echo", "never"))
    t.wait_event(("down", A))  # dropped, and reported
    # The other way round: a node with the wrong cookie connecting to us is refused here.
    c.peer(B, cookie="another cookie", connect=T)
    support.wait_until(lambda: any("refused a connection from b@" in r.getMessage() for r in caplog.records),
                       5, "t to log the refusal")
    assert t.transport.connected_nodes() == []
    assert t.messages.empty()
    assert all(e[0] == "down" for e in t.drain_events())


def test_epmd_restart_is_survived(c: support.Cluster) -> None:
    t = c.local(T)
    a = c.peer(A)
    connected(t, A)
    first = c.epmd_pid()
    assert first is not None
    support.kill_pid(first)

    def relisted() -> bool:
        try:
            return {"t", "a"} <= {n for n, _, _ in epmd.names(HOST, c.epmd_port)}
        except OSError:
            return False

    support.wait_until(relisted, 15, "a new epmd listing both nodes")
    assert c.epmd_pid() != first
    t.transport.send(A, ("echo", "still here"))  # the connection never depended on epmd
    assert t.recv() == (A, "still here")
    assert epmd.lookup(HOST, "a", c.epmd_port) == (a.port, a.creation)
    c.peer(B, connect=A)  # found through the new epmd, and transitively connected to us
    support.wait_until(lambda: B in t.transport.connected_nodes(), 10, "b to join")


# --------------------------------------------------------------------------- hostile input


class Evil:
    """Unpickling this creates a file: it must never happen for unauthenticated input."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def hostile_messages(evil: bytes) -> list[list[bytes]]:
    hello = {"v": PROTOCOL_VERSION, "from": f"x@{HOST}", "to": f"someone-else@{HOST}", "creation": 1}
    return [
        [os.urandom(100)],
        [b""],
        [evil],
        [evil, evil, evil],
        [os.urandom(9), os.urandom(50), os.urandom(32)],
        [frame_like(b"D", 0, [evil], os.urandom(32))],  # a session frame with a made-up MAC
        [frame_like(b"D", 0, [evil] * 200, os.urandom(32))],
        [b"h", b"not json"],
        [b"h", evil],  # a hello is parsed as JSON, never unpickled
        [b"h", json.dumps(hello).encode()],
        [b"h", b"{" + b" " * 10_000 + b"}"],
        [b"r", json.dumps({"nonce": "00", "digest": "00"}).encode()],
    ]


def raw_dealer(ctx: zmq.Context[Any], port: int) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 5000)  # closing right after a send must not discard it
    sock.connect(f"tcp://{HOST}:{port}")
    return sock


def recv_handshake(sock: zmq.Socket[Any]) -> tuple[bytes, dict[str, Any]]:
    assert sock.poll(5000), "no handshake answer"
    return codec.decode_handshake(sock.recv_multipart())


def raw_handshake(ctx: zmq.Context[Any], port: int, me: str, target: str, cookie: bytes
                  ) -> tuple[zmq.Socket[Any], codec.Session | None]:
    """The initiator's side of the handshake, done by hand."""
    sock = raw_dealer(ctx, port)
    nonce = codec.new_nonce()
    sock.send_multipart(codec.encode_handshake(b"h", {
        "v": PROTOCOL_VERSION, "from": me, "to": target, "creation": 5, "nonce": nonce.hex(),
        "mac": codec.hello_proof(cookie, me, target, 5, nonce).hex()}))
    kind, challenge = recv_handshake(sock)
    assert kind == b"c"
    transcript = codec.Transcript(me, target, 5, challenge["creation"], nonce,
                                  bytes.fromhex(challenge["nonce"]))
    proof = transcript.initiator_proof(cookie).hex()
    sock.send_multipart(codec.encode_handshake(b"r", {"nonce": nonce.hex(), "digest": proof}))
    kind, answer = recv_handshake(sock)
    if kind != b"a":
        assert kind == b"n"
        return sock, None
    assert codec.verify_proof(transcript.acceptor_proof(cookie), bytes.fromhex(answer["digest"]))
    return sock, transcript.session(cookie, initiator=True)


@pytest.mark.timeout(120)
def test_hostile_input_is_dropped_never_unpickled_and_service_continues(
        c: support.Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="nodes.transport")
    limit = 1024 * 1024
    t = c.local(T, max_frame_size=limit)
    a = c.peer(A)
    connected(t, A)
    marker = tmp_path / "pwned"
    evil = codec.dumps(Evil(marker))
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        # Strangers: garbage, pickles, bad hellos, at both the in-test node and the peer process.
        started = time.monotonic()
        for port in (t.port, a.port):
            for parts in hostile_messages(evil):
                sock = raw_dealer(ctx, port)
                sock.send_multipart(parts)
                sock.close()
            sock = ctx.socket(zmq.PUSH)  # a socket of the wrong type: ZeroMQ itself refuses it
            sock.setsockopt(zmq.LINGER, 5000)
            sock.connect(f"tcp://{HOST}:{port}")
            sock.send_multipart([evil], zmq.NOBLOCK)
            sock.close()
            with socket.create_connection((HOST, port)) as raw:  # not even ZeroMQ
                raw.sendall(os.urandom(4096) + evil)
        hostile = len(hostile_messages(evil)) - 1  # all but the hello for another node count as dropped
        support.wait_until(lambda: t.transport.stats["dropped_frames"] >= hostile, 10, "t to drop them all")
        support.wait_until(lambda: "dropped a message" in a.log(), 10, "a to drop them")
        stranger_warnings = [r for r in caplog.records if "has not completed the handshake" in r.getMessage()]
        # Rate-limited: at most one warning a second (well under the dozen messages dropped).
        assert 1 <= len(stranger_warnings) <= 2 + (time.monotonic() - started)

        # Wrong cookie, then a pickle anyway.
        sock, session = raw_handshake(ctx, t.port, f"intruder@{HOST}", T, b"wrong cookie")
        assert session is None
        sock.send_multipart([frame_like(b"D", 0, [evil], os.urandom(32))])
        sock.close()

        # The right cookie: frames with a bad MAC or too large are dropped, good ones still pass.
        sock, session = raw_handshake(ctx, t.port, f"raw@{HOST}", T, support.COOKIE.encode())
        assert session is not None
        t.wait_event(("up", f"raw@{HOST}"))
        sock.send_multipart(session.seal(codec.DATA, [codec.dumps("first")]))
        assert t.recv() == (f"raw@{HOST}", "first")
        dropped = t.transport.stats["dropped_frames"]
        kind, seq, _, mac = frame_fields(session.seal(codec.DATA, [b"placeholder"])[0])
        session.send_seq -= 1  # the forged frame must not use up a sequence number
        sock.send_multipart([frame_like(kind, seq, [evil], mac)])
        # each payload fits, the sum does not (by a byte: the frame is still within ZMQ_MAXMSGSIZE)
        too_big = session.seal(codec.DATA, [b"x" * (limit // 2), b"x" * (limit // 2 + 1)])
        session.send_seq -= 1
        sock.send_multipart(too_big)
        sock.send_multipart(session.seal(codec.DATA, [codec.dumps("second")]))
        assert t.recv() == (f"raw@{HOST}", "second")
        assert any("bad frame MAC" in r.getMessage() for r in caplog.records)
        assert t.transport.stats["dropped_frames"] == dropped + 2  # the second warning was rate-limited
        # A single part over the limit: ZeroMQ drops that connection (ZMQ_MAXMSGSIZE).
        sock.send_multipart([b"x" * (2 * limit)])
        sock.close()
    finally:
        ctx.destroy(linger=0)

    # Authenticated traffic between the real nodes carries on; nothing was unpickled.
    for i in range(100):
        t.transport.send(A, ("echo", i))
    assert [t.recv()[1] for _ in range(100)] == list(range(100))
    assert not marker.exists()


@pytest.mark.parametrize("direct", [True, False], ids=["direct-sends", "queued-only"])
def test_sends_from_another_thread_while_the_peer_answers_keep_order_and_lose_nothing(
        c: support.Cluster, direct: bool) -> None:
    # A thread sends while the peer's echoes pour in: sends made directly from that thread
    # (connection up, I/O thread idle) and sends queued behind a busy I/O thread interleave,
    # and a direct send may consume the socket's ZMQ_FD signal for input that just arrived:
    # every echo must still come back, in order.
    t = c.local(T, direct_send=direct)
    c.peer(A)
    connected(t, A)
    n = 3000
    direct_before = t.transport.stats["direct_frames"]

    def sender() -> None:
        for i in range(n):
            t.transport.send(A, ("echo", i))
            if i % 100 == 0:
                time.sleep(0.002)  # let the I/O thread fall asleep now and then

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        assert [t.recv(timeout=20)[1] for _ in range(n)] == list(range(n))
    finally:
        thread.join(20)
    direct_frames = t.transport.stats["direct_frames"] - direct_before
    if direct:
        assert direct_frames > 0, "no send went out from the sending thread"
    else:
        assert direct_frames == 0


# --------------------------------------------------------------------------- speed


def test_round_trip_latency_and_wakeups(c: support.Cluster) -> None:
    t = c.local(T)
    c.peer(A)
    connected(t, A)
    for i in range(100):
        t.transport.send(A, ("echo", i))
        t.recv()
    wakeups = t.transport.stats["wakeups"]
    samples = []
    for i in range(1000):
        start = time.perf_counter()
        t.transport.send(A, ("echo", i))
        assert t.recv() == (A, i)
        samples.append(time.perf_counter() - start)
    samples.sort()
    assert samples[500] < 0.005, f"p50 round trip {samples[500] * 1e6:.0f} µs"
    assert t.transport.stats["wakeups"] - wakeups <= 1000  # never more than one wake-up per send


def _thread_cpu_s(thread: Any) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs per-thread CPU clocks")
def test_the_io_thread_spins_while_messages_stream_in_and_sleeps_when_they_stop(c: support.Cluster) -> None:
    # a window no loaded machine can miss between two echoes; ticks far apart, so that the
    # idle second below is idle (with the default 1 ms window two ticks seldom come that close)
    t = c.local(T, spin_us=300_000, tick_ms=60_000)
    c.peer(A, tick_ms=60_000)
    connected(t, A)
    stats = t.transport.stats
    hits = stats["spins_ended_by_work"]
    for i in range(200):
        t.transport.send(A, ("echo", i))
        assert t.recv() == (A, i)
    # after the first echoes every answer arrives while the thread spins instead of sleeping
    assert stats["spins_ended_by_work"] - hits >= 100, dict(stats)
    # once the stream stops it gives up within the window and sleeps (past the window after
    # its last work, nothing but new work can make it spin again)
    deadline = time.monotonic() + 10
    while t.transport._streaming:
        assert time.monotonic() < deadline, f"still spinning 10 s after the last message: {dict(stats)}"
        time.sleep(0.05)
    assert stats["spins_given_up"] >= 1
    thread = t.transport._thread
    before = _thread_cpu_s(thread)
    time.sleep(1.5)  # this test is about an idle second: spinning would burn most of it
    assert _thread_cpu_s(thread) - before < 0.15


def test_spinning_can_be_turned_off_and_a_negative_window_is_refused(c: support.Cluster) -> None:
    t = c.local(T, spin_us=0)
    c.peer(A)
    connected(t, A)
    for i in range(50):
        t.transport.send(A, ("echo", i))
        assert t.recv() == (A, i)
    assert t.transport.stats["spins_ended_by_work"] == 0
    assert t.transport.stats["sleeps"] >= 50  # it waited for every answer asleep
    with pytest.raises(ValueError, match="spin_us"):
        Transport(B, 1, b"cookie", on_message=print, on_node_up=print, on_node_down=print, spin_us=-1)

"""Connections between nodes over ZeroMQ: handshake, authenticated frames, ticks, reconnects.

This room moves Python objects between node OS processes; it knows nothing of processes,
pids or mailboxes.  The node layer owns one :class:`Transport`::

    t = Transport("1@host", creation, cookie,
                  on_message=lambda from_node, obj: ...,       # in order per peer
                  on_node_up=lambda node, creation: ...,
                  on_node_down=lambda node: ...)
    port = t.start()                 # bind, register with epmd, start the I/O thread
    t.connect("2@host")              # blocking: True once both sides proved the cookie
    t.send("2@host", obj)            # never blocks; auto-connects; order kept per peer
    t.connected_nodes(); t.disconnect("2@host"); t.stop()

**Threading.**  ZeroMQ sockets are not thread-safe: whoever holds the transport's lock owns
the sockets and the sessions.  The I/O thread holds it whenever it is not blocked in poll; it
polls file descriptors only (each socket's ZMQ_FD and a wake-up socketpair), so a blocked I/O
thread touches no socket.  :meth:`Transport.send` may be called from any thread: it pickles
the object *in the caller's thread* (so the message is a snapshot taken at the moment of the
send, as in Erlang, and an unpicklable object fails at the call site).  Then, if the peer is
connected, nothing is queued, the last frame to that peer left at least ``DIRECT_SEND_GAP``
(100 µs) ago and the lock is free (the I/O thread is idle), the caller seals the frame and
hands it to ZeroMQ itself (a *direct send*: no thread wake-up; a failure is left to the I/O
thread to report).  Otherwise it appends the bytes to a deque and wakes the I/O
thread if it is asleep (a byte on the socketpair; none while it is running, see
``stats["wakeups"]``), which batches everything queued for one peer into one frame.  Direct
sends can be turned off with ``direct_send=False`` or ``NODES_DIRECT_SEND=0`` (A/B
benchmarks).  The callbacks run on the I/O thread, in order: they must be quick and must not
block (put the object in a mailbox and return); they may call :meth:`send`,
:meth:`disconnect` and :meth:`connect` (which then only starts the attempt).

**Spinning.**  While messages stream in (a wait ended less than ``spin_us``, default
``NODES_SPIN_US`` else 1000 µs, after the work before it), the I/O thread does not sleep
between messages: it polls its descriptors and queues without waiting, yielding the CPU
between two looks, for at most ``spin_us`` after its last work, then sleeps as before.  A
sleeping thread pays on this kind of VM when woken (tens of µs before it runs, and a halted
virtual CPU is slow to wake): on the 2-core benchmark VM spinning took a 3-member group's
one-client p50 from about 0.66 to 0.50 ms and 32 clients from about 25,000 to 29,700
commands/s.  A lone message after a quiet spell (a tick) never starts a spin; ``spin_us=0`` (or
``NODES_SPIN_US=0``) turns it off (``stats["spins_ended_by_work"]`` / ``["spins_given_up"]``
count how spins ended).

**Connections.**  Each node binds one ROUTER socket (ROUTER_MANDATORY, so a send to a
vanished peer fails instead of being dropped) on ``bind_host`` (the node name's host part if
it is an IP address, else 0.0.0.0) and registers its port with epmd.  To reach ``name@host``
it asks epmd on ``host`` for the port and connects a DEALER (not ZMQ_IMMEDIATE, which would
discard unread messages when the connection closes); the hello goes when the DEALER's socket
monitor says the connection is up.  One connection carries both directions.  If both
nodes connect at once, the one initiated by the node with the greater name wins (as in
Erlang's handshake): the other side answers "nok" and the loser waits for the winner.
The number of peers is bounded by the process's file-descriptor limit (about four descriptors
per connection), not by ZeroMQ's default socket limit (see :func:`nodes.zsockets.max_sockets`).

**Handshake** (``[kind, JSON]`` messages, never pickle; see :mod:`nodes.codec`)::

    initiator -> acceptor   h {"v": 3, "from": I, "to": A, "creation": cI, "nonce": nI,
                               "mac": HMAC(cookie, hello label + I, A, cI, nI)}
    acceptor  -> initiator  c {"name": A, "creation": cA, "nonce": nA}   (or k = nok, n = refused)
    initiator -> acceptor   r {"nonce": nI, "digest": HMAC(cookie, initiator label + transcript)}
    acceptor  -> initiator  a {"digest": HMAC(cookie, acceptor label + transcript)}  (or n "cookie")

The cookie never crosses the wire; the acceptor proves itself only after the initiator did.
A simultaneous connect is settled, and an older attempt replaced, at the hello, and only by
a hello whose ``mac`` checks (its nonce not seen before): a stranger sending hellos that claim
a node's name cannot cancel that node's attempts.  Such a hello is still challenged, apart, so
a node with a wrong cookie learns at its reply why it is refused; when the pending attempts
reach their bound, the oldest unproven one gives way first.
Both then derive per-direction session keys, and every later frame is MAC'd and sequenced
(:class:`nodes.codec.Session`).  Data frames carry one pickle per message; tick frames keep
an idle connection alive; a node-list frame tells the peer which nodes we are connected to
(it connects to those it lacks: the mesh is transitive); a bye frame announces
:meth:`disconnect`.  ``[b"x"]`` tells a peer that we do not know its connection (anymore).

**Failure.**  A connection whose TCP connection closes (the peer's process died, even by
SIGKILL) is down at once, as Erlang's distribution sees its socket close: ZeroMQ would
reconnect silently, so a socket monitor on each DEALER reports the close, and one on the
ROUTER, which does not say whose connection it was, sets off a tick to every peer that
connected to us (the ROUTER refuses a send to a routing id that is gone).  Either way, what
the peer sent before the close is read first: a connection a send found gone is closed
only after its socket is read.  A tick is sent
when nothing else was for 3/4 of ``tick_ms`` (default ``NODES_TICK_MS``, else 1000); a peer
silent for 3 ticks (hung, or behind a partition) is down.  A send ZeroMQ would drop
(an unknown routing id, a full pipe) also brings the connection down: nothing is
dropped silently.  A connection lost this way is retried in the background with backoff
until epmd on the peer's host no longer lists it, :meth:`disconnect` is called, the peer
said bye, or ``reconnect_for_ms`` (default 60,000) have passed since it was lost: a host that
vanished is not looked up every second for ever, and the next send to it tries again, as
Erlang connects on demand.  A peer that comes back with a new creation is reported down
(old) then up (new).
Frames from strangers or that fail their checks are dropped and logged (at most one warning
per second per source, with a count) and never unpickled.

**Fault injection.**  :meth:`Transport.set_blocked` is a partition switch: every frame to and
from the chosen nodes is dropped (``nodes.dist.partition`` / ``nodes.dist.heal``).
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import zmq

from . import codec, epmd
from . import zsockets as zs
from ._sched import batch_scheduling, thread_done, unheld_thread
from .connections import Conn, Peer, Waiter
from .terms import split_node_name

log = logging.getLogger("nodes.transport")

# 3: a hello carries a cookie MAC (codec.hello_proof); 2: a session frame is one ZeroMQ part
# (nodes.codec); 1: a part per payload
PROTOCOL_VERSION = 3
DEFAULT_TICK_MS = 1000
TICKS_UNTIL_DOWN = 3
DEFAULT_CONNECT_TIMEOUT_MS = 5000
DEFAULT_RECONNECT_FOR_MS = 60_000  # how long a lost connection is retried in the background
DEFAULT_HWM = 100_000
MAX_BATCH = 1000  # messages per data frame
RECV_BATCH = 256  # messages read from one socket before looking at the rest
DRAIN_BATCHES = 64  # batches read from a socket whose connection closed, before it is dropped
MAX_PENDING_INCOMING = 64
DIRECT_SEND_GAP = 100e-6  # s: a send this soon after the previous frame to the peer is queued
DEFAULT_SPIN_US = 1000  # how long the I/O thread polls without sleeping after work, in a stream
PROBE_GAP = 0.05  # s: between two rounds of ticks to the peers that connected to us (_probe_incoming)
INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 1.0
RESOLVE_TIMEOUT = 2.0

# Handshake message kinds (session frame kinds live in codec).
HELLO, CHALLENGE, REPLY, ACK, NOK, REFUSED, RESET = b"h", b"c", b"r", b"a", b"k", b"n", b"x"


def default_bind_host(node: str) -> str:
    """The node's host part when it is an IP address (long names), else all interfaces."""
    _, host = split_node_name(node)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "0.0.0.0"
    return host


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _nothing() -> None:
    """A command that only makes the I/O thread run one more round."""


# Between two looks of a spinning I/O thread: any other runnable thread on this CPU goes first.
_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


class _RateLimitedLog:
    """At most one warning per key per interval; the next one says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0):
        self._logger = logger
        self._interval = interval
        self._seen: dict[str, list[float]] = {}  # key -> [last time logged, suppressed count]

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return
        suppressed = int(entry[1]) if entry else 0
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = [now, 0]
        if suppressed:
            msg += " (%d similar message(s) suppressed)"
            args = (*args, suppressed)
        self._logger.warning(msg, *args)


class Transport:
    """Authenticated, ordered, failure-detecting links from this node to other nodes.

    See the module docstring for the threading model and the wire format.
    """

    def __init__(
        self,
        node_name: str,
        creation: int,
        cookie: bytes | str,
        *,
        on_message: Callable[[str, Any], None],
        on_node_up: Callable[[str, int], None],
        on_node_down: Callable[[str], None],
        bind_host: str | None = None,
        epmd_port: int | None = None,
        tick_ms: int | None = None,
        connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS,
        max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE,
        direct_send: bool | None = None,
        hwm: int = DEFAULT_HWM,
        spin_us: int | None = None,
        reconnect_for_ms: int = DEFAULT_RECONNECT_FOR_MS,
    ):
        self._short, self._host = split_node_name(node_name)
        if isinstance(cookie, str):
            cookie = cookie.encode()
        if not cookie:
            raise ValueError("the cookie must not be empty")
        self.node_name = node_name
        self.creation = int(creation)
        self._cookie = cookie
        self._on_message = on_message
        self._on_node_up = on_node_up
        self._on_node_down = on_node_down
        self.bind_host = bind_host or default_bind_host(node_name)
        self.epmd_port = epmd_port or epmd.default_port()
        self.tick_ms = tick_ms or _env_int("NODES_TICK_MS", DEFAULT_TICK_MS)
        self._tick_s = self.tick_ms / 1000
        self._hk_period = min(self._tick_s / 4, 0.25)
        self._hs_timeout = connect_timeout_ms / 1000
        self._reconnect_for_s = reconnect_for_ms / 1000
        self._max_frame_size = max_frame_size
        self._direct = (direct_send if direct_send is not None
                        else os.environ.get("NODES_DIRECT_SEND", "1") != "0")
        self._hwm = hwm
        spin = _env_int("NODES_SPIN_US", DEFAULT_SPIN_US) if spin_us is None else spin_us
        if spin < 0:
            raise ValueError(f"spin_us must be >= 0 (0: never spin), got {spin!r}")
        self._spin_s = spin / 1e6
        self.port: int | None = None
        self.stats: collections.Counter[str] = collections.Counter()
        self._rlog = _RateLimitedLog(log)

        # Shared with other threads (deque appends/pops and attribute reads are atomic).
        self._outq: collections.deque[tuple[str, bytes, bool]] = collections.deque()
        self._cmds: collections.deque[Callable[[], None]] = collections.deque()
        self._sleeping = False
        self._wake_pending = False
        # When the I/O thread last did some work, and whether messages stream in (see _spin).
        self._last_busy = 0.0
        self._streaming = False
        # Held by the I/O thread whenever it is not blocked in poll, and by a thread sending
        # directly (see send_encoded): whoever holds it owns the sockets and the sessions.
        self._lock = threading.Lock()
        self._io_ident: int | None = None
        self._up: frozenset[str] = frozenset()
        self._closed = False
        self._stop_called = False
        self._valid_names: set[str] = set()
        # Partition switch (fault injection, :meth:`set_blocked`): read and written by the I/O thread.
        self._blocked: frozenset[str] = frozenset()

        # Owned by the I/O thread.
        self._peers: dict[str, Peer] = {}
        self._by_rid: dict[bytes, Conn] = {}
        self._by_sock: dict[zmq.Socket[Any], Conn] = {}
        self._pending_in: dict[bytes, Conn] = {}
        self._recently_closed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._hello_nonces: collections.OrderedDict[bytes, None] = collections.OrderedDict()  # replays
        self._reset_at: collections.OrderedDict[bytes, float] = collections.OrderedDict()  # rid -> last RESET
        self._stopping = False
        self._now = time.monotonic()
        self._next_housekeeping = 0.0
        self._last_housekeeping = self._now

        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context[Any] | None = None
        self._router: zmq.Socket[Any] | None = None
        self._router_monitor: zmq.Socket[Any] | None = None
        self._router_monitor_fd = -1
        # Descriptors the last wait found readable, and whether the next round must look at every
        # socket monitor anyway (housekeeping): see _poll_sockets.
        self._ready: frozenset[int] = frozenset()
        self._all_monitors = True
        self._reprobe_incoming = False
        self._probed_at = float("-inf")
        # connections to our ROUTER that a send found gone, closed once the ROUTER is read
        self._router_lost: dict[Conn, str] = {}
        self._poller = zs.FdPoller()
        self._registration: epmd.Registration | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_fd = self._wake_r.fileno()  # the poller reports non-zmq sockets by fd
        self._wake_w.setblocking(False)

    # ------------------------------------------------------------------ public API

    def start(self) -> int:
        """Bind, register with epmd (starting it if needed), start the I/O thread; return the port.

        Raises :class:`nodes.epmd.NameTaken` if another live node has this name.
        """
        if self._thread is not None:
            raise RuntimeError("transport already started")
        ctx: zmq.Context[Any] = zmq.Context(io_threads=1)
        ctx.set(zmq.MAX_SOCKETS, zs.max_sockets(ctx.get(zmq.MAX_SOCKETS)))  # before the first socket
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._socket_options(router, self.bind_host)
        try:
            router.bind(zs.endpoint(self.bind_host, "*"))
            endpoint = router.getsockopt(zmq.LAST_ENDPOINT)
            assert isinstance(endpoint, bytes)
            port = int(endpoint.rsplit(b":", 1)[1])
            epmd.ensure_running(self.epmd_port)
            self._registration = epmd.register(self._short, port, self.creation, self.epmd_port)
        except BaseException:
            router.close(linger=0)
            ctx.term()
            # What was queued before the start will never leave: its senders hear of a lost
            # connection (a monitor's DOWN, a link's EXIT), as after any attempt that failed.
            self._closed = True
            self._report_queued_down()
            raise
        self._ctx, self._router, self.port = ctx, router, port
        # File descriptors only: the I/O thread blocks in poll without the lock, while another
        # thread may be using a socket (ZMQ_FD is edge-like: see _poll_sockets).
        self._poller.register(router.getsockopt(zmq.FD))
        self._poller.register(self._wake_fd)
        # A TCP connection that closes (the peer's process died) is noticed at once, as in
        # Erlang, not only when a send fails or the ticks stop: see _probe_incoming.
        self._router_monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._router_monitor_fd = cast(int, self._router_monitor.getsockopt(zmq.FD))
        self._poller.register(self._router_monitor_fd)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nodes-epmd-lookup",
                                            initializer=unheld_thread)
        self._thread = threading.Thread(target=self._run, name=f"nodes-transport-{self.node_name}",
                                        daemon=True)
        self._thread.start()
        log.info("node %s (creation %d) listening on %s", self.node_name, self.creation,
                 zs.endpoint(self.bind_host, port))
        return port

    def send(self, node: str, obj: object, *, quiet: bool = False) -> bool:
        """Queue ``obj`` for ``node``; never blocks, connects in the background if needed.

        If the connection cannot be made or breaks, queued messages are dropped and
        ``on_node_down(node)`` is called.  Raises only for a bad node name or an object that
        cannot be serialized (:class:`nodes.codec.EncodeError`): programming errors.

        Dropped messages are logged as a warning, except ``quiet`` ones: runtime signals
        whose meaning ends with the other node (a demonitor after a call, say), which Erlang
        loses silently too; their loss is logged at debug level.

        False when the transport is stopped (or failed to start): ``obj`` is not sent, and
        ``on_node_down`` may not follow, so the caller must treat it as a lost connection.
        """
        return self.send_encoded(node, codec.dumps(obj), quiet=quiet)

    def send_encoded(self, node: str, data: bytes, *, quiet: bool = False) -> bool:
        """:meth:`send` for bytes already made by :func:`nodes.codec.dumps` (pickle once, send to many)."""
        if node not in self._valid_names:
            split_node_name(node)
            if len(self._valid_names) > 10_000:
                self._valid_names.clear()
            self._valid_names.add(node)
        if len(data) > self._max_frame_size:
            raise codec.EncodeError(f"message of {len(data)} bytes exceeds the frame limit of "
                                    f"{self._max_frame_size}")
        if self._closed:
            return False
        if self._direct and not self._outq and threading.get_ident() != self._io_ident:
            # Fast path: the connection is up and the I/O thread is idle (the lock is free), so
            # this thread seals and hands the frame to ZeroMQ itself, saving a thread wake-up
            # (and on this kind of VM the cold start of the woken thread) per message.
            peer = self._peers.get(node)
            conn = peer.conn if peer is not None else None
            # A burst (the last frame to this peer left moments ago) is left to the I/O thread,
            # which sends what piles up meanwhile as one frame: direct sends do not batch.
            if (peer is not None and conn is not None
                    and time.monotonic() - conn.last_send >= DIRECT_SEND_GAP
                    and self._lock.acquire(False)):
                try:
                    # re-checked under the lock: nothing queued before us (order), still up
                    if (not self._outq and peer.conn is conn and not conn.closed and not conn.broken
                            and not self._closed and node not in self._blocked):
                        self._direct_send(conn, data)
                        return True
                finally:
                    self._lock.release()
        self._outq.append((node, data, quiet))
        if self._closed:
            # stopped meanwhile: the shutdown may have missed it (the caller answers for it)
            return False
        if self._sleeping:
            self._wake()
        return True

    def _direct_send(self, conn: Conn, data: bytes) -> None:
        """One data frame from the calling thread; the caller holds the lock."""
        session = conn.session
        assert session is not None
        try:
            sock = self._conn_send(conn, session.seal(codec.DATA, (data,)))
        except zmq.ZMQError as error:
            # Only the I/O thread closes connections (it owns the poller and the callbacks).
            conn.broken = True
            why = zs.send_failure(error)
            self._post(lambda: self._lost_on_send(conn, f"send failed: {why}"))
            return
        conn.last_send = time.monotonic()
        stats = self.stats
        stats["direct_frames"] += 1
        stats["frames_sent"] += 1
        stats["messages_sent"] += 1
        # The send may have consumed the socket's ZMQ_FD signal for input that arrived
        # meanwhile: make sure the I/O thread looks at the socket before it sleeps again.
        if zs.events(sock) & zs.POLLIN:
            stats["direct_found_input"] += 1
            self._post(_nothing)

    def connect(self, node: str, timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS) -> bool:
        """Connect to ``node`` (and, transitively, to its peers); True once authenticated.

        False for a wrong cookie, a node epmd does not know, or one that cannot be reached
        within ``timeout_ms``.  Called from a callback (on the I/O thread) it cannot wait: it
        starts the attempt and says whether the node is connected already.
        """
        split_node_name(node)
        if node == self.node_name:
            return True
        self._require_running()
        waiter = Waiter()
        self._post(lambda: self._cmd_connect(node, waiter, timeout_ms / 1000))
        if threading.current_thread() is self._thread:
            return node in self._up
        return waiter.wait(timeout_ms / 1000 + 1.0)

    def disconnect(self, node: str) -> bool:
        """Drop the connection to ``node`` (the peer is told; neither side reconnects on its own).

        True if there was a connection or an attempt.  ``on_node_down(node)`` follows.
        """
        split_node_name(node)
        self._require_running()
        waiter = Waiter()
        self._post(lambda: self._cmd_disconnect(node, waiter))
        if threading.current_thread() is self._thread:
            return node in self._up
        return waiter.wait(10.0)

    def set_blocked(self, nodes: Iterable[str]) -> None:
        """Partition switch for fault injection: drop every frame to and from ``nodes``.

        Data, ticks, handshakes and byes alike, in both directions, so a connection to a
        blocked node dies of silence (after ``3 * tick_ms``) and reconnection attempts fail
        until it is unblocked, as in a real network partition.  Set it on the nodes of both
        sides.  ``set_blocked(())`` heals: handshakes that were talking into the void are
        restarted at once.  Returns once the I/O thread applied the change.
        """
        blocked = frozenset(nodes)
        for name in blocked:
            split_node_name(name)
        self._require_running()
        waiter = Waiter()
        self._post(lambda: self._cmd_set_blocked(blocked, waiter))
        if threading.current_thread() is not self._thread:
            waiter.wait(10.0)

    def blocked_nodes(self) -> frozenset[str]:
        """The nodes :meth:`set_blocked` cut us off from."""
        return self._blocked

    def connected_nodes(self) -> list[str]:
        """Nodes with an authenticated connection right now."""
        return sorted(self._up)

    def stop(self) -> None:
        """Say bye to every peer, close the sockets, unregister from epmd.

        ``on_node_down`` is called for every connected peer.  Idempotent.
        """
        if self._stop_called:
            return
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("Transport.stop() cannot be called from a transport callback")
        self._stop_called = True
        self._closed = True
        if self._thread is None:
            return
        self._post(self._cmd_stop)
        self._thread.join(timeout=10.0)
        if self._registration is not None:
            self._registration.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __del__(self) -> None:
        # The wake sockets are closed only here: closing them in stop() could race with a
        # concurrent send() writing to a file descriptor number that was reused meanwhile.
        for sock in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if sock is not None:
                sock.close()

    # ------------------------------------------------------------------ cross-thread plumbing

    def _require_running(self) -> None:
        if self._thread is None:
            raise RuntimeError("transport not started")
        if self._closed:
            raise RuntimeError("transport stopped")

    def _post(self, fn: Callable[[], None]) -> None:
        self._cmds.append(fn)
        if self._sleeping:
            self._wake()

    def _wake(self) -> None:
        # Callers check _sleeping first; the I/O thread sets it, re-checks the queues, then
        # blocks, so an append either is seen by that re-check or finds _sleeping set and
        # writes a byte.  _wake_pending avoids a write per message while the thread wakes up.
        if not self._wake_pending:
            self._wake_pending = True
            self.stats["wakeups"] += 1
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # buffer full (a byte is already there) or closed

    # ------------------------------------------------------------------ the I/O thread

    def _socket_options(self, sock: zmq.Socket[Any], host: str) -> None:
        if ":" in host:
            sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        # A peer sending one part bigger than any frame we accept is disconnected by ZeroMQ itself.
        sock.setsockopt(zmq.MAXMSGSIZE, codec.max_message_size(self._max_frame_size))

    def _run(self) -> None:
        batch_scheduling()
        self._io_ident = threading.get_ident()
        lock = self._lock
        try:
            while not self._stopping:
                with lock:
                    busy = self._step()
                if busy:
                    self._last_busy = time.monotonic()
                elif not self._stopping and not self._spin():
                    self._idle_wait()
        except Exception:
            log.critical("transport I/O thread of %s crashed", self.node_name, exc_info=True)
        finally:
            with lock:
                self._shutdown()
            thread_done()

    def _step(self) -> bool:
        """One round of work under the lock; False if there was nothing to do."""
        self._now = time.monotonic()
        worked = False
        # sends before commands: a send queued before a disconnect() from the same thread
        # must go out on the old connection, not revive it afterwards
        if self._outq:
            self._flush_outq()
            worked = True
        if self._cmds:
            self._run_commands()
            worked = True
        if self._now >= self._next_housekeeping:
            self._housekeeping()
        # Last: a send (a tick, a batch) may consume a socket's ZMQ_FD signal, so every send of
        # this round must come before the ZMQ_EVENTS checks that decide whether we may sleep.
        if self._poll_sockets():
            worked = True
        return worked

    def _spin(self) -> bool:
        """Poll without sleeping while messages stream in; True once there is work.

        See **Spinning** in the module docstring for when and why.  A sender sees
        ``_sleeping`` False meanwhile, so it appends to the queue without writing to the
        wake-up socket.
        """
        if not self._streaming:
            return False
        end = self._last_busy + self._spin_s
        poll, clock, pause = self._poller.poll, time.monotonic, _yield_cpu
        while not (self._outq or self._cmds or self._stopping):
            ready = poll(0)
            if ready:
                self._woken(ready)
                break
            if clock() >= end:
                self._streaming = False
                self.stats["spins_given_up"] += 1
                return False
            pause()
        self.stats["spins_ended_by_work"] += 1
        return True

    def _idle_wait(self) -> None:
        timeout = max(0, int((self._next_housekeeping - time.monotonic()) * 1000) + 1)
        self._sleeping = True
        if self._outq or self._cmds:
            self._sleeping = False
            return
        ready = self._poller.poll(timeout)
        self._sleeping = False
        self.stats["sleeps"] += 1
        self._streaming = time.monotonic() - self._last_busy < self._spin_s
        self._woken(ready)

    def _woken(self, ready: list[int]) -> None:
        """Note what a wait found readable (see _poll_sockets); empty the wake-up socket."""
        self._ready = frozenset(ready)
        for fd in ready:
            if fd == self._wake_fd:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
                self._wake_pending = False

    def _cmd_set_blocked(self, blocked: frozenset[str], waiter: Waiter) -> None:
        healed = self._blocked - blocked
        self._blocked = blocked
        for name in healed:
            peer = self._peers.get(name)
            if peer is None:
                continue
            if peer.hs is not None:
                self._close(peer.hs, "partition healed: restarting the handshake", retry=True)
            if peer.retry and peer.conn is None:
                peer.backoff = INITIAL_BACKOFF
                peer.retry_at = self._now
        waiter.set(True)

    def _run_commands(self) -> None:
        cmds, outq = self._cmds, self._outq
        while cmds:
            if outq:
                # Sends queued before this command was posted go first, as _step intends: one
                # queued after this round's flush, and a stop posted after it (a node stopping
                # tells its processes' deaths, then stops distribution), were both seen only
                # here, and the stop dropped the deaths untold (their monitors saw noconnection).
                self._flush_outq()
            fn = cmds.popleft()
            try:
                fn()
            except Exception:
                log.exception("transport command failed")

    def _poll_sockets(self) -> bool:
        """Read whatever every socket has; True if any had something.

        The poller only watches ZMQ_FD, which signals that a socket has *news*, not that it
        is readable, and any operation on the socket (ours, or a direct send's) may consume
        that signal: so every socket's ZMQ_EVENTS is checked here before each sleep.

        Socket monitors are the exception: only this thread touches them, so their ZMQ_FD
        stays readable until this thread reads their events, and a monitor is looked at only
        when the last wait found its descriptor readable (a wait with one readable returns at
        once), and at every housekeeping, for a thread kept busy without waiting.  That spares
        two or three ZMQ_EVENTS reads per round, 3-6 µs each in a thread just woken.
        """
        ready, everything = self._ready, self._all_monitors
        self._ready, self._all_monitors = frozenset(), False
        got = self._read_router()
        monitor = self._router_monitor
        if (monitor is not None and (everything or self._router_monitor_fd in ready)
                and zs.events(monitor) & zs.POLLIN):
            self._on_router_event(monitor)
            got = True
        for sock, conn in list(self._by_sock.items()):
            if conn.closed:
                continue
            if zs.events(sock) & zs.POLLIN:
                self._read_dealer(conn)
                got = True
            # a connection being made is watched every round: its hello waits for the monitor
            if (conn.monitor is not None and not conn.closed
                    and (everything or conn.state == "connecting" or conn.monitor_fd in ready)
                    and zs.events(conn.monitor) & zs.POLLIN):
                self._on_dealer_event(conn)
                got = True
        if self._router_lost:
            self._close_lost_incoming()
            got = True
        return got

    def _read_router(self) -> bool:
        """Read what waits on the ROUTER (connections peers made to us); True if anything did."""
        router = self._router
        assert router is not None
        if not zs.events(router) & zs.POLLIN:
            return False
        self._recv_batch(router, self._on_router_message)
        return True

    def _read_dealer(self, conn: Conn) -> None:
        """Read what waits on the DEALER of a connection we made."""
        assert conn.sock is not None
        self._recv_batch(conn.sock, functools.partial(self._on_dealer_message, conn), conn)

    def _drain_router(self) -> None:
        """Read everything waiting on the ROUTER (in batches), before connections on it close."""
        for _ in range(DRAIN_BATCHES):
            if not self._read_router():
                return

    def _on_router_event(self, monitor: zmq.Socket[Any]) -> None:
        """Some connection to our ROUTER closed: find out whose (see :meth:`_probe_incoming`)."""
        if not zs.monitor_events(monitor) & zs.EVENT_DISCONNECTED:
            return
        self._drain_router()  # what the peer sent before it closed (a bye) first: it says more
        # at most one round of probes per PROBE_GAP, however fast strangers come and go
        if self._now - self._probed_at >= PROBE_GAP:
            self._probe_incoming()
        # once more a moment later: ZeroMQ's I/O thread reports the event just before it
        # detaches the routing id, so the first probe may still find it there
        self._reprobe_incoming = True
        self._next_housekeeping = min(self._next_housekeeping, self._now + PROBE_GAP)

    def _probe_incoming(self) -> None:
        """A connection to our ROUTER closed, and ZeroMQ does not say whose: a tick to every peer
        that connected to us finds out, since the ROUTER refuses a send to a routing id that is
        gone (ROUTER_MANDATORY) and the refusal brings that connection down."""
        self._probed_at = self._now
        for conn in list(self._by_rid.values()):
            if conn.session is not None and not conn.closed:
                self._send_frame(conn, codec.TICK, [])

    def _on_dealer_event(self, conn: Conn) -> None:
        """Our DEALER's connection came up (send the hello: ZeroMQ would hold it until then, but
        the tie-break of simultaneous connects counts an attempt as made only once it is up) or
        closed (the peer's process died, or the network dropped it): the connection is lost now,
        as a failed send would find later, once everything the peer sent before is read."""
        assert conn.monitor is not None and conn.sock is not None
        events = zs.monitor_events(conn.monitor)
        if events & zs.EVENT_HANDSHAKE_SUCCEEDED and conn.state == "connecting":
            self._send_hello(conn)
        if events & zs.EVENT_DISCONNECTED:
            for _ in range(DRAIN_BATCHES):
                if conn.closed or not zs.events(conn.sock) & zs.POLLIN:
                    break
                self._read_dealer(conn)  # what the peer sent before it closed (a bye) first
            self._close(conn, "its TCP connection closed", retry=True)

    def _recv_batch(self, sock: zmq.Socket[Any], handle: Callable[[list[bytes]], None],
                    conn: Conn | None = None) -> None:
        """Hand up to RECV_BATCH messages waiting on ``sock`` to ``handle`` (stop if ``conn`` closes).

        Called once ZMQ_EVENTS said POLLIN.  Whether another message waits is asked of
        ZMQ_EVENTS too rather than learnt from a failing recv: pyzmq builds a ``zmq.Again`` in
        Python for that, which cost a follower's transport thread 8-12 µs per batch received.
        """
        for _ in range(RECV_BATCH):
            try:
                parts = zs.recv_parts(sock)
            except zmq.Again:
                self.stats["empty_recvs"] += 1  # ZMQ_EVENTS said POLLIN: should not happen
                return
            try:
                handle(parts)
            except Exception:
                log.exception("error handling a message on %s", self.node_name)
            if (conn is not None and conn.closed) or not zs.events(sock) & zs.POLLIN:
                return

    def _on_router_message(self, parts: list[bytes]) -> None:
        rid, body = parts[0], parts[1:]
        conn = self._by_rid.get(rid)
        if conn is None:
            self._from_stranger(rid, body)
        elif conn.peer in self._blocked:
            self.stats["blocked_frames"] += 1
        elif conn.session is None:
            self._handshake_as_acceptor(conn, body)
        else:
            self._session_frame(conn, body)

    def _on_dealer_message(self, conn: Conn, parts: list[bytes]) -> None:
        if conn.peer in self._blocked:
            self.stats["blocked_frames"] += 1
        elif parts == [RESET]:
            self._close(conn, "the peer does not know this connection", retry=True)
        elif conn.session is None:
            self._handshake_as_initiator(conn, parts)
        else:
            self._session_frame(conn, parts)

    # ------------------------------------------------------------------ peers and attempts

    def _peer(self, node: str) -> Peer | None:
        peer = self._peers.get(node)
        if peer is None:
            if node == self.node_name:
                return None
            try:
                short, host = split_node_name(node)
            except (TypeError, ValueError):
                return None
            peer = self._peers[node] = Peer(node, short, host, INITIAL_BACKOFF)
        return peer

    def _forget_if_idle(self, peer: Peer) -> None:
        if peer.idle() and self._peers.get(peer.name) is peer:
            del self._peers[peer.name]

    def _cmd_connect(self, node: str, waiter: Waiter, timeout: float) -> None:
        peer = self._peer(node)
        if peer is None:
            waiter.set(False)
            return
        self._request_connect(peer, report=True, timeout=timeout, waiter=waiter)

    def _request_connect(self, peer: Peer, *, report: bool, timeout: float, waiter: Waiter | None = None
                         ) -> None:
        if peer.conn is not None:
            if waiter is not None:
                waiter.set(True)
            return
        if waiter is not None:
            peer.waiters.append(waiter)
        peer.report_failure |= report
        in_progress = peer.hs is not None or peer.resolving or bool(peer.awaiting_until)
        # A connect() may give an attempt in progress more time; a send only starts one. Were
        # every send to push the deadline on, an attempt at a peer that never answers (stopped,
        # or a dead incarnation's port) would never fail while anybody sends to it: no nodedown,
        # and its pending messages piling up for as long as the sending goes on.
        if waiter is not None or not in_progress:
            peer.attempt_deadline = max(peer.attempt_deadline, self._now + timeout)
            if peer.hs is not None:
                peer.hs.deadline = max(peer.hs.deadline, peer.attempt_deadline)
        if not in_progress:
            self._start_attempt(peer)

    def _start_attempt(self, peer: Peer) -> None:
        assert self._executor is not None
        peer.gen += 1
        gen = peer.gen
        peer.resolving = True
        if peer.attempt_deadline < self._now:
            peer.attempt_deadline = self._now + self._hs_timeout
        try:
            future = self._executor.submit(epmd.lookup, peer.host, peer.short, self.epmd_port,
                                           RESOLVE_TIMEOUT)
        except RuntimeError:  # the interpreter is exiting (or stop() ran): no thread may start
            peer.resolving = False
            self._attempt_failed(peer, "no thread can ask epmd (the interpreter is exiting)", final=True)
            return
        future.add_done_callback(lambda f: self._post(lambda: self._on_resolved(peer, gen, f)))

    def _on_resolved(self, peer: Peer, gen: int, future: Future[tuple[int, int] | None]) -> None:
        if gen != peer.gen or not peer.resolving or self._peers.get(peer.name) is not peer:
            return  # superseded (disconnect) or forgotten
        peer.resolving = False
        try:
            result = future.result()
        except Exception as error:
            self._attempt_failed(peer, f"cannot ask epmd on {peer.host}: {error}")
            return
        if result is None:
            self._attempt_failed(peer, f"no node {peer.short!r} registered with epmd on {peer.host}",
                                 final=True)
            return
        if peer.conn is not None:
            self._connected(peer)
            return
        if peer.hs is not None:
            return  # they are connecting to us meanwhile: wait for that handshake
        self._open_dealer(peer, result[0])

    def _open_dealer(self, peer: Peer, port: int) -> None:
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.DEALER)
        self._socket_options(sock, peer.host)
        # Not ZMQ_IMMEDIATE: with it, ZeroMQ discards what the peer sent that we have not read
        # yet the moment the TCP connection closes, so a peer's last messages before a clean
        # stop (its processes' exit signals, its bye) were lost to a reader a moment late.
        # Without it the socket takes messages before it is connected, so the monitor below
        # says when the connection is up (the hello goes then) and when it closed (everything
        # that arrived before is read, then the socket dropped).
        sock.setsockopt(zmq.IMMEDIATE, 0)
        # ZeroMQ reconnects a DEALER silently; its monitor tells when the connection is up and
        # when it closes. Made before the connect, whose events could come first otherwise.
        monitor = sock.get_monitor_socket(zs.EVENT_DISCONNECTED | zs.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            sock.connect(zs.endpoint(peer.host, port))
        except zmq.ZMQError as error:
            zs.close_monitored(sock, monitor, 0)
            self._attempt_failed(peer, f"cannot connect to {peer.host}:{port}: {error}")
            return
        conn = Conn(peer.name, True, max(peer.attempt_deadline, self._now + 0.5), sock=sock)
        conn.fd = sock.getsockopt(zmq.FD)
        self._by_sock[sock] = conn
        self._poller.register(conn.fd)
        conn.monitor = monitor
        conn.monitor_fd = cast(int, monitor.getsockopt(zmq.FD))
        self._poller.register(conn.monitor_fd)
        peer.hs = conn

    def _attempt_failed(self, peer: Peer, reason: str, *, final: bool = False) -> None:
        peer.awaiting_until = 0.0
        peer.attempt_deadline = 0.0
        waiters, peer.waiters = peer.waiters, []
        for waiter in waiters:
            waiter.set(False)
        dropped = len(peer.pending)
        loud = dropped - len(peer.pending_quiet_at)
        peer.pending.clear()
        peer.pending_quiet_at.clear()
        report = peer.report_failure or dropped > 0
        if loud:
            log.warning("cannot connect to %s (%s): dropped %d message(s)", peer.name, reason, loud)
        elif dropped:
            log.debug("cannot connect to %s (%s): dropped %d runtime signal(s)", peer.name, reason, dropped)
        elif report:
            log.info("cannot connect to %s: %s", peer.name, reason)
        else:
            log.debug("cannot connect to %s: %s", peer.name, reason)
        if final:
            peer.retry = False
        elif peer.retry and self._now >= peer.retry_until:
            peer.retry = False
            log.info("%s: no more attempts to reconnect to %s in the background (%s for %.0f s); a send "
                     "will try again", self.node_name, peer.name, reason, self._reconnect_for_s)
        if peer.retry:
            peer.retry_at = self._now + peer.backoff
            peer.backoff = min(peer.backoff * 2, MAX_BACKOFF)
        if report:
            peer.report_failure = False
            self._report_down(peer.name)
        self._forget_if_idle(peer)

    def _connected(self, peer: Peer) -> None:
        waiters, peer.waiters = peer.waiters, []
        for waiter in waiters:
            waiter.set(True)

    # ------------------------------------------------------------------ handshake

    def _send_hs(self, conn: Conn, kind: bytes, body: dict[str, Any]) -> bool:
        return self._zsend(conn, codec.encode_handshake(kind, body))

    def _send_hello(self, conn: Conn) -> None:
        mac = codec.hello_proof(self._cookie, self.node_name, conn.peer, self.creation, conn.nonce)
        body = {"v": PROTOCOL_VERSION, "from": self.node_name, "to": conn.peer, "creation": self.creation,
                "nonce": conn.nonce.hex(), "mac": mac.hex()}
        if self._send_hs(conn, HELLO, body):
            conn.state = "hello_sent"

    def _refuse(self, rid: bytes, reason: str) -> None:
        self._raw_router_send(rid, codec.encode_handshake(REFUSED, {"reason": reason}))

    def _raw_router_send(self, rid: bytes, parts: list[bytes]) -> None:
        assert self._router is not None
        try:
            zs.send_parts(self._router, [rid, *parts])
        except zmq.ZMQError:
            pass  # best effort: the stranger is gone or not reading

    def _from_stranger(self, rid: bytes, body: list[bytes]) -> None:
        if len(body) == 2 and body[0] == HELLO:
            self._accept_hello(rid, body)
            return
        self.stats["dropped_frames"] += 1
        head = body[0] if body else b""
        if rid in self._recently_closed:
            # A connection we closed (tick timeout, replaced): expected, not hostile.
            log.debug("%s: message for a connection it closed; resetting it", self.node_name)
        else:
            self._drop_stranger(f"{len(body)} part(s), {sum(map(len, body))} bytes")
        if rid in self._recently_closed or head == REPLY or codec.looks_like_frame(body):
            # Looks like ours: tell the peer we do not know this connection, so it notices at
            # once instead of after its tick timeout. Once a second per connection at most: a
            # peer of ours needs one, and each waits in ZeroMQ for a reader that may never read.
            last = self._reset_at.get(rid)
            if last is None or self._now - last >= 1.0:
                self._reset_at[rid] = self._now
                self._reset_at.move_to_end(rid)
                while len(self._reset_at) > 1024:
                    self._reset_at.popitem(last=False)
                self._raw_router_send(rid, [RESET])

    def _drop_stranger(self, detail: str) -> None:
        self._rlog.warning("stranger", "%s dropped a message from a peer that has not completed the "
                           "handshake (%s)", self.node_name, detail)

    def _accept_hello(self, rid: bytes, body: list[bytes]) -> None:
        try:
            _, msg = codec.decode_handshake(body)
        except codec.FrameError as error:
            self.stats["dropped_frames"] += 1
            self._drop_stranger(f"malformed hello: {error}")
            return
        frm, to, creation = msg.get("from"), msg.get("to"), msg.get("creation")
        if isinstance(frm, str) and frm in self._blocked:
            self.stats["blocked_frames"] += 1
            return
        if msg.get("v") != PROTOCOL_VERSION:
            self._rlog.warning("hello", "%s refused a connection: protocol version %r", self.node_name,
                               msg.get("v"))
            self._refuse(rid, "version")
            return
        if not isinstance(frm, str) or not isinstance(creation, int) or isinstance(creation, bool):
            self._rlog.warning("hello", "%s refused a malformed hello", self.node_name)
            self._refuse(rid, "bad_hello")
            return
        if to != self.node_name:
            self._rlog.warning("hello", "%s refused a connection from %r meant for %r", self.node_name,
                               frm, to)
            self._refuse(rid, "wrong_node")
            return
        peer = self._peer(frm)
        if peer is None:
            self._rlog.warning("hello", "%s refused a connection claiming the name %r", self.node_name, frm)
            self._refuse(rid, "bad_name")
            return
        # Only a hello that proves the cookie may settle a simultaneous connect or replace an
        # attempt: a stranger claiming frm's name would otherwise cancel frm's real attempts
        # (ours to frm, or frm's to us) as often as it sends a hello. An unproven one is still
        # challenged (a node with a wrong cookie learns why it is refused) but stands apart.
        proven = self._hello_proven(frm, creation, msg)
        if not proven:
            self._forget_if_idle(peer)  # a stranger's claim leaves no record of a peer behind
        hs = peer.hs if proven else None
        if hs is not None:
            if hs.outgoing and hs.state != "connecting":
                if self.node_name > frm:
                    # Both connect at once: the greater name's connection wins; they wait for ours.
                    self._raw_router_send(rid, codec.encode_handshake(NOK, {}))
                    return
                log.debug("%s: simultaneous connect with %s; theirs wins", self.node_name, frm)
            self._drop(hs)  # ours lost the tie, or an older incoming attempt of theirs
            peer.hs = None
        if len(self._pending_in) >= MAX_PENDING_INCOMING:
            # the oldest unproven attempt goes first: a flood of strangers' hellos cannot push
            # out a real node's
            victim = next((c for c in self._pending_in.values() if not c.hello_proven), None)
            if victim is None:
                victim = next(iter(self._pending_in.values()))
            self._close(victim, "too many handshakes in progress", retry=False)
        conn = Conn(frm, False, self._now + self._hs_timeout, rid=rid)
        conn.peer_creation = creation
        conn.hello_proven = proven
        self._by_rid[rid] = conn
        self._pending_in[rid] = conn
        self._recently_closed.pop(rid, None)
        if proven:
            peer.hs = conn
            peer.attempt_deadline = max(peer.attempt_deadline, conn.deadline)
        self._send_hs(conn, CHALLENGE, {"name": self.node_name, "creation": self.creation,
                                        "nonce": conn.nonce.hex()})

    def _hello_proven(self, frm: str, creation: int, msg: dict[str, Any]) -> bool:
        """The hello carries a valid cookie MAC (codec.hello_proof) with a nonce not seen before."""
        try:
            nonce, mac = bytes.fromhex(msg["nonce"]), bytes.fromhex(msg["mac"])
        except (KeyError, TypeError, ValueError):
            return False
        if len(nonce) != codec.NONCE_SIZE or nonce in self._hello_nonces:
            return False
        if not codec.verify_proof(codec.hello_proof(self._cookie, frm, self.node_name, creation, nonce), mac):
            return False
        self._hello_nonces[nonce] = None
        while len(self._hello_nonces) > 4096:
            self._hello_nonces.popitem(last=False)
        return True

    def _handshake_as_acceptor(self, conn: Conn, body: list[bytes]) -> None:
        if not conn.hello_proven and body and body[0] == HELLO:
            # One challenge at a time per connection: each waits in ZeroMQ for a reader that may
            # never read, so a stream of hellos must not become a stream of answers (it did,
            # every other one: this closed the attempt). The attempt runs to its deadline.
            self.stats["dropped_frames"] += 1
            self._drop_stranger("another hello while its challenge is unanswered")
            return
        try:
            kind, msg = codec.decode_handshake(body)
            if kind != REPLY:
                raise codec.FrameError(f"expected a reply, got kind {kind!r}")
            nonce = bytes.fromhex(msg["nonce"])
            digest = bytes.fromhex(msg["digest"])
            if len(nonce) != codec.NONCE_SIZE:
                raise codec.FrameError("bad nonce size")
        except (codec.FrameError, KeyError, TypeError, ValueError) as error:
            self.stats["dropped_frames"] += 1
            # rate-limited per claimed name only once the hello proved it: a stranger's names are free
            source = conn.peer if conn.hello_proven else "stranger"
            self._rlog.warning(source, "%s: bad handshake from %r: %s", self.node_name, conn.peer, error)
            self._close(conn, f"bad handshake: {error}", retry=False)
            return
        transcript = codec.Transcript(conn.peer, self.node_name, conn.peer_creation, self.creation,
                                      nonce, conn.nonce)
        if not codec.verify_proof(transcript.initiator_proof(self._cookie), digest):
            log.warning("%s refused a connection from %s: it does not have our cookie",
                        self.node_name, conn.peer)
            self._raw_router_send(conn.rid, codec.encode_handshake(REFUSED, {"reason": "cookie"}))
            self._close(conn, "cookie mismatch", retry=False)
            return
        if not conn.hello_proven:  # a replayed or altered hello (a node of ours always proves it)
            log.warning("%s refused a connection from %s: its hello did not prove the cookie",
                        self.node_name, conn.peer)
            self._raw_router_send(conn.rid, codec.encode_handshake(REFUSED, {"reason": "bad_hello"}))
            self._close(conn, "unproven hello", retry=False)
            return
        if not self._send_hs(conn, ACK, {"digest": transcript.acceptor_proof(self._cookie).hex()}):
            return
        conn.session = transcript.session(self._cookie, initiator=False, max_frame_size=self._max_frame_size)
        self._conn_up(conn)

    def _handshake_as_initiator(self, conn: Conn, parts: list[bytes]) -> None:
        try:
            kind, msg = codec.decode_handshake(parts)
        except codec.FrameError as error:
            self.stats["dropped_frames"] += 1
            self._close(conn, f"bad handshake from the acceptor: {error}", retry=True)
            return
        peer = self._peers.get(conn.peer)
        if kind == NOK and conn.state == "hello_sent" and peer is not None and peer.hs is conn:
            # The peer connects to us at the same time and its connection wins: wait for it.
            self._drop(conn)
            peer.hs = None
            peer.awaiting_until = max(peer.attempt_deadline, self._now + self._hs_timeout)
            return
        if kind == REFUSED:
            reason = str(msg.get("reason"))
            text = {"cookie": "cookie mismatch", "wrong_node": "another node listens there"}.get(
                reason, reason)
            log.warning("%s: connection to %s refused: %s", self.node_name, conn.peer, text)
            self._close(conn, f"refused: {text}", retry=reason not in ("cookie", "bad_name"))
            return
        try:
            if kind == CHALLENGE and conn.state == "hello_sent":
                name, creation, nonce = msg["name"], msg["creation"], bytes.fromhex(msg["nonce"])
                if name != conn.peer:
                    raise ValueError(f"{name!r} answered instead")
                if not isinstance(creation, int) or len(nonce) != codec.NONCE_SIZE:
                    raise ValueError("malformed challenge")
                conn.peer_creation = creation
                conn.transcript = codec.Transcript(self.node_name, conn.peer, self.creation, creation,
                                                   conn.nonce, nonce)
                proof = conn.transcript.initiator_proof(self._cookie)
                if self._send_hs(conn, REPLY, {"nonce": conn.nonce.hex(), "digest": proof.hex()}):
                    conn.state = "reply_sent"
                return
            if kind == ACK and conn.state == "reply_sent" and conn.transcript is not None:
                digest = bytes.fromhex(msg["digest"])
                if not codec.verify_proof(conn.transcript.acceptor_proof(self._cookie), digest):
                    log.warning("%s: %s could not prove it has our cookie; dropping the connection",
                                self.node_name, conn.peer)
                    self._close(conn, "the peer failed to prove the cookie", retry=False)
                    return
                conn.session = conn.transcript.session(self._cookie, initiator=True,
                                                       max_frame_size=self._max_frame_size)
                self._conn_up(conn)
                return
            raise ValueError(f"unexpected {kind!r} in state {conn.state}")
        except (KeyError, TypeError, ValueError) as error:
            self.stats["dropped_frames"] += 1
            self._close(conn, f"bad handshake from the acceptor: {error}", retry=True)

    def _conn_up(self, conn: Conn) -> None:
        peer = self._peer(conn.peer)
        assert peer is not None
        self._pending_in.pop(conn.rid, None)
        old = peer.conn
        if old is not None:
            # A new incarnation, or the peer saw the old connection break before we did.
            log.info("%s: %s connected again (creation %d -> %d); replacing the old connection",
                     self.node_name, peer.name, old.peer_creation, conn.peer_creation)
            self._drop(old)
            peer.conn = None
            self._set_up()
            self._report_down(peer.name)
        if peer.hs is conn:
            peer.hs = None
        conn.state = "up"
        conn.last_recv = conn.last_send = self._now
        peer.conn = conn
        # An epmd lookup of ours still in flight belongs to an attempt this connection
        # satisfied: its answer must not open a second connection later.
        peer.gen += 1
        peer.resolving = False
        peer.creation = conn.peer_creation
        peer.retry = False
        peer.backoff = INITIAL_BACKOFF
        peer.awaiting_until = peer.attempt_deadline = 0.0
        peer.report_failure = False
        self._set_up()
        log.info("%s: connected to %s (creation %d, %s)", self.node_name, peer.name, conn.peer_creation,
                 "outgoing" if conn.outgoing else "incoming")
        try:
            self._on_node_up(peer.name, conn.peer_creation)
        except Exception:
            log.exception("on_node_up callback failed")
        self._connected(peer)
        if peer.pending:
            items, quiet_at = list(peer.pending), peer.pending_quiet_at
            peer.pending.clear()
            peer.pending_quiet_at = []
            if not self._send_data(conn, items, quiet_at):
                return
        # Transitive connections: tell the new peer whom we know, and the others about it.
        others = [n for n in self._up if n != peer.name]
        if others:
            self._send_frame(conn, codec.NODE_LIST, [json.dumps(others).encode()])
            announce = [json.dumps([peer.name]).encode()]
            for name in others:
                other = self._peers.get(name)
                if other is not None and other.conn is not None:
                    self._send_frame(other.conn, codec.NODE_LIST, announce)

    # ------------------------------------------------------------------ established connections

    def _session_frame(self, conn: Conn, parts: list[bytes]) -> None:
        session = conn.session
        assert session is not None
        try:
            kind, payloads = session.open(parts)
        except codec.SequenceError as error:
            log.warning("%s: connection to %s broken: %s", self.node_name, conn.peer, error)
            self._close(conn, str(error), retry=True)
            return
        except codec.FrameError as error:
            self.stats["dropped_frames"] += 1
            self._rlog.warning(conn.peer, "%s dropped a frame from %s: %s", self.node_name, conn.peer, error)
            return
        conn.last_recv = self._now
        self.stats["frames_received"] += 1
        if kind == codec.DATA:
            peer = conn.peer
            on_message = self._on_message
            for payload in payloads:
                try:
                    obj = codec.loads(payload)
                except KeyboardInterrupt:
                    raise
                except BaseException as error:  # SystemExit too: a payload must not end this thread
                    self.stats["undecodable"] += 1
                    log.error("%s: cannot decode a message from %s: %r", self.node_name, peer, error)
                    continue
                try:
                    on_message(peer, obj)
                except Exception:
                    log.exception("on_message callback failed")
            self.stats["messages_received"] += len(payloads)
        elif kind == codec.NODE_LIST:
            self._learn_nodes(payloads)
        elif kind == codec.BYE:
            log.info("%s: %s disconnected", self.node_name, conn.peer)
            self._close(conn, "the peer disconnected", retry=False)

    def _learn_nodes(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            try:
                names = json.loads(payload)
            except (ValueError, RecursionError):
                continue
            if not isinstance(names, list):
                continue
            for name in names:
                peer = self._peer(name) if isinstance(name, str) else None
                if peer is not None and peer.conn is None and peer.hs is None and not peer.resolving:
                    self._request_connect(peer, report=False, timeout=self._hs_timeout)

    def _send_frame(self, conn: Conn, kind: bytes, payloads: list[bytes]) -> bool:
        session = conn.session
        assert session is not None
        if not self._zsend(conn, session.seal(kind, payloads)):
            return False
        self.stats["frames_sent"] += 1
        return True

    def _send_data(self, conn: Conn, items: list[bytes], quiet_at: list[int] | None = None) -> bool:
        """Send ``items`` in as few data frames as the limits allow; False if the connection
        broke meanwhile (the rest is lost with it). ``quiet_at``: the positions of quiet items
        (see :meth:`send`), which are not counted in the warning about lost messages."""
        n = len(items)
        start = 0
        limit = self._max_frame_size
        while start < n:
            end, size = start, 0
            while end < n and end - start < MAX_BATCH and (end == start or size + len(items[end]) <= limit):
                size += len(items[end])
                end += 1
            if not self._send_frame(conn, codec.DATA, items[start:end]):
                lost = n - start
                loud = lost - sum(1 for i in quiet_at or () if i >= start)
                if loud:
                    log.warning("%s: %d message(s) to %s lost with the connection", self.node_name, loud,
                                conn.peer)
                else:
                    log.debug("%s: %d runtime signal(s) to %s lost with the connection", self.node_name,
                              lost, conn.peer)
                return False
            start = end
        self.stats["messages_sent"] += n
        return True

    def _zsend(self, conn: Conn, parts: list[bytes]) -> bool:
        """Send without blocking; a send ZeroMQ refuses brings the connection down."""
        if conn.broken:
            self._lost_on_send(conn, "send failed")
            return False
        if conn.peer in self._blocked:
            self.stats["blocked_frames"] += 1
            return True  # lost in the (simulated) network
        try:
            self._conn_send(conn, parts)
        except zmq.ZMQError as error:
            self._lost_on_send(conn, f"send failed: {zs.send_failure(error)}")
            return False
        conn.last_send = self._now
        return True

    def _lost_on_send(self, conn: Conn, reason: str) -> None:
        """A send found the connection gone.  One that the peer made to our ROUTER is closed only
        after the ROUTER is read (at the end of this round, :meth:`_poll_sockets`): what the peer
        sent before it went is still there, and once the connection is forgotten its frames
        would be a stranger's."""
        if conn.outgoing:
            self._close(conn, reason, retry=True)
        elif not conn.closed:
            conn.broken = True
            self._router_lost[conn] = reason

    def _close_lost_incoming(self) -> None:
        self._drain_router()
        lost, self._router_lost = self._router_lost, {}
        for conn, reason in lost.items():
            self._close(conn, reason, retry=True)

    def _conn_send(self, conn: Conn, parts: list[bytes]) -> zmq.Socket[Any]:
        """Hand ``parts`` to the connection's socket (our DEALER, or the ROUTER with its routing
        id); return the socket.  Raises zmq.ZMQError as ZeroMQ does."""
        if conn.outgoing:
            sock = conn.sock
            assert sock is not None
            zs.send_parts(sock, parts)
        else:
            sock = self._router
            assert sock is not None
            zs.send_parts(sock, [conn.rid, *parts])
        return sock

    def _flush_outq(self) -> None:
        outq = self._outq
        batches: dict[str, list[bytes]] = {}
        quiet: dict[str, list[int]] = {}  # per node: the positions of quiet signals in its batch
        while outq:
            node, data, is_quiet = outq.popleft()
            items = batches.get(node)
            if items is None:
                items = batches[node] = [data]
            else:
                items.append(data)
            if is_quiet:
                quiet.setdefault(node, []).append(len(items) - 1)
        for node, items in batches.items():
            peer = self._peers.get(node) or self._peer(node)
            if peer is None:
                log.error("%s: cannot send to %r (this node or not a node name): dropped %d message(s)",
                          self.node_name, node, len(items))
                continue
            quiet_at = quiet.get(node)
            if peer.conn is not None:
                self._send_data(peer.conn, items, quiet_at)
            else:
                if quiet_at:
                    base = len(peer.pending)
                    peer.pending_quiet_at.extend(base + i for i in quiet_at)
                peer.pending.extend(items)
                self._request_connect(peer, report=True, timeout=self._hs_timeout)

    # ------------------------------------------------------------------ closing

    def _drop(self, conn: Conn, linger: int = 0) -> None:
        """Forget a connection's socket or routing id (no reporting)."""
        if conn.closed:
            return
        conn.closed = True
        if conn.outgoing:
            sock = conn.sock
            assert sock is not None
            self._by_sock.pop(sock, None)
            for fd in (conn.fd, conn.monitor_fd):
                self._poller.unregister(fd)
            zs.close_monitored(sock, conn.monitor, linger)
        else:
            self._by_rid.pop(conn.rid, None)
            self._pending_in.pop(conn.rid, None)
            self._recently_closed[conn.rid] = None
            while len(self._recently_closed) > 1024:
                self._recently_closed.popitem(last=False)

    def _close(self, conn: Conn, reason: str, *, retry: bool, linger: int = 0) -> None:
        """A connection ended: report it as the peer's state requires."""
        if conn.closed:
            return
        self._drop(conn, linger)
        peer = self._peers.get(conn.peer)
        if peer is None:
            return
        if peer.conn is conn:
            peer.conn = None
            self._set_up()
            log.info("%s: connection to %s lost: %s", self.node_name, peer.name, reason)
            if retry and not self._stopping:
                peer.retry = True
                peer.backoff = INITIAL_BACKOFF
                peer.retry_at = self._now + INITIAL_BACKOFF
                peer.retry_until = self._now + self._reconnect_for_s
            self._report_down(peer.name)
            self._forget_if_idle(peer)
        elif peer.hs is conn:
            peer.hs = None
            if not retry:
                peer.retry = False
            if peer.awaiting_until:
                return
            self._attempt_failed(peer, reason, final=not retry)

    def _report_down(self, node: str) -> None:
        try:
            self._on_node_down(node)
        except Exception:
            log.exception("on_node_down callback failed")

    def _report_queued_down(self) -> None:
        """Messages still queued when the transport stops (or never started): each of their
        nodes is reported down, so that monitors and links set through them fire."""
        queued: set[str] = set()
        while self._outq:  # popleft, not iteration: a racing sender may still append
            queued.add(self._outq.popleft()[0])
        for name in sorted(queued - {self.node_name}):
            self._report_down(name)

    def _set_up(self) -> None:
        self._up = frozenset(name for name, peer in self._peers.items() if peer.conn is not None)

    def _say_bye(self, conn: Conn) -> None:
        """Best effort: the connection ends either way."""
        assert conn.session is not None
        if conn.peer in self._blocked:
            return
        try:
            self._conn_send(conn, conn.session.seal(codec.BYE))
        except zmq.ZMQError:
            pass

    def _cmd_disconnect(self, node: str, waiter: Waiter) -> None:
        peer = self._peers.get(node)
        if peer is None:
            waiter.set(False)
            return
        had = peer.conn is not None or peer.hs is not None or peer.resolving
        log.debug("%s: disconnect %s: conn=%s hs=%s resolving=%s", self.node_name, node,
                  peer.conn and peer.conn.state, peer.hs and peer.hs.state, peer.resolving)
        peer.retry = False
        peer.gen += 1  # an epmd answer still in flight is now stale
        peer.resolving = False
        peer.awaiting_until = 0.0
        if peer.hs is not None:
            hs, peer.hs = peer.hs, None
            self._drop(hs)
        if peer.conn is not None:
            self._say_bye(peer.conn)
            self._close(peer.conn, "disconnected", retry=False, linger=200)  # linger: let the bye out
        if peer.waiters or peer.pending or peer.report_failure:
            self._attempt_failed(peer, "disconnected", final=True)
        self._forget_if_idle(peer)
        waiter.set(had)

    def _cmd_stop(self) -> None:
        self._stopping = True

    def _shutdown(self) -> None:
        self._closed = True
        self._stopping = True
        down: set[str] = set()
        for peer in list(self._peers.values()):
            for waiter in peer.waiters:
                waiter.set(False)
            peer.waiters = []
            if peer.conn is not None:
                self._say_bye(peer.conn)
                peer.conn = None
                self._set_up()
                down.add(peer.name)
            elif not peer.idle():  # an attempt under way: what waits for it will never leave
                down.add(peer.name)
        self._up = frozenset()
        for name in sorted(down):
            self._report_down(name)
        self._report_queued_down()
        for sock, conn in list(self._by_sock.items()):
            zs.close_monitored(sock, conn.monitor, 200)  # linger: let the byes out
        self._by_sock.clear()
        if self._router is not None:
            zs.close_monitored(self._router, self._router_monitor, 200)
        if self._ctx is not None:
            self._ctx.term()
        self._poller.close()

    # ------------------------------------------------------------------ timers

    def _housekeeping(self) -> None:
        now = self._now
        stalled = now - self._last_housekeeping > max(2 * self._hk_period, self._tick_s)
        self._last_housekeeping = now
        self._next_housekeeping = now + self._hk_period
        self._all_monitors = True
        silence_limit = TICKS_UNTIL_DOWN * self._tick_s
        tick_after = 0.75 * self._tick_s
        if self._reprobe_incoming:
            self._reprobe_incoming = False
            self._probe_incoming()
        for peer in list(self._peers.values()):
            conn = peer.conn
            if conn is not None:
                # After a stall of this thread the silence may be ours: look again next round.
                if not stalled and now - conn.last_recv >= silence_limit:
                    self._close(conn, f"no sign of life for {int((now - conn.last_recv) * 1000)} ms",
                                retry=True)
                elif now - conn.last_send >= tick_after:
                    self._send_frame(conn, codec.TICK, [])
            hs = peer.hs
            if hs is not None and now >= hs.deadline:
                self._close(hs, "handshake timed out", retry=True)
            if peer.awaiting_until and now >= peer.awaiting_until and peer.conn is None and peer.hs is None:
                self._attempt_failed(peer, "the peer did not connect back")
            if (peer.retry and now >= peer.retry_at and peer.conn is None and peer.hs is None
                    and not peer.resolving and not peer.awaiting_until):
                self._start_attempt(peer)
        # attempts whose hello proved nothing are no peer's hs: they time out here
        for conn in [c for c in self._pending_in.values() if not c.hello_proven and now >= c.deadline]:
            self._close(conn, "handshake timed out", retry=False)

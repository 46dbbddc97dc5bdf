"""What a transport knows of each peer node and of each of its connections.

Plain records, owned by the transport's I/O thread (see :mod:`nodes.transport`): a
:class:`Peer` per node we talk to (its authenticated connection, the handshake in progress,
messages waiting for a connection, retry state) and a :class:`Conn` per connection attempt,
from its first handshake message to its end. A :class:`Waiter` is a ``connect()`` caller
waiting for the I/O thread's verdict.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import zmq

from . import codec

__all__ = ["Waiter", "Conn", "Peer"]


class Waiter:
    """A connect() caller waiting for the I/O thread's verdict."""

    __slots__ = ("_event", "result")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.result = False

    def set(self, result: bool) -> None:
        self.result = result
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout) and self.result


class Conn:
    """One connection (one TCP connection under ZeroMQ), from its first message to its end.

    Outgoing: our DEALER socket; states connecting → hello_sent → reply_sent → up.
    Incoming: a routing id on our ROUTER; states challenged → up.
    """

    __slots__ = ("peer", "outgoing", "sock", "fd", "rid", "state", "deadline", "nonce", "peer_creation",
                 "transcript", "session", "last_recv", "last_send", "closed", "broken", "monitor",
                 "monitor_fd", "hello_proven")

    def __init__(self, peer: str, outgoing: bool, deadline: float, *,
                 sock: zmq.Socket[Any] | None = None, rid: bytes = b""):
        self.peer = peer  # for an incoming connection: claimed, proven once up
        self.outgoing = outgoing
        self.sock = sock
        self.rid = rid
        self.state = "connecting" if outgoing else "challenged"
        self.deadline = deadline
        self.nonce = codec.new_nonce()
        self.peer_creation = 0
        self.transcript: codec.Transcript | None = None
        self.session: codec.Session | None = None
        self.last_recv = self.last_send = 0.0
        self.closed = False
        self.fd = -1  # the DEALER's ZMQ_FD, polled by the I/O thread
        self.broken = False  # a direct send failed: the I/O thread closes it
        # the DEALER's disconnect events (see Transport._open_dealer)
        self.monitor: zmq.Socket[Any] | None = None
        self.monitor_fd = -1
        # incoming: the hello carried a valid cookie MAC (see Transport._accept_hello)
        self.hello_proven = False


class Peer:
    """Everything we know about one other node: its connection, attempts, queued messages."""

    def __init__(self, name: str, short: str, host: str, backoff: float):
        self.name, self.short, self.host = name, short, host
        self.conn: Conn | None = None  # the authenticated connection
        self.hs: Conn | None = None  # the handshake in progress (ours or theirs), at most one
        self.resolving = False  # epmd lookup in flight
        self.gen = 0  # bumped to make an in-flight lookup's answer stale
        self.pending: collections.deque[bytes] = collections.deque()  # waiting for a connection
        self.pending_quiet_at: list[int] = []  # positions of quiet ones in it (see Transport.send)
        self.waiters: list[Waiter] = []
        self.report_failure = False  # a failed attempt must be reported (send/connect asked)
        self.attempt_deadline = 0.0
        self.awaiting_until = 0.0  # after a nok: the peer is connecting to us
        self.retry = False
        self.retry_at = 0.0
        self.retry_until = 0.0  # the background retries of a lost connection end then
        self.backoff = backoff  # the next retry's wait (s), doubled per failure up to a maximum
        self.creation: int | None = None

    def idle(self) -> bool:
        return not (self.conn or self.hs or self.resolving or self.pending or self.waiters or self.retry
                    or self.awaiting_until)

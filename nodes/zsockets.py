"""ZeroMQ as the transport uses it: sockets sent to and read without blocking at the Cython
level, event flags as plain ints, socket monitors, and the context's socket limit.

Everything here is called on the transport's I/O thread (or by a direct send holding its
lock, see :mod:`nodes.transport`): ZeroMQ sockets are not thread-safe.
"""

from __future__ import annotations

import resource
import select
import struct
from typing import Any, cast

import zmq

__all__ = [
    "endpoint",
    "max_sockets",
    "send_parts",
    "recv_parts",
    "monitor_events",
    "EVENT_DISCONNECTED",
    "EVENT_HANDSHAKE_SUCCEEDED",
    "close_monitored",
    "events",
    "send_failure",
    "POLLIN",
    "POLLOUT",
]


def endpoint(host: str, port: int | str) -> str:
    """A TCP endpoint, IPv6 addresses bracketed."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def max_sockets(zmq_default: int) -> int:
    """How many sockets the transport's ZeroMQ context may open: as many as files the process may.

    Each connection takes three sockets (its DEALER, the DEALER's monitor and the monitor's
    inproc peer), so ZeroMQ's default of 1,023 per context would cap a node at about 340 peers
    well before the file-descriptor limit does; with this, running out of descriptors is the
    limit, as for an Erlang node.  (Capped at 65,536: ZeroMQ keeps a slot per socket.)
    """
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return zmq_default
    if soft == resource.RLIM_INFINITY:
        soft = 65_536
    return max(zmq_default, min(soft, 65_536))


# pyzmq's send_multipart/recv_multipart cost 5-9 µs per frame in Python (flag enums, checks,
# a getsockopt per part); the Cython socket methods with plain int flags cost about 1 µs.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_raw_send: Any = zmq.backend.Socket.send
_raw_recv: Any = zmq.backend.Socket.recv
# Plain ints: pyzmq's constants are enum.IntFlag members, and ``&`` on those runs Python code
# (``Flag.__and__``, about 1 µs); the hot loop tests ZMQ_EVENTS several times per round.
_EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)


def send_parts(sock: zmq.Socket[Any], parts: list[bytes]) -> None:
    """Send a multipart message without blocking (raises zmq.Again if it cannot be queued)."""
    for part in parts[:-1]:
        _raw_send(sock, part, _MORE)
    _raw_send(sock, parts[-1], _NOBLOCK)


def recv_parts(sock: zmq.Socket[Any]) -> list[bytes]:
    """Receive one multipart message without blocking (raises zmq.Again if there is none)."""
    frame = _raw_recv(sock, _NOBLOCK, False)
    parts = [frame.bytes]
    while frame.more:
        frame = _raw_recv(sock, _NOBLOCK, False)
        parts.append(frame.bytes)
    return parts


# A socket monitor's event: [16-bit event id, 32-bit value, native order] + [endpoint]. Parsed
# here rather than with zmq.utils.monitor, whose imports (asyncio among them) cost a node MBs.
_MONITOR_EVENT = struct.Struct("=HI")


EVENT_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)  # a connection closed
EVENT_HANDSHAKE_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)  # a connection is up, ZMTP greeted


def monitor_events(monitor: zmq.Socket[Any]) -> int:
    """Read every event a socket monitor has queued; the event ids seen, or-ed together."""
    seen = 0
    while True:
        try:
            parts = monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return seen
        event, _value = _MONITOR_EVENT.unpack_from(parts[0])
        seen |= event


def close_monitored(sock: zmq.Socket[Any], monitor: zmq.Socket[Any] | None, linger: int) -> None:
    """Close ``sock`` and its monitor, the monitor first (``ctx.term()`` waits for every socket)."""
    if monitor is not None:
        sock.disable_monitor()
        monitor.close(linger=0)
    sock.close(linger=linger)


class FdPoller:
    """Waits for any of a set of file descriptors to be readable: ``epoll`` where there is one.

    The transport waits on plain descriptors only (each socket's ZMQ_FD, a socketpair), so
    it needs no ``zmq.Poller``, which hands the kernel the whole list on every wait; epoll
    keeps the registrations.  Registering twice or unregistering an unknown descriptor is a
    no-op.
    """

    def __init__(self) -> None:
        self._fds: set[int] = set()
        # epoll and poll objects share register/unregister/poll; they differ in the flag's name
        # and in the unit of poll's timeout (seconds against milliseconds)
        self._impl: Any
        if hasattr(select, "epoll"):
            self._impl, self._flag, self._per_ms = select.epoll(), select.EPOLLIN, 0.001
        else:
            self._impl, self._flag, self._per_ms = select.poll(), select.POLLIN, 1
        self._close = getattr(self._impl, "close", lambda: None)

    def register(self, fd: int) -> None:
        if fd not in self._fds:
            self._fds.add(fd)
            self._impl.register(fd, self._flag)

    def unregister(self, fd: int) -> None:
        if fd not in self._fds:
            return
        self._fds.discard(fd)
        try:
            self._impl.unregister(fd)
        except (OSError, KeyError):
            pass  # already closed: the kernel dropped it

    def poll(self, timeout_ms: int) -> list[int]:
        """The descriptors that are readable, waiting up to ``timeout_ms`` for one."""
        return [fd for fd, _ in self._impl.poll(timeout_ms * self._per_ms)]

    def close(self) -> None:
        self._close()


def events(sock: zmq.Socket[Any]) -> int:
    """ZMQ_EVENTS of ``sock`` (processes its pending commands, consuming its ZMQ_FD signal)."""
    return cast(int, sock.getsockopt(_EVENTS))


def send_failure(error: zmq.ZMQError) -> str:
    """Why a send was refused, in words for the log and the connection's end."""
    if error.errno == zmq.EAGAIN:
        return "send queue full"
    if error.errno == zmq.EHOSTUNREACH:
        return "connection gone"
    return str(error)

"""The port mapper: which TCP port each node on this host listens on (like Erlang's epmd).

One epmd runs per host as its own OS process (``python -m nodes.epmd --port P``; default port
``NODES_EPMD_PORT``, else 4370), listening on all interfaces.  The first node started on a
host starts it (:func:`ensure_running`) and it outlives that node.

Wire protocol: newline-delimited JSON objects over plain TCP, one reply line per request
(never pickle: anyone may connect)::

    {"op": "register", "name": "1", "port": 5555, "creation": 7} -> {"ok": true} | {"error": "name_taken"}
    {"op": "port", "name": "1"}   -> {"port": 5555, "creation": 7} | {"error": "not_found"}
    {"op": "names"}               -> {"names": [{"name": "1", "port": 5555, "creation": 7}, ...]}
    {"op": "pid"}                 -> {"pid": 1234}       (so tests and tools can stop it)
    {"op": "ping"}                -> {"ok": true}

A registering node keeps its connection open: the entry lives exactly as long as that
connection, so a node that dies (even by SIGKILL: the kernel closes its sockets) disappears
from the table at once.  :class:`Registration` watches the connection from a daemon thread
and, if epmd itself dies, restarts it and registers again.  Registrations are accepted only
from loopback addresses (as epmd does): a remote host cannot claim a name here.  Garbage
input (bad JSON, huge lines, unknown ops) gets an error reply and the client is dropped; the
server keeps serving.

Against clients that only take room: a connection that has not registered lives at most
``--packet-timeout`` seconds (default 10) from its start, whatever it sends meanwhile (Erlang's
epmd has the same option), so idle or chatty clients cannot hold the ``MAX_CLIENTS`` slots for
long; and when the process runs out of file descriptors, accepting pauses until clients leave
instead of ending the server.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

DEFAULT_PORT = 4370
MAX_LINE = 4096
MAX_REPLY = 4 * 1024 * 1024
MAX_CLIENTS = 1024
PACKET_TIMEOUT = 10.0  # seconds a client that has not registered may stay connected
# accept() failing for want of descriptors or memory: a pause, not the end of the server
_ACCEPT_PAUSE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                                  errno.ECONNABORTED})

log = logging.getLogger("nodes.epmd")

# Popen objects of epmds we started: kept so they are not garbage collected while running
# (which would warn), and so a loser of a start race gets reaped.
_started: list[subprocess.Popen[bytes]] = []
_started_lock = threading.Lock()


class EpmdError(OSError):
    """epmd could not be reached or answered something unexpected."""


class NameTaken(EpmdError):
    """The name is registered by another live node."""


def default_port() -> int:
    """``NODES_EPMD_PORT`` if set, else 4370."""
    value = os.environ.get("NODES_EPMD_PORT")
    return int(value) if value else DEFAULT_PORT


# --------------------------------------------------------------------------- client side


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        raise EpmdError(f"epmd at {host}:{port} unreachable: {error}") from None


def _exchange(sock: socket.socket, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request line on ``sock`` and read one reply line."""
    sock.sendall(json.dumps(request).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(MAX_LINE)
        if not chunk:
            raise EpmdError("epmd closed the connection")
        buf += chunk
        if len(buf) > MAX_REPLY:
            raise EpmdError("epmd reply too long")
    try:
        reply = json.loads(buf)
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly nested JSON
        raise EpmdError(f"epmd answered something that is not JSON: {error}") from None
    if not isinstance(reply, dict):
        raise EpmdError(f"unexpected epmd reply {reply!r}")
    return reply


def request(host: str, port: int, msg: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    """One request/reply exchange on a fresh connection; raises :class:`EpmdError`."""
    sock = _connect(host, port, timeout)
    try:
        return _exchange(sock, msg)
    except (OSError, ValueError) as error:
        raise EpmdError(f"epmd at {host}:{port}: {error}") from None
    finally:
        sock.close()


def is_running(port: int | None = None, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        return request(host, port or default_port(), {"op": "ping"}, timeout).get("ok") is True
    except EpmdError:
        return False


def ensure_running(port: int | None = None, timeout: float = 5.0) -> None:
    """Make sure an epmd answers on 127.0.0.1:``port``, starting one if none does.

    The new epmd is a detached OS process (own session, stdio to /dev/null) that outlives
    the caller.  Two callers racing is fine: one epmd binds the port, the other exits.
    It is started by file path with ``python -I`` rather than ``-m nodes.epmd`` so that it
    imports nothing but the standard library (not the ``nodes`` package and its runtime).
    """
    port = port or default_port()
    if is_running(port):
        return
    with _started_lock:
        # Reap the losers of earlier start races.
        _started[:] = [p for p in _started if p.poll() is None]
        proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        _started.append(proc)
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        if is_running(port, timeout=0.5):
            return
        time.sleep(delay)  # waiting for another OS process to bind: nothing to block on
        delay = min(delay * 2, 0.1)
    raise EpmdError(f"could not start epmd on port {port}")


def lookup(host: str, name: str, epmd_port: int | None = None, timeout: float = 2.0
           ) -> tuple[int, int] | None:
    """``(port, creation)`` of node ``name`` on ``host``; ``None`` if not registered there.

    Raises :class:`EpmdError` if epmd on ``host`` cannot be asked (host down, partition):
    the caller must not conclude the node is dead.
    """
    port = epmd_port or default_port()
    reply = request(host, port, {"op": "port", "name": name}, timeout)
    if reply.get("error") == "not_found":
        return None
    try:
        return int(reply["port"]), int(reply["creation"])
    except (KeyError, TypeError, ValueError):
        raise EpmdError(f"unexpected epmd reply {reply!r}") from None


def names(host: str = "127.0.0.1", epmd_port: int | None = None, timeout: float = 2.0
          ) -> list[tuple[str, int, int]]:
    """``[(name, port, creation), ...]`` registered with epmd on ``host``."""
    port = epmd_port or default_port()
    reply = request(host, port, {"op": "names"}, timeout)
    try:
        return [(str(e["name"]), int(e["port"]), int(e["creation"])) for e in reply["names"]]
    except (KeyError, TypeError, ValueError):
        raise EpmdError(f"unexpected epmd reply {reply!r}") from None


def pid(host: str = "127.0.0.1", epmd_port: int | None = None, timeout: float = 2.0) -> int:
    """The OS process id of the epmd answering on ``host``."""
    return int(request(host, epmd_port or default_port(), {"op": "pid"}, timeout)["pid"])


def kill(epmd_port: int | None = None, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """Stop the epmd answering on ``epmd_port`` (``epmd -kill``): True if one was running.

    For a private epmd a script or a test started on this machine: epmd outlives the nodes
    that started it, so whoever chose a private port stops it when done (by its pid, SIGKILL).
    """
    try:
        victim = pid(host, epmd_port, timeout)
    except (OSError, KeyError, ValueError):  # none answers, or not with a pid
        return False
    try:
        os.kill(victim, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _register_once(name: str, port: int, creation: int, epmd_port: int) -> socket.socket:
    sock = _connect("127.0.0.1", epmd_port, 2.0)
    try:
        reply = _exchange(sock, {"op": "register", "name": name, "port": port, "creation": creation})
    except (OSError, ValueError) as error:
        sock.close()
        raise EpmdError(f"registering {name!r}: {error}") from None
    if reply.get("ok") is not True:
        sock.close()
        if reply.get("error") == "name_taken":
            raise NameTaken(f"the name {name!r} is in use by another node")
        raise EpmdError(f"registering {name!r}: {reply!r}")
    sock.settimeout(None)  # from now on we only wait for the connection to close
    return sock


class Registration:
    """A live registration: the entry exists while this object's connection is open.

    A daemon thread waits on the connection; if epmd dies it restarts epmd (via
    :func:`ensure_running`) and registers again, with backoff, until :meth:`close`.
    """

    def __init__(self, name: str, port: int, creation: int, epmd_port: int):
        self.name, self.port, self.creation, self.epmd_port = name, port, creation, epmd_port
        self._closed = threading.Event()
        self._sock = _register_once(name, port, creation, epmd_port)
        self.reregistrations = 0
        self._thread = threading.Thread(target=self._watch, name=f"epmd-registration-{name}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(MAX_LINE)
            except OSError:
                data = b""
            if self._closed.is_set():
                return
            if data:
                continue  # epmd sends nothing unsolicited; ignore
            self._sock.close()
            log.warning("epmd on port %d went away; restarting it and registering %r again",
                        self.epmd_port, self.name)
            self._reregister()

    def _reregister(self) -> None:
        delay = 0.05
        while not self._closed.is_set():
            try:
                ensure_running(self.epmd_port)
                sock = _register_once(self.name, self.port, self.creation, self.epmd_port)
            except NameTaken as error:
                log.error("cannot register again with epmd: %s", error)
            except OSError as error:
                log.debug("registering again with epmd failed: %s", error)
            else:
                if self._closed.is_set():
                    sock.close()
                    return
                self._sock = sock
                self.reregistrations += 1
                return
            self._closed.wait(delay)
            delay = min(delay * 2, 1.0)

    def close(self) -> None:
        """Unregister (closing the connection is what removes the entry)."""
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=2.0)


def register(name: str, port: int, creation: int, epmd_port: int | None = None) -> Registration:
    """Register ``name`` → ``port`` with the epmd on this host; raises :class:`NameTaken`."""
    return Registration(name, port, creation, epmd_port or default_port())


# --------------------------------------------------------------------------- server side


class Server:
    """The epmd server: a thread per client (a handful of nodes per host), one lock."""

    def __init__(self, port: int, host: str | None = None, packet_timeout: float = PACKET_TIMEOUT):
        self.packet_timeout = packet_timeout
        # create_server sets SO_REUSEADDR (restart right after a crash) but not SO_REUSEPORT:
        # a second epmd on the same port fails to bind, which is how start races resolve.
        # No host: every IPv4 and IPv6 interface (dual stack) where the system has IPv6.
        if host is None and socket.has_dualstack_ipv6():
            try:
                self.sock = socket.create_server(("::", port), family=socket.AF_INET6, backlog=128,
                                                 dualstack_ipv6=True)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise
                self.sock = socket.create_server(("0.0.0.0", port), backlog=128)
        else:
            self.sock = socket.create_server((host or "0.0.0.0", port), backlog=128)
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, int, int]] = {}  # name -> (port, creation, client id)
        self._clients = 0
        self._next_id = 0

    def serve_forever(self) -> None:
        paused = False
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError as error:
                if error.errno in _ACCEPT_PAUSE_ERRNOS:
                    # Out of descriptors (a flood of connections, say): the clients we hold
                    # time out and free some; the connection waits in the backlog meanwhile.
                    if not paused:
                        log.warning("epmd pauses accepting connections: %s", error)
                    paused = True
                    time.sleep(0.05)
                    continue
                return  # closed
            paused = False
            with self._lock:
                if self._clients >= MAX_CLIENTS:
                    conn.close()
                    continue
                self._clients += 1
                self._next_id += 1
                client_id = self._next_id
            threading.Thread(target=self._serve_client, args=(conn, addr, client_id), daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _serve_client(self, conn: socket.socket, addr: Any, client_id: int) -> None:
        registered: str | None = None
        deadline = time.monotonic() + self.packet_timeout
        try:
            reader = conn.makefile("rb")
            while True:
                if registered is None:  # the time left, not a fresh timeout per request
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    conn.settimeout(left)
                line = reader.readline(MAX_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_LINE or not line.endswith(b"\n"):
                    self._reply(conn, {"error": "line_too_long"})
                    return
                try:
                    msg = json.loads(line)
                except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
                    self._reply(conn, {"error": "bad_request"})
                    return
                if not isinstance(msg, dict):
                    self._reply(conn, {"error": "bad_request"})
                    return
                op = msg.get("op")
                if op == "register":
                    if registered is not None or not _is_loopback(addr[0]):
                        self._reply(conn, {"error": "not_allowed"})
                        return
                    reply = self._register(msg, client_id)
                    self._reply(conn, reply)
                    if "error" in reply:
                        return
                    registered = msg["name"]
                    conn.settimeout(None)  # held open for the node's lifetime
                elif op == "port":
                    self._reply(conn, self._port(msg))
                elif op == "names":
                    with self._lock:
                        entries = [{"name": n, "port": p, "creation": c}
                                   for n, (p, c, _) in self._entries.items()]
                    self._reply(conn, {"names": entries})
                elif op == "pid":
                    self._reply(conn, {"pid": os.getpid()})
                elif op == "ping":
                    self._reply(conn, {"ok": True})
                else:
                    self._reply(conn, {"error": "unknown_op"})
                    return
        except OSError:
            return  # reset, timeout: drop the client
        finally:
            with self._lock:
                self._clients -= 1
                if registered is not None and self._entries.get(registered, (0, 0, -1))[2] == client_id:
                    del self._entries[registered]
            conn.close()

    def _register(self, msg: dict[str, Any], client_id: int) -> dict[str, Any]:
        name, port, creation = msg.get("name"), msg.get("port"), msg.get("creation")
        if not (isinstance(name, str) and name and len(name) <= 255
                and isinstance(port, int) and 0 < port < 65536 and isinstance(creation, int)):
            return {"error": "bad_request"}
        with self._lock:
            if name in self._entries:
                return {"error": "name_taken"}
            self._entries[name] = (port, creation, client_id)
        return {"ok": True}

    def _port(self, msg: dict[str, Any]) -> dict[str, Any]:
        name = msg.get("name")
        with self._lock:
            entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            return {"error": "not_found"}
        return {"port": entry[0], "creation": entry[1]}

    @staticmethod
    def _reply(conn: socket.socket, reply: dict[str, Any]) -> None:
        conn.sendall(json.dumps(reply).encode() + b"\n")


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback  # an IPv4 client of a dual-stack socket
    return ip.is_loopback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.epmd", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=default_port(),
                        help="TCP port to listen on (default: NODES_EPMD_PORT, else 4370)")
    parser.add_argument("--host", default=None, help="address to listen on (default: all interfaces)")
    parser.add_argument("--packet-timeout", type=float, default=PACKET_TIMEOUT, metavar="SECONDS",
                        help="how long a client that has not registered may stay connected "
                             f"(default {PACKET_TIMEOUT:g})")
    args = parser.parse_args(argv)
    if not args.packet_timeout > 0:
        parser.error(f"--packet-timeout must be a positive number of seconds, got {args.packet_timeout}")
    try:
        server = Server(args.port, args.host, args.packet_timeout)
    except OSError as error:
        print(f"epmd: cannot listen on port {args.port}: {error}", file=sys.stderr)
        return 1
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

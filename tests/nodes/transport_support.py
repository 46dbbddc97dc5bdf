"""Helpers for the epmd and transport tests: free ports, peer OS processes, an in-test node.

Every OS process a test starts is tracked and killed by PID when the test ends, including the
epmd that some node started on the test's own epmd port (found through epmd's ``pid`` op).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nodecluster import free_port, wait_until

from nodes import epmd
from nodes.transport import Transport

PEER_SCRIPT = Path(__file__).with_name("transport_peer.py")
COOKIE = "transport-test-cookie"
HOST = "127.0.0.1"


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Peer:
    """A transport_peer.py child process."""

    def __init__(self, name: str, epmd_port: int, log_dir: Path, *, cookie: str = COOKIE,
                 tick_ms: int | None = None, creation: int | None = None, connect: str | None = None):
        self.name = name
        self.log_path = log_dir / f"{name.replace('@', '_')}-{uuid.uuid4().hex[:6]}.log"
        env = dict(os.environ, NODES_EPMD_PORT=str(epmd_port))
        cmd = [sys.executable, str(PEER_SCRIPT), name, "--cookie", cookie]
        if tick_ms is not None:
            cmd += ["--tick-ms", str(tick_ms)]
        if creation is not None:
            cmd += ["--creation", str(creation)]
        if connect is not None:
            cmd += ["--connect", connect]
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, env=env)
        assert self.proc.stdout is not None
        self.output: list[str] = []
        self._buf = b""
        deadline = time.monotonic() + 20.0
        line = ""
        while not line.startswith("READY ") and time.monotonic() < deadline:
            line = self._read_line(timeout=max(0.0, deadline - time.monotonic()))
            if not line and self.proc.poll() is not None:
                break
            self.output.append(line)
        if not line.startswith("READY "):
            self.kill()
            raise AssertionError(f"peer {name} did not start: {self.output!r}\n{self.log()}")
        _, port, creation_text = line.split()
        self.port, self.creation = int(port), int(creation_text)

    def _read_line(self, timeout: float) -> str:
        """One line of the child's stdout, or "" on timeout or end of file.

        Reads the raw fd (select on a buffered file would miss lines already buffered).
        """
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return ""
            chunk = os.read(fd, 4096)
            if not chunk:
                return ""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode().strip()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)  # a stopped process still dies of SIGKILL, but be tidy
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""


class LocalNode:
    """A Transport in the test process, with its messages and events in queues."""

    def __init__(self, name: str, epmd_port: int, *, cookie: str = COOKIE, tick_ms: int | None = None,
                 creation: int = 1, **kwargs: Any):
        self.name = name
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.stash: list[tuple[str, Any]] = []
        self.all_events: list[tuple[Any, ...]] = []
        self.event_log: list[tuple[Any, ...]] = []  # every event, in order

        def event(ev: tuple[Any, ...]) -> None:
            self.event_log.append(ev)
            self.events.put(ev)

        self.transport = Transport(
            name, creation, cookie.encode(),
            on_message=lambda frm, obj: self.messages.put((frm, obj)),
            on_node_up=lambda node, c: event(("up", node, c)),
            on_node_down=lambda node: event(("down", node)),
            epmd_port=epmd_port, tick_ms=tick_ms, **kwargs,
        )
        self.port = self.transport.start()

    def recv(self, timeout: float = 10.0, match: Callable[[str, Any], bool] | None = None) -> tuple[str, Any]:
        """Selective receive of (from_node, obj), like a mailbox."""
        for i, (frm, obj) in enumerate(self.stash):
            if match is None or match(frm, obj):
                del self.stash[i]
                return frm, obj
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no matching message within {timeout} s")
            try:
                frm, obj = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if match is None or match(frm, obj):
                return frm, obj
            self.stash.append((frm, obj))

    def call(self, peer: str, op: str, *args: Any, timeout: float = 15.0) -> Any:
        ref = uuid.uuid4().hex
        self.transport.send(peer, ("call", ref, op, *args))
        _, reply = self.recv(timeout, lambda frm, obj: type(obj) is tuple and obj[:2] == ("reply", ref))
        return reply[2]

    def wait_event(self, event: tuple[Any, ...], timeout: float = 10.0) -> tuple[Any, ...]:
        """Wait for an event whose first fields equal ``event`` (e.g. ("down", node))."""
        for seen in self.all_events:
            if seen[: len(event)] == event:
                self.all_events.remove(seen)
                return seen
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no event {event} within {timeout} s; "
                                     f"saw {self.all_events}")
            try:
                seen = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if seen[: len(event)] == event:
                return seen
            self.all_events.append(seen)

    def drain_events(self) -> list[tuple[Any, ...]]:
        while True:
            try:
                self.all_events.append(self.events.get_nowait())
            except queue.Empty:
                return list(self.all_events)

    def stop(self) -> None:
        self.transport.stop()


class Cluster:
    """What one test started: its epmd port, peers and local nodes, all cleaned up at the end."""

    def __init__(self, epmd_port: int, log_dir: Path):
        self.epmd_port = epmd_port
        self.log_dir = log_dir
        self.peers: list[Peer] = []
        self.locals: list[LocalNode] = []
        self.extra_pids: list[int] = []

    def peer(self, name: str, **kwargs: Any) -> Peer:
        peer = Peer(name, self.epmd_port, self.log_dir, **kwargs)
        self.peers.append(peer)
        return peer

    def local(self, name: str, **kwargs: Any) -> LocalNode:
        node = LocalNode(name, self.epmd_port, **kwargs)
        self.locals.append(node)
        return node

    def epmd_pid(self) -> int | None:
        try:
            return epmd.pid("127.0.0.1", self.epmd_port, timeout=1.0)
        except OSError:
            return None

    def cleanup(self) -> None:
        for node in self.locals:
            with contextlib.suppress(Exception):
                node.stop()
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.kill()
        for pid in self.extra_pids:
            kill_pid(pid)
        pid = self.epmd_pid()
        if pid is not None:
            kill_pid(pid)
            wait_until(lambda: not epmd.is_running(self.epmd_port), 5.0, "epmd to die")

    def dump_logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()}" for p in self.peers)


@contextlib.contextmanager
def cluster(log_dir: Path) -> Iterator[Cluster]:
    """A Cluster on a fresh epmd port, exported as NODES_EPMD_PORT for the test's duration."""
    port = free_port()
    old = os.environ.get("NODES_EPMD_PORT")
    os.environ["NODES_EPMD_PORT"] = str(port)
    c = Cluster(port, log_dir)
    try:
        yield c
    finally:
        c.cleanup()
        print(c.dump_logs())  # captured: pytest shows it when the test failed
        if old is None:
            os.environ.pop("NODES_EPMD_PORT", None)
        else:
            os.environ["NODES_EPMD_PORT"] = old

"""Distribution: turns this process into a named node and wires the transport to processes.

``start`` names the node, picks its *creation* (incarnation), renames the local
processes' pids, starts the ZeroMQ transport (``nodes.transport``) and the
``rex`` rpc server.  Outgoing signals (messages, links, monitors, exits) go to
the transport as tuples; incoming ones are applied by ``nodes.process``; a lost
connection becomes ``noconnection`` exits and DOWN messages there.

Cookies: ``start(name, cookie=None)`` uses ``cookie``, else ``$NODES_COOKIE``,
else ``~/.nodes.cookie`` (created with mode 0600 and a random value on first use),
like Erlang's ``~/.erlang.cookie``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import zmq

from . import _sched, process, rpc
from . import this_node as node
from .terms import check_ms_in_range, split_node_name

log = logging.getLogger("nodes.dist")

_lock = threading.Lock()
_transport: Any = None
_cookie: str | None = None  # the running node's


class _Dist:
    """The object ``node.dist`` points at once distribution runs."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def send_signal(self, node_name: str, signal: tuple[Any, ...]) -> bool:
        # Only messages are worth a warning when lost: a link or monitor that cannot be set
        # is answered with noconnection, and the other signals mean nothing once the node is gone.
        return bool(self.transport.send(node_name, signal, quiet=signal[0] not in ("msg", "reg_msg")))

    def ensure_connected(self, node_name: str) -> bool:
        if node_name in self.transport.connected_nodes():
            return True
        # during start() this waits for the transport to run: it cannot connect before
        return _running() is self.transport and bool(self.transport.connect(node_name))


def full_name(name: str) -> str:
    """``"1"`` → ``"1@<short hostname>"`` (like ``-sname``); a name with ``@`` is taken as it is."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"start: expected a node name str like '1' or 'n1@127.0.0.1', got {name!r}")
    full = name if "@" in name else f"{name}@{socket.gethostname().split('.')[0]}"
    try:
        split_node_name(full)
    except ValueError:
        raise ValueError(f"start: a node name is NAME@HOST (or NAME alone), got {name!r}") from None
    return full


def default_cookie() -> str:
    env = os.environ.get("NODES_COOKIE")
    if env:
        return env
    path = Path.home() / ".nodes.cookie"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    # Several nodes may start at once on a fresh home: each writes a whole cookie to a private
    # temporary file and links it into place.  The link is atomic and fails if another node got
    # there first, so a cookie file is never seen half-written and everyone ends up with one cookie.
    value = secrets.token_urlsafe(24)
    fd, tmp = tempfile.mkstemp(prefix=".nodes.cookie.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_text().strip()  # complete: it was linked only once written
        except OSError:
            # a file system without hard links: create it exclusively instead (a node starting
            # at the very same moment may then read it before it is written)
            return _create_exclusively(path, value)
    finally:
        os.unlink(tmp)
    return value


def _create_exclusively(path: Path, value: str) -> str:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def _bind_host(host: str) -> str:
    try:
        socket.inet_pton(socket.AF_INET, host)
        return host
    except OSError:
        pass
    try:
        socket.inet_pton(socket.AF_INET6, host)
        return host
    except OSError:
        return "0.0.0.0"


def start(name: str, cookie: str | None = None, *, tick_ms: int | None = None) -> str:
    """Start distribution as node ``name``; returns the full node name.

    A second start raises unless it names the running node (then it returns it); a cookie
    given to it must be the running node's, since connections are made with that one.
    """
    global _transport, _cookie
    wanted = full_name(name)
    if cookie is not None and (not isinstance(cookie, str) or not cookie):
        raise TypeError(f"start: cookie must be a non-empty str, got {cookie!r}")
    if tick_ms is not None:
        # a zero or negative tick made the transport's I/O thread spin without a pause
        if not isinstance(tick_ms, int) or isinstance(tick_ms, bool):
            raise TypeError(f"start: tick_ms must be a positive int of ms or None, got {tick_ms!r}")
        if tick_ms <= 0:
            raise ValueError(f"start: tick_ms must be a positive int of ms or None, got {tick_ms!r}")
        check_ms_in_range("start", tick_ms)
    with _lock:
        if node.dist is not None:
            if wanted != node.name:
                raise RuntimeError(f"start: this process already is node {node.name!r}, "
                                   f"cannot become {wanted!r}")
            if cookie is not None and cookie != _cookie:
                raise RuntimeError(f"start: node {node.name!r} is running with another cookie "
                                   "(a node's cookie is set when it starts)")
            return node.name
        from .transport import Transport

        secret = cookie if cookie is not None else default_cookie()
        if not secret:  # the given cookie was checked above: this one is an empty ~/.nodes.cookie
            raise ValueError(f"start: the cookie file {Path.home() / '.nodes.cookie'} is empty")
        creation = secrets.randbelow(2**31 - 1) + 1
        host = wanted.partition("@")[2]
        transport = Transport(  # the port-mapper's port and the tick: theirs to read from the env
            wanted, creation, secret.encode(),
            on_message=_on_message, on_node_up=_on_node_up, on_node_down=process.node_down,
            bind_host=_bind_host(host), tick_ms=tick_ms,
        )
        from . import registry

        previous = (node.name, node.creation)
        process.rename_all(wanted, creation)
        node.name, node.creation = wanted, creation
        # rex must be registered before the transport accepts connections: a peer may call
        # it as soon as it is connected (a monitor arriving first would report noproc).
        rex = None
        if registry.lookup(rpc.REX) is None:
            rex = process.spawn(rpc.serve)
            registry.add(rpc.REX, rex)
        # Routing to other nodes must work before the transport starts: once its I/O thread
        # runs, a peer can connect and call rex, and rex's reply goes out through node.dist.
        # Set afterwards, a main thread preempted in between made rex drop that reply unseen
        # (the caller then waited for ever, connected). Until start returns, sends only queue;
        # whoever needs the running transport itself waits for _lock (see _running).
        _transport, _cookie = transport, secret
        node.dist = _Dist(transport)
        try:
            try:
                transport.start()
            except zmq.ZMQError as error:  # the address is not this host's, say: an OSError
                raise OSError(error.errno, f"start: node {wanted!r} cannot listen on {host!r}: "
                                           f"{error.strerror}") from error
        except BaseException:
            _transport, _cookie, node.dist = None, None, None
            if rex is not None:  # e.g. the name is taken: stay the node we were
                process.send_exit(rex, rex, "kill", "kill")
            process.rename_all(*previous)
            node.name, node.creation = previous
            raise
        _sched.share_holds(transport.epmd_port)  # the nodes of one port-mapper share a host
        return wanted


def _running() -> Any:
    """The started transport, or None when distribution does not run.

    :func:`start` holds ``_lock`` from setting ``node.dist`` until the transport runs (or has
    failed to), so a caller here during a start waits for its outcome."""
    with _lock:
        return _transport


def _on_message(from_node: str, obj: Any) -> None:
    if type(obj) is not tuple or not obj or not isinstance(obj[0], str):
        log.warning("dropping a malformed signal from %s", from_node)
        return
    try:
        process.apply_remote_signal(obj)
    except Exception:  # noqa: BLE001 - one bad signal must not stop the transport
        log.exception("failed to apply a signal from %s", from_node)


def _on_node_up(node_name: str, creation: int) -> None:
    log.info("node up: %s (creation %d)", node_name, creation)


def connect(node_name: str) -> bool:
    """Connect to ``node_name`` (``Node.connect``); False when not distributed or refused."""
    split_node_name(node_name)  # TypeError for a non-str, ValueError for a str not name@host
    transport = _running()
    if transport is None:
        return False
    if node_name == node.name:
        return True
    return bool(transport.connect(node_name))


def disconnect(node_name: str) -> bool:
    split_node_name(node_name)
    transport = _running()
    return transport is not None and bool(transport.disconnect(node_name))


def list_nodes() -> list[str]:
    transport = _running()
    return [] if transport is None else sorted(transport.connected_nodes())


def partition(blocked_nodes: Iterable[str]) -> None:
    """Fault injection: cut this node off from ``blocked_nodes`` (a network partition).

    The transport drops every frame to and from them, ticks and handshakes included, so
    the connections die of silence and cannot come back until :func:`heal`.  Replaces the
    previous set.  For a clean cut, call it on the nodes of both sides (e.g. with
    ``nodes.rpc.call``) before anything else.  Raises RuntimeError when not distributed.
    """
    transport = _running()
    if transport is None:
        raise RuntimeError("partition: this node is not distributed (nodes.start first)")
    transport.set_blocked(blocked_nodes)


def heal() -> None:
    """Undo :func:`partition`: traffic flows again and lost connections come back by themselves
    (those lost in the last minute at once; older ones at the next send to their node)."""
    transport = _running()
    if transport is not None:
        transport.set_blocked(())


def blocked_nodes() -> list[str]:
    """The nodes :func:`partition` currently cuts this node off from."""
    transport = _running()
    return [] if transport is None else sorted(transport.blocked_nodes())


def stop() -> None:
    """Stop distribution (the shell and --noshell call this on the way out)."""
    global _transport
    with _lock:
        transport, _transport = _transport, None
        node.dist = None
    if transport is not None:
        try:
            _sched.stop_sharing()  # only about speed: whatever happens there, the stop goes on
        finally:
            transport.stop()

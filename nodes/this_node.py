"""This node: its name and creation, its table of local processes, and message routing.

(This is the `node` room of the design; a module named `node` would be shadowed by the
function `nodes.node()`.)

``route(dest, msg)`` delivers to a local mailbox or hands the message to the
distribution layer (``dist``) for a remote node.  Before ``nodes.start`` the
node is ``nonode@nohost`` with creation 0 and there is no distribution: a
message for another node is dropped, as in a non-distributed ``erl``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from . import registry
from .terms import NONODE, BadNodeName, Pid, split_node_name

__all__ = ["NONODE", "route", "send", "local_proc", "new_pid", "is_local_node"]

log = logging.getLogger("nodes")

if TYPE_CHECKING:
    from .process import Proc


class Distribution(Protocol):
    """What the node needs from the distribution layer (``nodes.dist``)."""

    def send_signal(self, node: str, signal: tuple[Any, ...]) -> bool:
        """False when distribution stopped meanwhile: the signal did not leave."""
        ...

    def ensure_connected(self, node: str) -> bool: ...


name: str = NONODE
creation: int = 0
dist: Distribution | None = None

#: local processes by id; a process leaves the table when it dies
procs: dict[int, Proc] = {}
#: pids that local processes had before distribution started (``nonode@nohost``)
pre_start_pids: dict[Pid, Proc] = {}
_ids = itertools.count(1)
table_lock = threading.Lock()


def new_pid() -> Pid:
    return Pid(name, next(_ids), creation)


def is_local_node(node_name: str) -> bool:
    return node_name == name or node_name == NONODE


def local_proc(pid: Pid) -> Proc | None:
    """The live local process ``pid`` names, or None (dead, remote, earlier incarnation)."""
    if pid.node == name:
        proc = procs.get(pid.id)
        if proc is not None and proc.pid.creation == pid.creation:
            return proc
        return None
    if pid.node == NONODE:
        proc = pre_start_pids.get(pid)
        if proc is not None and proc.alive:
            return proc
    return None


def send(dest: Any, msg: Any, caller: str = "send") -> None:
    """:func:`route` for ``nodes.send`` and ``gen_statem.cast``, which never raise for where a
    message goes: a destination on a malformed node name is dropped with a warning, as Erlang
    drops a message to a node that cannot exist.  (A wrong *type* of destination still raises,
    its message naming ``caller``.)"""
    try:
        route(dest, msg, caller)
    except BadNodeName as error:
        log.warning("message to %r dropped: %s", dest, error)


def route(dest: Any, msg: Any, caller: str = "send") -> None:
    """Send ``msg`` to ``dest`` (Pid | name | (name, node)); never raises for a dead destination.

    Raises TypeError for a destination of another form and :class:`BadNodeName` (a ValueError)
    for a node name that is not ``name@host``, so that a call names its caller's mistake."""
    if type(dest) is Pid:
        if dest.node == name or dest.node == NONODE:
            proc = local_proc(dest)
            if proc is not None:
                proc.mailbox.put(msg)
            return
        remote = dist  # read once: a stop from another thread may set it to None meanwhile
        if remote is not None:
            remote.send_signal(dest.node, ("msg", dest, msg))
        else:
            split_node_name(dest.node)  # a malformed name is a wrong argument, distributed or not
        return
    if type(dest) is str:
        pid = registry.lookup(dest)
        if pid is None:
            # Erlang raises badarg for an unregistered name; the contract says send never raises
            return
        proc = local_proc(pid)
        if proc is not None:
            proc.mailbox.put(msg)
        return
    if type(dest) is tuple and len(dest) == 2 and isinstance(dest[0], str) and isinstance(dest[1], str):
        reg_name, node_name = dest
        remote = dist
        if is_local_node(node_name):
            route(reg_name, msg)
        elif remote is not None:
            remote.send_signal(node_name, ("reg_msg", reg_name, msg))
        else:
            split_node_name(node_name)
        return
    raise TypeError(
        f"{caller}: destination must be a Pid, a registered name str or a (name, node) tuple, got {dest!r}")

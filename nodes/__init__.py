"""nodes: an Erlang-style runtime for Python.

One Python process is one node; inside it, processes (pykka actor threads)
exchange messages with ``send``/``receive``; links, monitors, ``gen_statem``,
``rpc`` and a shell mirror Erlang so that an Erlang example ports line by line.
A plain ``import nodes`` gives the local, non-distributed node
``"nonode@nohost"``; ``nodes.start(name)`` makes it a distributed node.
See CONTRACT.md for the whole public face.
"""

from __future__ import annotations

from typing import Any

from . import _sched, gen_statem, rpc, sys
from . import codec as _codec
from . import process as _process
from . import registry as _registry
from . import this_node as _node
from .codec import EncodeError
from .terms import MAX_TIMEOUT_MS, BadNodeName, Exit, Pid, Ref, make_ref, split_node_name
from .terms import check_ms_in_range as _check_ms_in_range
from .timers import Scheduler as _Scheduler

__all__ = [
    "Exit", "Pid", "Ref", "make_ref",
    "start", "node", "connect", "disconnect", "list_nodes", "monitor_node",
    "self", "spawn", "spawn_link", "spawn_monitor", "send", "receive", "flush",
    "register", "unregister", "whereis", "link", "unlink", "process_flag", "process_info",
    "monitor", "demonitor", "exit", "is_alive", "send_after", "cancel_timer", "read_timer",
    "get", "put", "erase",
    "hold_one_cpu", "term_to_binary", "binary_to_term", "EncodeError",
    "split_node_name", "BadNodeName", "MAX_TIMEOUT_MS",
    "gen_statem", "sys", "rpc",
]

def _dead_local_pid(dest: Any) -> bool:
    return type(dest) is Pid and _node.is_local_node(dest.node) and _node.local_proc(dest) is None


# a timer message goes as nodes.send would send it; one to a local process that died is cancelled
_scheduler = _Scheduler(_node.send, _dead_local_pid)
_process.death_hooks.append(_scheduler.dest_died)


def node() -> str:
    """This node's name (``node()``): ``"nonode@nohost"`` until ``start``."""
    return _node.name


def self() -> Pid:
    """The calling process's pid; a plain thread gets a process of its own on first use."""
    return _process.self_pid()


def spawn(fn: Any, *args: Any) -> Pid:
    """Run ``fn(*args)`` as a new process."""
    return _process.spawn(fn, *args)


def spawn_link(fn: Any, *args: Any) -> Pid:
    """Run ``fn(*args)`` as a new process linked to the caller."""
    return _process.spawn(fn, *args, link=True)


def spawn_monitor(fn: Any, *args: Any) -> tuple[Pid, Ref]:
    """Run ``fn(*args)`` as a new process monitored by the caller: ``(pid, ref)``, as Erlang's."""
    return _process.spawn_monitor(fn, *args)


def send(dest: Any, msg: Any) -> Any:
    """Send ``msg`` to a Pid, a registered name or a ``(name, node)``; never raises for a dead dest."""
    _process.send_as_me(_node.send, dest, msg)
    return msg


def receive(timeout: int | None = None, match: Any = None) -> Any:
    """Selective receive: the first message with ``match(msg)`` true (any if None).

    ``timeout`` in ms (None: forever; 0: only look at what is queued); raises
    ``TimeoutError`` when it passes.
    """
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout < 0):
        raise TypeError(f"receive: timeout must be a non-negative number of ms or None, got {timeout!r}")
    if timeout is not None:
        _check_ms_in_range("receive", timeout)
    if match is not None and not callable(match):
        raise TypeError(f"receive: match must be a callable taking a message, got {match!r}")
    return _process.receive(timeout, match)


def flush() -> list[Any]:
    """All pending messages; the mailbox is left empty."""
    return _process.flush()


def register(name: str, pid: Pid) -> bool:
    """Register ``pid`` (a live local process) under ``name``; raises if the name is taken."""
    if type(pid) is not Pid:
        raise TypeError(f"register: expected a Pid, got {pid!r}")
    if _node.local_proc(pid) is None:
        raise ValueError(f"register: {pid!r} is not a live local process")
    if not _process.register_live(name, pid):  # it died meanwhile
        raise ValueError(f"register: {pid!r} is not a live local process")
    return True


def _check_name(fn: str, name: Any) -> None:
    # as register: a name is a str (a (name, node) tuple is a server reference, not a name)
    if not isinstance(name, str):
        raise TypeError(f"{fn}: expected a registered name (str), got {name!r}")


def unregister(name: str) -> bool:
    """Remove a registered name; raises ValueError if it is not registered."""
    _check_name("unregister", name)
    if not _registry.remove(name):
        raise ValueError(f"unregister: {name!r} is not a registered name")
    return True


def whereis(name: str) -> Pid | None:
    """The pid registered as ``name``, or None."""
    _check_name("whereis", name)
    pid = _registry.lookup(name)
    if pid is not None and _node.local_proc(pid) is None:
        return None
    return pid


_INFO_ITEMS = ("message_queue_len", "links", "monitors", "monitored_by")


def process_info(pid: Pid, item: str) -> tuple[str, Any] | None:
    """Erlang's ``process_info(Pid, Item)`` for a local process: ``(item, value)``, or None if it
    is not alive.  Items: ``"message_queue_len"`` (messages waiting in its mailbox), ``"links"``
    (the pids it is linked to), ``"monitors"`` (``("process", pid)`` or ``("process", (name,
    node))`` for each monitor it holds) and ``"monitored_by"`` (the pids monitoring it, one per
    monitor); lists in no particular order, as in Erlang."""
    if type(pid) is not Pid:
        raise TypeError(f"process_info: expected a Pid, got {pid!r}")
    if item not in _INFO_ITEMS:
        raise ValueError(f"process_info: unsupported item {item!r}; supported: "
                         + ", ".join(repr(i) for i in _INFO_ITEMS))
    if not _node.is_local_node(pid.node):
        raise ValueError(f"process_info: {pid} is not a process of this node ({_node.name})")
    proc = _node.local_proc(pid)
    if proc is None or not proc.alive:
        return None
    if item == "message_queue_len":
        return (item, len(proc.mailbox))
    return (item, _process.relations(proc, item))


# -- the process dictionary: Erlang's put/get/erase, private to the calling process ---------------

def put(key: Any, value: Any) -> Any:
    """Store ``value`` under ``key`` in the calling process's dictionary; the previous value
    (None if there was none), as Erlang's ``put/2`` returns ``undefined``."""
    me = _process.current()
    if me.dictionary is None:
        me.dictionary = {}
    old = me.dictionary.get(key)
    me.dictionary[key] = value
    return old


def get(key: Any, default: Any = None) -> Any:
    """The value under ``key`` in the calling process's dictionary, else ``default``
    (Elixir's ``Process.get(key, default)``; Erlang's ``get/1`` is ``get(key)``)."""
    dictionary = _process.current().dictionary
    return default if dictionary is None else dictionary.get(key, default)


def erase(key: Any) -> Any:
    """Remove ``key`` from the calling process's dictionary; the value it had, else None."""
    dictionary = _process.current().dictionary
    return None if dictionary is None else dictionary.pop(key, None)


link = _process.link
unlink = _process.unlink
process_flag = _process.process_flag
monitor = _process.monitor
demonitor = _process.demonitor
exit = _process.exit
is_alive = _process.is_alive
monitor_node = _process.monitor_node


def send_after(ms: int, dest: Any, msg: Any) -> Ref:
    """Send ``msg`` to ``dest`` after ``ms`` milliseconds; returns a timer ref."""
    return _scheduler.send_after(ms, dest, msg)


def cancel_timer(ref: Ref) -> int | bool:
    """Cancel a timer: the ms it had left, or False if it already fired."""
    return _scheduler.cancel(ref)


def read_timer(ref: Ref) -> int | bool:
    """The ms a timer has left, or False."""
    return _scheduler.read(ref)


def hold_one_cpu(hold: bool) -> bool:
    """While the calling process holds it, keep this node's runtime threads on one CPU.

    Beyond Erlang (whose closest kin is ``+sbt`` scheduler binding).  The node's processes
    share one GIL and run one at a time anyway; kept on one CPU, passing the GIL from one to
    the next is a context switch instead of waking another CPU, which on a virtual machine
    costs tens of microseconds.  For the busiest node of a group: a rafted member holds it
    while it leads.  The CPU is the one the caller runs on when the first hold begins (a
    watcher moves the hold off it if other programs keep it busy); it ends with the last
    holder's ``hold_one_cpu(False)`` or exit.  ZeroMQ's I/O threads and threads
    that are not processes (an embedding program's) stay free.  Returns whether the threads
    are held now: never under ``$NODES_CPU`` (the explicit choice stands) or with
    ``$NODES_HOLD_CPU=0``.  The nodes of one port-mapper tell each other their holds, and one
    that holds none keeps its runtime threads off the CPUs the others hold (see
    ``nodes._sched``; ``$NODES_KEEP_OFF_HELD=0``: not this node).
    """
    if type(hold) is not bool:
        raise TypeError(f"hold_one_cpu: expected True or False, got {hold!r}")
    me = _process.current()
    held = _sched.hold_one_cpu(me.pid, hold)
    if hold and not me.alive:
        # killed meanwhile: its exit may have looked for its hold before it was there
        return _sched.hold_one_cpu(me.pid, False)
    return held


def term_to_binary(term: Any) -> bytes:
    """``term`` as bytes, the way messages travel between nodes (Erlang's ``term_to_binary``):
    pickle, or cloudpickle when something in it is defined in ``__main__``, a shell or a
    function (it then travels by value).  Raises :class:`EncodeError` (a TypeError) when
    neither can serialize it (a lock, a socket, ...)."""
    return _codec.dumps(term)


def binary_to_term(data: bytes | bytearray | memoryview) -> Any:
    """The term ``term_to_binary`` made (Erlang's ``binary_to_term``).  Unpickling runs code:
    only for bytes this program made or authenticated.  A class this process defined comes
    back as the class itself, untouched (see ``nodes.unpickling``)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"binary_to_term: expected bytes made by term_to_binary, got {type(data).__name__}")
    return _codec.loads(data)


# -- distribution (filled in by nodes.dist) --------------------------------------------------

def start(name: str, cookie: str | None = None, **options: Any) -> str:
    """Make this process a distributed node; returns its full name (see nodes.dist)."""
    from . import dist

    return dist.start(name, cookie, **options)


def connect(node_name: str) -> bool:
    from . import dist

    return dist.connect(node_name)


def disconnect(node_name: str) -> bool:
    from . import dist

    return dist.disconnect(node_name)


def list_nodes() -> list[str]:
    from . import dist

    return dist.list_nodes()

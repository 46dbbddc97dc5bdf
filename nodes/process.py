"""Processes: a pykka actor thread with a mailbox, links, monitors and Erlang's exit signals.

Each spawned process is a ``pykka.ThreadingActor``: pykka gives it its thread
(``_start_actor_loop``) and its inbox (``_create_actor_inbox``).  Two things
Erlang needs go beyond pykka and are added here:

* the inbox is a :class:`~nodes.mailbox.Mailbox` with selective receive, and the
  actor loop is replaced by the process body (``fn(*args)``), which reads its
  mailbox with ``receive``; pykka's registry and stop flag are kept.
* exit signals.  Python cannot kill a thread, so a process is killed by marking
  it dead *at once* (its name is freed, its links and monitors fire, its
  mailbox is closed and later messages are dropped) and unwinding its thread
  with :class:`~nodes.terms.ProcessExit` the next time that thread touches the
  runtime (``receive``, ``send``, ``flush``...).  To the rest of the node the
  process is gone immediately; only code that runs without ever touching the
  runtime keeps running until it does.

A plain thread (the REPL, a test's main thread) gets a process of its own on
first use, with a real mailbox but no actor.  When such a process is killed,
the thread sees ``nodes.Exit(reason)`` once, from its next runtime call, and
gets a new process after that (like the Erlang shell restarting its evaluator).

Signals between processes (link, unlink, exit, monitor, demonitor, down) are
applied under one node-wide lock for local targets and travel as tuples
through ``node.dist`` for remote ones; ``apply_remote_signal`` is the entry
point for those arriving from other nodes and ``node_down`` turns a lost
connection into ``noconnection`` exits and DOWN messages.

An exit or DOWN reason bound for another node travels pickled apart from its signal, beside its
``repr`` (:class:`~nodes.terms.Pickled`), unless it is a plain str, number, bytes or None.  A reason the
receiving node cannot rebuild (an exception class it cannot import, or one whose ``__init__``
does not take its own ``args``) then arrives as ``("unloadable", repr_text)``: the link still
fires and the monitor still reports, where the whole signal used to fail to unpickle and be
dropped (a caller waiting on that monitor waited for ever).  A ``gen_statem`` reply travels
the same way (see :mod:`nodes.gen_statem`); a plain message that cannot be rebuilt is still
dropped by the receiving transport, which logs an error.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

import pykka

from . import codec, registry
from . import this_node as node
from ._sched import batch_scheduling, holder_gone, thread_done
from .codec import EncodeError
from .mailbox import Mailbox
from .terms import (
    CallReply,
    Exit,
    Pickled,
    Pid,
    ProcessExit,
    Ref,
    check_ms_in_range,
    make_ref,
    rename_local_pid,
    split_node_name,
)

log = logging.getLogger("nodes")

# One lock for the link/monitor/alive state of every local process: signals are
# rare next to messages, and one lock makes the exit cascade free of lock-order
# deadlocks.
_lock = threading.RLock()
_tls = threading.local()


class Proc:
    """The control block of one local process."""

    __slots__ = (
        "pid", "mailbox", "links", "monitors", "monitored_by", "node_monitors",
        "trap_exit", "alive", "reason", "actor", "reported", "dictionary",
        "sending", "deferred_death", "death_told",
    )

    def __init__(self, mailbox: Mailbox, actor: _ProcessActor | None = None) -> None:
        self.pid = node.new_pid()
        self.mailbox = mailbox
        self.links: set[Pid] = set()
        # monitors this process holds: ref -> (target node, object reported in DOWN)
        self.monitors: dict[Ref, tuple[str, Any]] = {}
        # monitors held on this process: ref -> (watcher pid, object reported in DOWN)
        self.monitored_by: dict[Ref, tuple[Pid, Any]] = {}
        self.node_monitors: dict[str, int] = {}
        self.trap_exit = False
        self.alive = True
        self.reason: Any = None
        self.actor = actor
        self.reported = False  # a dead thread-process has shown its Exit to its thread
        self.dictionary: dict[Any, Any] | None = None  # Erlang's process dictionary, made on first put
        # A killed process's own thread may be half-way through a send (it unwinds only at its
        # next runtime call): the news of its death then waits for that send, see begin_signal.
        self.sending: list[None] = []  # one item per send in progress
        self.deferred_death: list[tuple[Any, set[Pid], dict, dict]] = []  # at most one item
        self.death_told = False  # its links and watchers have been told (see shutdown_all)

    def __repr__(self) -> str:
        return f"Proc({self.pid!r}, alive={self.alive})"


class _ProcessActor(pykka.ThreadingActor):
    """The pykka actor behind a spawned process: its loop is the process body."""

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Mailbox:  # type: ignore[override]
        return Mailbox()

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        super().__init__()
        self._fn = fn
        self._args = args
        self.proc = Proc(self.actor_inbox, self)  # type: ignore[arg-type]

    def _actor_loop(self) -> None:
        proc = self.proc
        _tls.proc = proc
        batch_scheduling()
        reason: Any = "normal"
        try:
            self._fn(*self._args)
        except ProcessExit:
            reason = None  # already dead: killed by a signal
        except Exit as exc:
            reason = exc.reason
        except BaseException as exc:  # noqa: BLE001 - a crash is an exit reason, as in Erlang
            reason = ("exception", exc, traceback.format_exc())
            log.error("Error in process %r with exit value:\n%s", proc.pid, reason[2])
        finally:
            if reason is not None:
                terminate(proc, reason)
            try:
                self._stop()
            except Exception:  # pragma: no cover - pykka's own bookkeeping
                pass
            _tls.proc = None
            thread_done()


# -- the current process -------------------------------------------------------------------

def current() -> Proc:
    """The calling thread's process, made on first use for a plain thread."""
    proc: Proc | None = getattr(_tls, "proc", None)
    if proc is not None:
        if proc.alive:
            return proc
        _raise_dead(proc)
    proc = Proc(Mailbox())
    with node.table_lock:
        node.procs[proc.pid.id] = proc
    _tls.proc = proc
    _tls.guard = _ThreadExit(proc)
    return proc


class _ThreadExit:
    """Ends a plain thread's process with ``normal`` when the thread ends.

    Thread-local values are released when their thread finishes, which runs
    ``__del__`` here: links and monitors on the thread's process then fire.
    """

    __slots__ = ("proc",)

    def __init__(self, proc: Proc) -> None:
        self.proc = proc

    def __del__(self) -> None:
        try:
            terminate(self.proc, "normal")
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _raise_dead(proc: Proc) -> None:
    """Unwind a thread whose process has been killed."""
    if proc.actor is not None:
        raise ProcessExit(proc.reason)
    # a plain thread: report the death once, then start afresh with a new process
    _tls.proc = None
    raise Exit(proc.reason)


def check_alive() -> None:
    """Stop a killed actor thread before it affects anyone else (cheap, called by send)."""
    proc: Proc | None = getattr(_tls, "proc", None)
    if proc is not None and not proc.alive:
        _raise_dead(proc)


def begin_signal() -> Proc | None:
    """Before the calling process sends a message or signal; hand the result to :func:`end_signal`.

    Erlang orders the signals between two processes: whatever P sent before it died reaches
    Q before P's EXIT or DOWN. Here another thread may kill P while P's thread is between
    checking that it is alive and queueing its message; the death is then announced by P's
    thread once the message is queued. Raises as :func:`check_alive` for a process already
    dead; None for a thread that is not a process yet (nobody can have linked to it).

    No lock on this path, which every send takes: the sender says it is sending, then looks
    whether it is alive; ``terminate`` marks the process dead, leaves the news in
    ``deferred_death``, then looks whether a send is in progress. Under the GIL one of the two
    sees what the other did first, and whoever pops the news (``list.pop`` is atomic) tells it.
    """
    proc: Proc | None = getattr(_tls, "proc", None)
    if proc is None:
        return None
    proc.sending.append(None)
    if proc.alive:
        return proc
    end_signal(proc)
    _raise_dead(proc)
    return None  # unreachable: _raise_dead raises


def end_signal(proc: Proc | None) -> None:
    """The send :func:`begin_signal` began is done: announce a death that waited for it."""
    if proc is None:
        return
    sending = proc.sending
    sending.pop()
    if proc.deferred_death and not sending:
        _claim_death(proc)


def _claim_death(proc: Proc) -> None:
    """Announce ``proc``'s death unless another thread has just done so."""
    try:
        death = proc.deferred_death.pop()
    except IndexError:
        return
    try:
        _announce_death(proc.pid, *death)
    finally:
        proc.death_told = True


def send_as_me(deliver: Callable[..., None], *args: Any) -> None:
    """``deliver(*args)`` as a send of the calling process: it arrives before the news of its death."""
    me = begin_signal()
    try:
        deliver(*args)
    finally:
        end_signal(me)


def abandon_sends() -> None:
    """The calling thread is between two commands (the shell's prompt), so none of its sends is
    in progress, whatever an interrupt (Ctrl-C) cut short between begin_signal and end_signal;
    a death that waited for such a send is told now rather than never."""
    proc: Proc | None = getattr(_tls, "proc", None)
    if proc is not None and proc.sending:
        proc.sending.clear()
        if proc.deferred_death:
            _claim_death(proc)


def register_live(name: str, pid: Pid) -> bool:
    """Bind ``name`` to the local process ``pid``: False, and the name free again, if the process
    has died by then. Its ``terminate`` frees its names, but may have run just before the name
    was bound; a name must not outlive its holder. Raises ValueError if the name is taken."""
    registry.add(name, pid)
    if node.local_proc(pid) is None:
        registry.remove_pid(pid)
        return False
    return True


def self_pid() -> Pid:
    return current().pid


# -- spawning ------------------------------------------------------------------------------

def spawn(fn: Callable[..., Any], *args: Any, link: bool = False) -> Pid:
    return spawn_opt(fn, args, link=link)[0]


def spawn_monitor(fn: Callable[..., Any], *args: Any) -> tuple[Pid, Ref]:
    """Erlang's ``spawn_monitor``: the new process is monitored before it runs a single line,
    so even a process that dies at once is reported with its own reason, never ``noproc``."""
    pid, ref = spawn_opt(fn, args, monitor=True)
    assert ref is not None
    return pid, ref


def spawn_opt(fn: Callable[..., Any], args: tuple, link: bool = False,
              monitor: bool = False) -> tuple[Pid, Ref | None]:
    """Erlang's ``spawn_opt`` with ``link`` / ``monitor``, both in place before ``fn`` starts."""
    if not callable(fn):
        raise TypeError(f"spawn: expected a callable and its arguments, got {fn!r}")
    monitor_ref = make_ref() if monitor else None
    actor = _ProcessActor(fn, args)
    proc = actor.proc
    with node.table_lock:
        node.procs[proc.pid.id] = proc
    me = current() if link or monitor_ref is not None else None
    if me is not None:
        with _lock:
            if link:
                me.links.add(proc.pid)
                proc.links.add(me.pid)
            if monitor_ref is not None:
                me.monitors[monitor_ref] = (node.name, proc.pid)
                proc.monitored_by[monitor_ref] = (me.pid, proc.pid)
    pykka.ActorRegistry.register(actor.actor_ref)
    try:
        actor._start_actor_loop()
    except BaseException:
        _never_started(actor, me, monitor_ref)
        raise
    return proc.pid, monitor_ref


def _never_started(actor: _ProcessActor, spawner: Proc | None, monitor_ref: Ref | None) -> None:
    """Undo a spawn whose thread the OS would not start ("can't start new thread").

    As when Erlang's ``spawn`` fails with ``system_limit``, no process came to be: the caller
    gets the error, and no link, monitor, table entry or pykka registration of it stays behind
    (the spawner's link would otherwise be kept for ever, to a pid that never ran).
    """
    proc = actor.proc
    pykka.ActorRegistry.unregister(actor.actor_ref)
    with _lock:
        proc.alive = False
        proc.reason = "system_limit"
        proc.links = set()
        proc.monitored_by = {}
        if spawner is not None:
            spawner.links.discard(proc.pid)
            if monitor_ref is not None:
                spawner.monitors.pop(monitor_ref, None)
        with node.table_lock:
            if node.procs.get(proc.pid.id) is proc:
                del node.procs[proc.pid.id]
    proc.mailbox.close("system_limit")


# -- receive -------------------------------------------------------------------------------

def receive(timeout: int | float | None = None, match: Callable[[Any], bool] | None = None) -> Any:
    return receive_as(current(), timeout, match)


def receive_as(proc: Proc, timeout: int | float | None, match: Callable[[Any], bool] | None) -> Any:
    """:func:`receive` for a caller that already holds its process (a call awaiting its reply)."""
    try:
        return proc.mailbox.receive(match, None if timeout is None else timeout / 1000.0)
    except ProcessExit:
        _raise_dead(proc)
        raise


def flush() -> list[Any]:
    proc = current()
    try:
        return proc.mailbox.flush()
    except ProcessExit:
        _raise_dead(proc)
        raise


# -- dying ---------------------------------------------------------------------------------

def terminate(proc: Proc, reason: Any) -> None:
    """``proc`` exits with ``reason``: free its name, fire its links and monitors."""
    with _lock:
        if not proc.alive:
            return
        proc.alive = False
        proc.reason = reason
        links, proc.links = proc.links, set()
        watchers, proc.monitored_by = proc.monitored_by, {}
        held, proc.monitors = proc.monitors, {}
        proc.node_monitors = {}
        with node.table_lock:
            if node.procs.get(proc.pid.id) is proc:
                del node.procs[proc.pid.id]
        registry.remove_pid(proc.pid)
        for ref, (target_node, obj) in held.items():
            if node.is_local_node(target_node):
                _unmonitor(obj, ref)
    proc.mailbox.close(reason)
    holder_gone(proc.pid)
    for on_death in death_hooks:
        on_death(proc.pid)
    # if its thread is queueing a message, that must arrive first: end_signal tells, see begin_signal
    proc.deferred_death.append((reason, links, watchers, held))
    if not proc.sending:
        _claim_death(proc)


#: called with the pid of every process that dies (the timer scheduler drops its timers)
death_hooks: list[Callable[[Pid], None]] = []


def _announce_death(pid: Pid, reason: Any, links: set[Pid], watchers: dict, held: dict) -> None:
    """Tell ``pid``'s links and watchers that it died, and remote targets it no longer watches."""
    for linked in links:
        _tell(partial(send_exit, pid, linked, kind="link"), reason)
    for ref, (watcher, obj) in watchers.items():
        _tell(partial(_deliver_down, watcher, ref, obj), reason)
    for ref, (target_node, obj) in held.items():
        if not node.is_local_node(target_node):
            _remote(target_node, ("demonitor", pid, obj, ref))


def _tell(notice: Callable[[Any], None], reason: Any) -> None:
    """One notice of a death. A reason that cannot be pickled for another node (an exception
    holding a lock, say) goes there as ``("unpicklable", repr(reason))``: every link and
    monitor hears of the death, where the first such notice used to stop the others."""
    try:
        try:
            notice(reason)
        except EncodeError:
            notice(("unpicklable", repr(reason)))
    except Exception:  # noqa: BLE001 - one notice that fails must not keep the others from going
        log.exception("telling a death to a link or monitor failed")


def _monitor_target(obj: Any) -> Proc | None:
    if type(obj) is Pid:
        return node.local_proc(obj)
    pid = registry.lookup(obj[0])
    return node.local_proc(pid) if pid is not None else None


def _unmonitor(obj: Any, ref: Ref) -> None:
    """Take monitor ``ref`` off the local process it was set on (called with ``_lock`` held).

    A monitor by name is on the process that held the name when it was set, as in Erlang;
    the name may since have been unregistered or taken by another process, so when the name
    no longer leads to the monitor, the processes are searched for it (rare: that costs a
    look at each), rather than leaving it on its holder for as long as the holder lives.
    """
    target = _monitor_target(obj)
    if target is not None and target.monitored_by.pop(ref, None) is not None:
        return
    if type(obj) is tuple:
        for proc in list(node.procs.values()):
            if proc.monitored_by.pop(ref, None) is not None:
                return


def send_exit(from_pid: Pid, to: Pid, reason: Any, kind: str) -> None:
    """An exit signal. kind: "link" (a linked process died), "exit" (exit/2) or "kill"."""
    proc = node.local_proc(to)
    if proc is not None:
        apply_exit(proc, from_pid, reason, kind)
    elif not node.is_local_node(to.node):
        _remote(to.node, ("exit", from_pid, to, reason, kind))


def apply_exit(proc: Proc, from_pid: Pid, reason: Any, kind: str) -> None:
    die: Any = None
    with _lock:
        if not proc.alive:
            return
        if kind == "link":
            if from_pid not in proc.links:
                return  # unlinked meanwhile: the signal is stale
            proc.links.discard(from_pid)
        if kind == "kill":
            die = "killed"
        elif proc.trap_exit:
            proc.mailbox.put(("EXIT", from_pid, reason))
        elif reason == "normal":
            if kind == "exit" and from_pid == proc.pid:
                die = "normal"  # exit(self(), normal) ends the caller
        else:
            die = reason
    if die is not None:
        terminate(proc, die)


def _deliver_down(watcher: Pid, ref: Ref, obj: Any, reason: Any) -> None:
    proc = node.local_proc(watcher)
    if proc is not None:
        with _lock:  # queued under the lock, so a racing demonitor either drops it or never sees it
            if proc.monitors.pop(ref, None) is None:
                return  # demonitored meanwhile
            proc.mailbox.put(("DOWN", ref, "process", obj, reason))
    elif not node.is_local_node(watcher.node):
        _remote(watcher.node, ("down", watcher, ref, obj, reason))


def _check_pid(who: str, pid: Any) -> None:
    """A wrong argument raises at the call site: not a Pid, or a pid naming a malformed node."""
    if type(pid) is not Pid:
        raise TypeError(f"{who}: expected a Pid, got {pid!r}")
    if not node.is_local_node(pid.node):
        split_node_name(pid.node)  # BadNodeName (a ValueError) before anything is sent or linked


def exit(pid: Pid, reason: Any) -> bool:
    """Send an exit signal (``exit/2``); ``"kill"`` cannot be trapped."""
    _check_pid("exit", pid)
    me = current()
    send_as_me(send_exit, me.pid, pid, reason, "kill" if reason == "kill" else "exit")
    if not me.alive:
        _raise_dead(me)
    return True


# -- links ---------------------------------------------------------------------------------

def link(pid: Pid) -> bool:
    _check_pid("link", pid)
    me = current()
    if pid == me.pid:
        return True
    if node.is_local_node(pid.node):
        with _lock:
            target = node.local_proc(pid)
            if target is not None:
                target.links.add(me.pid)
                me.links.add(pid)
                return True
            trapping = me.trap_exit
            if trapping:
                me.mailbox.put(("EXIT", pid, "noproc"))
        if not trapping:
            raise Exit("noproc")
        return True
    with _lock:
        me.links.add(pid)
    _remote(pid.node, ("link", me.pid, pid))
    return True


def unlink(pid: Pid) -> bool:
    _check_pid("unlink", pid)
    me = current()
    with _lock:
        me.links.discard(pid)
        target = node.local_proc(pid)
        if target is not None:
            target.links.discard(me.pid)
    if not node.is_local_node(pid.node):
        _remote(pid.node, ("unlink", me.pid, pid))
    # As Erlang's unlink/1: from now on the link has no effect (a signal still on its way is
    # dropped on arrival, see apply_exit), but an ("EXIT", pid, _) message already queued by a
    # trapping caller stays there: it may as well have come from exit/2, so the caller decides.
    return True


def process_flag(flag: str, value: Any) -> Any:
    if flag != "trap_exit":
        raise ValueError(f"process_flag: only 'trap_exit' is supported, got {flag!r}")
    if type(value) is not bool:  # bool("no") is True: a truthy value is no answer
        raise TypeError(f"process_flag: the trap_exit value must be a bool (True or False), got {value!r}")
    me = current()
    with _lock:
        old, me.trap_exit = me.trap_exit, value
    return old


def is_alive(pid: Pid) -> bool:
    if type(pid) is not Pid:
        raise TypeError(f"is_alive: expected a Pid, got {pid!r}")
    if node.is_local_node(pid.node):
        return node.local_proc(pid) is not None
    from . import rpc  # a remote pid: ask its node, as erlang:is_process_alive would not

    try:
        return bool(rpc.call(pid.node, _is_alive_here, pid, timeout=5000))
    except Exit:
        return False


def _is_alive_here(pid: Pid) -> bool:
    return node.local_proc(pid) is not None


# -- monitors ------------------------------------------------------------------------------

def resolve_server(server: Any) -> tuple[str, Any]:
    """(node of the server, object a DOWN reports: a Pid or (name, node))."""
    if type(server) is Pid:
        return server.node, server
    if type(server) is str:
        return node.name, (server, node.name)
    if (type(server) is tuple and len(server) == 2 and isinstance(server[0], str)
            and isinstance(server[1], str)):
        return server[1], server
    raise TypeError(
        f"expected a server: a Pid, a registered name str or a (name, node) tuple, got {server!r}")


def monitor(server: Any) -> Ref:
    return monitor_as(current(), server)


def monitor_as(me: Proc, server: Any, target: Proc | None = None, ref: Ref | None = None) -> Ref:
    """:func:`monitor` for a caller that already holds its process (``gen_statem.call``);
    ``target``, when the caller already looked it up, is the local process ``server`` names;
    ``ref``, when the caller made it (fresh, for this monitor alone), is the monitor's."""
    if target is not None or (type(server) is Pid and node.is_local_node(server.node)):
        target_node, obj = node.name, server  # the common case of a call: no name resolution
    else:
        target_node, obj = resolve_server(server)
    if ref is None:
        ref = make_ref()
    if node.is_local_node(target_node):
        if type(obj) is tuple:
            obj = (obj[0], node.name)
        with _lock:
            if target is None:
                target = _monitor_target(obj)
            if target is not None and target.alive:
                target.monitored_by[ref] = (me.pid, obj)
                me.monitors[ref] = (node.name, obj)
            else:
                me.mailbox.put(("DOWN", ref, "process", obj, "noproc"))
        return ref
    split_node_name(target_node)  # a malformed name is a wrong argument: raise before monitoring
    with _lock:
        me.monitors[ref] = (target_node, obj)
    _remote(target_node, ("monitor", me.pid, obj, ref))
    return ref


def demonitor(ref: Ref, flush: bool = True) -> bool:
    """Drop a monitor; with ``flush`` (the default) also a DOWN already queued for it."""
    if type(ref) is not Ref:
        raise TypeError(f"demonitor: expected a Ref, got {ref!r}")
    if type(flush) is not bool:  # "no" is truthy: a mistake to refuse, not to act on
        raise TypeError(f"demonitor: flush must be a bool, got {flush!r}")
    return demonitor_as(current(), ref, flush)


def demonitor_as(me: Proc, ref: Ref, flush: bool = True, target: Proc | None = None) -> bool:
    """:func:`demonitor` for a caller that already holds its process (``gen_statem.call``);
    ``target``, if given, is the local process the monitor was set on (no second lookup)."""
    with _lock:
        entry = me.monitors.pop(ref, None)
        local = target is not None or (entry is not None and node.is_local_node(entry[0]))
        if entry is not None and local:
            if target is None:
                _unmonitor(entry[1], ref)
            else:
                target.monitored_by.pop(ref, None)
    if entry is not None and not local:
        _remote(entry[0], ("demonitor", me.pid, entry[1], ref))
    if flush and len(me.mailbox):
        try:
            me.mailbox.receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN"
                               and m[1] == ref, 0)
        except TimeoutError:
            pass
    return True


def relations(proc: Proc, item: str) -> list[Any]:
    """``process_info``'s ``links``, ``monitors`` or ``monitored_by`` of ``proc``, as a snapshot."""
    with _lock:
        if item == "links":
            return list(proc.links)
        if item == "monitors":
            return [("process", obj) for _node_name, obj in proc.monitors.values()]
        return [watcher for watcher, _obj in proc.monitored_by.values()]


def check_timeout_ms(fn: str, timeout: Any) -> None:
    """The time-out of a call-like function: a non-negative int of ms, or None (TypeError else)."""
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise TypeError(f"{fn}: timeout must be a non-negative int of ms or None, got {timeout!r}")
    if timeout is not None:
        check_ms_in_range(fn, timeout)


def await_reply(me: Proc, tag: Ref, mref: Ref, timeout: int | None) -> Any:
    """The :class:`CallReply` tagged ``tag`` or the DOWN of monitor ``mref``, whichever comes first.

    The two halves of a call (``gen_statem.call``, ``rpc.call``): the reply, or news that
    whoever should send it is gone.  On ``timeout`` (ms) the alias ``tag`` and the monitor are
    dropped, so a late reply or DOWN never shows up, and ``TimeoutError`` is raised.
    """

    def is_answer(m: Any) -> bool:
        if type(m) is CallReply:
            # from this node the reply carries the very ref the call made: no Ref.__eq__ call
            return m.ref is tag or m.ref == tag
        return type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == mref

    try:
        return receive_as(me, timeout, is_answer)
    except TimeoutError:
        me.mailbox.deactivate_alias(tag)
        demonitor_as(me, mref)
        raise


def monitor_node(node_name: str, flag: bool = True) -> bool:
    if not isinstance(node_name, str):
        raise TypeError(f"monitor_node: expected a node name str, got {node_name!r}")
    if type(flag) is not bool:
        raise TypeError(f"monitor_node: flag must be a bool, got {flag!r}")
    split_node_name(node_name)  # ValueError for a str that is not name@host, distributed or not
    me = current()
    if not flag:
        with _lock:
            me.node_monitors.pop(node_name, None)
        return True
    # Counted before the connection is looked at: a node_down between the look and the count
    # would otherwise find nothing to report, and this monitor would never fire.
    with _lock:
        me.node_monitors[node_name] = me.node_monitors.get(node_name, 0) + 1
    dist = node.dist
    if dist is not None and (node_name == node.name or dist.ensure_connected(node_name)):
        return True
    with _lock:
        count = me.node_monitors.get(node_name, 0)
        if count == 0:
            return True  # a node_down took it meanwhile, and has told us
        if count == 1:
            del me.node_monitors[node_name]
        else:
            me.node_monitors[node_name] = count - 1
        me.mailbox.put(("nodedown", node_name))
    return True


# -- distribution ----------------------------------------------------------------------------

def portable_reason(reason: Any) -> Any:
    """An exit reason ready for another node (:func:`nodes.codec.apart`, its ``repr`` beside it);
    EncodeError if it cannot be pickled at all."""
    return codec.apart(reason, repr(reason))


def arrived_reason(reason: Any, from_node: str) -> Any:
    """An exit reason from another node (:func:`portable_reason`), rebuilt here if it can be,
    else ``("unloadable", its text)``."""
    if type(reason) is not Pickled:
        return reason
    try:
        return codec.loads(reason.data)
    except Exception as error:  # noqa: BLE001 - a class missing here, a broken __reduce__...
        log.warning("an exit reason from %s cannot be rebuilt here (%s: %s); it arrives as its text: %s",
                    from_node, type(error).__name__, error, reason.text)
        return ("unloadable", reason.text)


def _remote(target_node: str, signal: tuple[Any, ...]) -> None:
    kind = signal[0]
    if kind == "exit":
        signal = (kind, signal[1], signal[2], portable_reason(signal[3]), signal[4])
    elif kind == "down":
        signal = (kind, signal[1], signal[2], signal[3], portable_reason(signal[4]))
    dist = node.dist  # read once: a stop from another thread may set it to None meanwhile
    if dist is None or not dist.send_signal(target_node, signal):
        # not distributed (or stopped meanwhile): the other node is unreachable, so the signal
        # fails as a lost connection
        node_down_signal(target_node, signal)


def node_down_signal(target_node: str, signal: tuple[Any, ...]) -> None:
    """A signal that could not reach ``target_node``: answer it as Erlang does for noconnection."""
    kind = signal[0]
    if kind == "link":
        _, from_pid, to = signal
        proc = node.local_proc(from_pid)
        if proc is not None:
            apply_exit(proc, to, "noconnection", "link")
    elif kind == "monitor":
        _, watcher, obj, ref = signal
        _deliver_down(watcher, ref, obj, "noconnection")


def apply_remote_signal(signal: tuple[Any, ...]) -> None:
    """A signal that arrived from another node, for a local process."""
    kind = signal[0]
    if kind == "msg":
        node.route(signal[1], signal[2])
    elif kind == "reg_msg":
        node.route(signal[1], signal[2])
    elif kind == "exit":
        _, from_pid, to, reason, how = signal
        proc = node.local_proc(to)
        if proc is not None:
            apply_exit(proc, from_pid, arrived_reason(reason, from_pid.node), how)
    elif kind == "link":
        _, from_pid, to = signal
        with _lock:
            proc = node.local_proc(to)
            if proc is not None:
                proc.links.add(from_pid)
        if proc is None:
            _remote(from_pid.node, ("exit", to, from_pid, "noproc", "link"))
    elif kind == "unlink":
        _, from_pid, to = signal
        with _lock:
            proc = node.local_proc(to)
            if proc is not None:
                proc.links.discard(from_pid)
    elif kind == "monitor":
        _, watcher, obj, ref = signal
        with _lock:
            target = _monitor_target(obj)
            if target is not None:
                target.monitored_by[ref] = (watcher, obj)
        if target is None:
            _remote(watcher.node, ("down", watcher, ref, obj, "noproc"))
    elif kind == "demonitor":
        _, watcher, obj, ref = signal
        with _lock:
            _unmonitor(obj, ref)
    elif kind == "down":
        _, watcher, ref, obj, reason = signal
        _deliver_down(watcher, ref, obj, arrived_reason(reason, obj.node if type(obj) is Pid else obj[1]))
    else:
        log.warning("dropping an unknown signal %r", kind)


def node_down(node_name: str) -> None:
    """The connection to ``node_name`` is lost: links fire and monitors report noconnection."""
    exits: list[tuple[Proc, Pid]] = []
    downs: list[tuple[Pid, Ref, Any]] = []
    nodedowns: list[Proc] = []
    with _lock:
        for proc in list(node.procs.values()):
            for linked in [p for p in proc.links if p.node == node_name]:
                exits.append((proc, linked))
            for ref, (target_node, obj) in list(proc.monitors.items()):
                if target_node == node_name:
                    downs.append((proc.pid, ref, obj))
            for ref, (watcher, _obj) in list(proc.monitored_by.items()):
                if watcher.node == node_name:
                    del proc.monitored_by[ref]
            count = proc.node_monitors.pop(node_name, 0)
            nodedowns.extend([proc] * count)
    for proc, linked in exits:
        apply_exit(proc, linked, "noconnection", "link")
    for watcher, ref, obj in downs:
        _deliver_down(watcher, ref, obj, "noconnection")
    for proc in nodedowns:
        proc.mailbox.put(("nodedown", node_name))


def shutdown_all(reason: Any = "shutdown") -> None:
    """The node is stopping: every local process exits with ``reason`` (links and monitors fire).

    Returns once every death has been told, so that the connections can close behind them:
    a process caught half-way through a send tells its own death when that send is done
    (see begin_signal), which takes microseconds, or, on a machine starved of CPU, seconds:
    a second was once not enough with two test suites on two cores, and a death told after the
    connections closed reached the other nodes as noconnection. One whose thread has not told it
    within 5 s (a thread stopped in a debugger, say) has it told from here, unless its thread
    took the news already and is still telling it.
    """
    procs = list(node.procs.values())
    for proc in procs:
        terminate(proc, reason)
    deadline = time.monotonic() + 5.0
    # death_told, not an empty deferred_death: the news is popped before it is told
    while not all(p.death_told for p in procs) and time.monotonic() < deadline:
        time.sleep(0.001)
    for proc in procs:
        _claim_death(proc)
    untold = [p.pid for p in procs if not p.death_told]
    if untold:
        log.warning("stopping with the deaths of %s still being told: their remote links and "
                    "monitors may see noconnection instead", untold)


def rename_all(new_name: str, new_creation: int) -> None:
    """Distribution started: local processes' pids take the new node name, in place.

    As Erlang's ``node(Pid)`` follows the node's name, every holder of a local pid (a
    variable, a link set, the registry, a queued message) sees the new name and the pid
    still compares equal to the process's.  Copies of an old pid made otherwise (built by
    hand, say) keep routing to the same process through ``pre_start_pids``.
    """
    with _lock, node.table_lock:
        for proc in list(node.procs.values()):
            pid = proc.pid
            node.pre_start_pids[Pid(pid.node, pid.id, pid.creation)] = proc
            rename_local_pid(pid, new_name, new_creation)

        def fix(obj: Any) -> Any:
            if type(obj) is tuple and len(obj) == 2 and obj[1] == node.NONODE:
                return (obj[0], new_name)  # a monitor on a registered name of this node
            return obj

        for proc in node.procs.values():
            proc.monitors = {
                ref: (new_name if node_name == node.NONODE else node_name, fix(obj))
                for ref, (node_name, obj) in proc.monitors.items()
            }
            proc.monitored_by = {ref: (w, fix(obj)) for ref, (w, obj) in proc.monitored_by.items()}

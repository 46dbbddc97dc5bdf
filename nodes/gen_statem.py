"""``gen_statem`` in state-functions mode: a process that runs a callback module.

The callback module is a module, a class or an instance: callbacks are looked
up as attributes (a class is never instantiated).  ``init(args)`` runs in the
new process before ``start``/``start_link`` return.  Each event calls the
function named after the current state with ``(event_type, event_content,
data)``; event types are ``"cast"``, ``("call", from_)`` and ``"info"``.

Return values: ``("next_state", name, data[, actions])``, ``("keep_state",
data[, actions])``, ``("keep_state_and_data"[, actions])``, ``("stop", reason[,
data])``, ``("stop_and_reply", reason, replies[, data])``.  Actions (a list, or
one action), as OTP's:

- ``("reply", from_, reply)``;
- ``("next_event", type, content)``: events inserted this way are handled, in
  the order given, before anything else still queued;
- ``("state_timeout", ms, content)``: an event ``("state_timeout", content)``
  after ``ms``, unless the state changes first; ``("timeout", ms, content)``:
  an event ``("timeout", content)`` unless *any* other event comes first;
  ``(("timeout", name), ms, content)``: a generic time-out, event type
  ``("timeout", name)``, cancelled only by setting it again.  Setting one that
  runs restarts it; ``"cancel"`` (or ``"infinity"``/None for ``ms``) stops it;
- ``"postpone"`` (or ``("postpone", True)``): keep the current event and
  handle it again after the next state change (postponed events come back in
  their order, after events inserted by that transition, before the rest).

Wire format (what a member finds in its mailbox): ``("$gen_call", (pid, ref),
request)``, ``("$gen_cast", msg)``, ``("$system", (pid, ref), request)``;
replies are :class:`~nodes.terms.CallReply` so that a reply arriving after the
caller gave up is dropped (Erlang uses process aliases for this); a reply to another node
travels pickled apart (:class:`~nodes.terms.Pickled`), unless a plain str, number, bytes or None,
so that a value the caller's node cannot rebuild (a class it cannot import) raises that error
from ``call``, with a note, instead of being dropped with the reply (``call`` then timed out
though the call was served).  A call to a name
registered on this node (``"foo"`` or ``("foo", node())``) looks the name up once and
then calls, and monitors, that pid, as OTP's ``gen:call`` does; a name nobody has
raises ``Exit("noproc")`` at once.
"""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from . import codec, process, registry
from . import this_node as node
from .terms import MAX_TIMEOUT_MS, PLAIN_TYPES, CallReply, Exit, Pickled, Pid, ProcessExit, Ref, make_ref

log = logging.getLogger("nodes.gen_statem")

__all__ = ["start", "start_link", "call", "cast", "reply", "stop", "take_queued_calls"]


# -- starting ----------------------------------------------------------------------------------

def start_link(module: Any, args: Any, name: str | None = None) -> Any:
    """Start a gen_statem linked to the caller: ``("ok", pid)`` | ``("error", reason)`` | ``"ignore"``."""
    return _start(module, args, name, True)


def start(module: Any, args: Any, name: str | None = None) -> Any:
    """Start a gen_statem not linked to the caller: ``("ok", pid)`` | ``("error", reason)`` | ``"ignore"``."""
    return _start(module, args, name, False)


def _start(module: Any, args: Any, name: str | None, link: bool) -> Any:
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"gen_statem.start: name must be a non-empty str or None, got {name!r}")
    if not callable(getattr(module, "init", None)):
        raise TypeError(f"gen_statem.start: callback module {module!r} has no callable init(args)")
    me = process.current()
    # the acknowledgement is a reply to an alias: one sent by an init that was killed while it
    # ran (its thread goes on until it touches the runtime) is dropped, never left behind
    ack = make_ref()
    me.mailbox.activate_alias(ack)
    # monitored (and linked) before init runs: an init killed at once is reported as killed
    pid, mref = process.spawn_opt(_enter, (module, args, name, me.pid, ack, link), link=link, monitor=True)
    assert mref is not None

    def is_ack_or_down(m: Any) -> bool:
        return (type(m) is CallReply and m.ref == ack) or (
            type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == mref)

    msg = process.receive(None, is_ack_or_down)
    me.mailbox.deactivate_alias(ack)
    if type(msg) is CallReply:
        result = msg.value
        if result[0] == "ok":
            process.demonitor(mref)
            return result
        # init failed: the process unlinked itself and is on its way out; wait until it is gone
        process.receive(None, lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == mref)
        return result
    # died before acknowledging (killed during init): no EXIT message is left behind, as OTP's
    # proc_lib consumes it (links fire before monitors, so with the DOWN here it is queued)
    reason = msg[4]
    if link:
        process.unlink(pid)
        try:
            process.receive(0, lambda m: type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == pid)
        except TimeoutError:
            pass
    return ("error", reason)


def _enter(module: Any, args: Any, name: str | None, starter: Pid, ack: Ref, linked: bool) -> None:
    me = process.current()

    def fail(reason: Any, answer: Any = None) -> None:
        if linked:
            process.unlink(starter)
        answer = ("error", reason) if answer is None else answer
        process.send_as_me(node.route, starter, CallReply(ack, answer))
        raise Exit(reason)

    if name is not None:
        try:
            registered = process.register_live(name, me.pid)
        except ValueError:
            fail(("already_started", registry.lookup(name)))
        if not registered:  # killed (by its starter's link) before the name was ours
            process.check_alive()
    mode = _callback_mode(module)
    if mode is not None:
        fail(("bad_callback_mode", mode))
    try:
        result = module.init(args)
    except Exit as exc:  # exit(Reason) in init
        fail(exc.reason)
        return
    except Exception as exc:  # noqa: BLE001 - a crashing init is an init failure
        fail(("exception", exc, traceback.format_exc()))
        return
    if type(result) is tuple and len(result) in (3, 4) and result[0] == "ok":
        state_name, data = result[1], result[2]
        actions = result[3] if len(result) == 4 else None
    elif type(result) is tuple and len(result) == 2 and result[0] == "stop":
        fail(result[1])
        return
    elif result == "ignore":  # as OTP: start returns "ignore", and the process ends normally
        fail("normal", "ignore")
        return
    else:
        fail(("bad_return_from_init", result))
        return
    process.send_as_me(node.route, starter, CallReply(ack, ("ok", me.pid)))
    _Machine(module, state_name, data, starter if linked else None).run(actions)


def _callback_mode(module: Any) -> Any:
    """None when the module's ``callback_mode`` (if it has one) is the one this gen_statem runs:
    state functions without state enter calls; else what it asked for, which fails the start
    (``("bad_callback_mode", mode)``, as OTP names a mode it cannot take) rather than leave the
    module's enter clauses or handle_event function silently unused."""
    declared = getattr(module, "callback_mode", None)
    if declared is None:
        return None
    mode = declared() if callable(declared) else declared
    if mode == "state_functions" or (type(mode) in (list, tuple) and list(mode) == ["state_functions"]):
        return None
    return mode


# -- the event loop -----------------------------------------------------------------------------

_TIMEOUT = "$gen_timeout"  # (_TIMEOUT, key, token, content): a time-out the machine set itself
_EVENT_TIMEOUT = "timeout"
_STATE_TIMEOUT = "state_timeout"


def _timeout_key(what: Any) -> bool:
    return what == _EVENT_TIMEOUT or what == _STATE_TIMEOUT or (
        type(what) is tuple and len(what) == 2 and what[0] == _EVENT_TIMEOUT)


def _one_action(actions: Any) -> bool:
    """Whether ``actions`` is one action given on its own rather than a sequence of them."""
    if type(actions) is str:
        return True  # "postpone"
    if type(actions) is not tuple or not actions:
        return False
    head = actions[0]
    if isinstance(head, str):
        return True
    # a generic time-out, (("timeout", name), ms | "cancel", ...), not a tuple of actions
    return type(head) is tuple and len(head) == 2 and head[0] == _EVENT_TIMEOUT and len(actions) in (2, 3) \
        and (actions[1] is None or type(actions[1]) in (int, str))


class _Machine:
    __slots__ = ("module", "state", "data", "parent", "pending", "postponed", "timeouts", "tokens", "zero",
                 "zero_due")

    def __init__(self, module: Any, state: Any, data: Any, parent: Pid | None) -> None:
        self.module = module
        self.state = state
        self.data = data
        self.parent = parent
        self.pending: deque[tuple[Any, Any]] = deque()
        self.postponed: list[tuple[Any, Any]] = []
        # running time-outs: key ("timeout", "state_timeout", ("timeout", name)) -> (timer, token)
        self.timeouts: dict[Any, tuple[Ref, int]] = {}
        self.tokens = 0
        self.zero: dict[Any, Any] = {}  # time-outs of 0 ms set by the current transition: key -> content
        # time-outs of 0 ms due once the events queued before them are handled (OTP's t0q): still
        # a time-out till then, which a state change, a new setting or "cancel" takes back
        self.zero_due: dict[Any, Any] = {}

    def run(self, init_actions: Any) -> None:
        proc = process.current()
        mailbox = proc.mailbox
        pending = self.pending
        timeouts = self.timeouts
        zero_due = self.zero_due
        if init_actions:
            self._transition(self.state, init_actions, None)
        while True:
            if pending:
                event_type, content = pending.popleft()
            elif zero_due:
                event_type = next(iter(zero_due))
                content = zero_due.pop(event_type)
            else:
                try:
                    msg = mailbox.receive(None, None)
                except ProcessExit:
                    raise
                if type(msg) is tuple and msg:
                    tag = msg[0]
                    if tag == "$gen_call" and len(msg) == 3:
                        event_type, content = ("call", msg[1]), msg[2]
                    elif tag == "$gen_cast" and len(msg) == 2:
                        event_type, content = "cast", msg[1]
                    elif tag == "$system" and len(msg) == 3:
                        self._system(msg[1], msg[2])
                        continue
                    elif (tag == "EXIT" and len(msg) == 3 and msg[1] == self.parent and proc.trap_exit):
                        self._terminate(msg[2])
                    elif tag == _TIMEOUT and len(msg) == 4:
                        running = timeouts.get(msg[1])
                        if running is None or running[1] != msg[2]:
                            continue  # cancelled or restarted since this one was set
                        del timeouts[msg[1]]
                        event_type, content = msg[1], msg[3]
                    else:
                        event_type, content = "info", msg
                else:
                    event_type, content = "info", msg
            if timeouts and _EVENT_TIMEOUT in timeouts:
                # any event cancels the event time-out, inserted and retried ones too (when the
                # time-out itself fires, it has just been taken out of `timeouts`)
                self._cancel(_EVENT_TIMEOUT)
            if zero_due and _EVENT_TIMEOUT in zero_due:
                del zero_due[_EVENT_TIMEOUT]
            self._handle(event_type, content)

    def _handle(self, event_type: Any, content: Any) -> None:
        fn = getattr(self.module, self.state, None) if isinstance(self.state, str) else None
        if fn is None:
            self._terminate(("undef_state_function", self.state), crash=True)
        try:
            result = fn(event_type, content, self.data)  # type: ignore[misc]
        except Exit as exc:  # exit(Reason) in a state function stops the machine with Reason
            self._terminate(exc.reason)
        except Exception as exc:  # noqa: BLE001 - a crashing callback stops the machine, as in OTP
            self._terminate(("exception", exc, traceback.format_exc()), crash=True)
        kind = result[0] if type(result) is tuple and result else result
        n = len(result) if type(result) is tuple else 0
        if kind == "repeat_state" or kind == "repeat_state_and_data":
            # OTP's repeat_* differ from keep_* only by re-running state enter calls, which
            # this gen_statem does not make
            kind = "keep_state" if kind == "repeat_state" else "keep_state_and_data"
        if kind == "keep_state" and n in (2, 3):
            self.data = result[1]
            if n == 3:
                self._transition(self.state, result[2], (event_type, content))
        elif kind == "next_state" and n in (3, 4):
            self.data = result[2]
            self._transition(result[1], result[3] if n == 4 else None, (event_type, content))
        elif kind == "keep_state_and_data":
            if n == 2:
                self._transition(self.state, result[1], (event_type, content))
        elif kind == "stop" and n in (0, 2, 3):  # a bare "stop" is ("stop", "normal"), as OTP's
            if n == 3:
                self.data = result[2]
            self._terminate(result[1] if n else "normal")
        elif kind == "stop_and_reply" and n in (3, 4):
            if n == 4:
                self.data = result[3]
            self._actions(result[2], None)
            self._terminate(result[1])
        else:
            self._terminate(("bad_return_from_state_function", result), crash=True)

    def _transition(self, new_state: Any, actions: Any, event: tuple[Any, Any] | None) -> None:
        """Enter ``new_state`` (maybe the same) and carry out ``actions``, in OTP's order."""
        changed = new_state != self.state
        self.state = new_state
        if changed:  # before the actions, which may start a new one
            if _STATE_TIMEOUT in self.timeouts:
                self._cancel(_STATE_TIMEOUT)
            self.zero_due.pop(_STATE_TIMEOUT, None)
        postpone, inserted = self._actions(actions, event) if actions else (False, None)
        if postpone:
            self.postponed.append(event)  # type: ignore[arg-type]  # _actions refuses it without one
        if changed and self.postponed:
            self.pending.extendleft(reversed(self.postponed))  # retried first in the new state...
            self.postponed = []
        if inserted:
            self.pending.extendleft(reversed(inserted))  # ...after the events this transition inserts
        if self.zero:
            # As OTP: a time-out of 0 comes behind the events enqueued above but ahead of every
            # message not yet received; an event time-out of 0 is cancelled by any enqueued event.
            zero, self.zero = self.zero, {}
            for key, content in zero.items():
                if key == _EVENT_TIMEOUT and self.pending:
                    continue
                self.zero_due[key] = content

    def _actions(self, actions: Any, event: tuple[Any, Any] | None) -> tuple[bool, list | None]:
        """Send replies and set time-outs; (postpone?, events to insert)."""
        if _one_action(actions):
            actions = [actions]
        postpone = False
        inserted: list | None = None
        for action in actions:
            if type(action) is tuple and action:
                head = action[0]
                if head == "reply" and len(action) == 3:
                    reply(action[1], action[2])
                    continue
                if head == "next_event" and len(action) == 3:
                    if inserted is None:
                        inserted = []
                    inserted.append((action[1], action[2]))
                    continue
                if _timeout_key(head) and len(action) in (2, 3) and self._set_timeout(action):
                    continue
                if head == "postpone" and len(action) == 2 and type(action[1]) is bool and event is not None:
                    postpone = action[1]
                    continue
            elif action == "postpone" and event is not None:
                postpone = True
                continue
            self._terminate(("bad_action", action), crash=True)
        return postpone, inserted

    def _set_timeout(self, action: tuple) -> bool:
        key = action[0]
        if len(action) == 2:
            if action[1] != "cancel":
                return False
            ms = None
        else:
            ms = action[1]
            if ms == "infinity":
                ms = None
            elif ms is not None and (type(ms) is not int or ms < 0 or ms > MAX_TIMEOUT_MS):
                return False  # a bad_action, as OTP's for a time-out it cannot take
        if key in self.timeouts:
            self._cancel(key)
        self.zero.pop(key, None)  # set again or cancelled: the latest word counts
        self.zero_due.pop(key, None)
        if ms == 0:
            self.zero[key] = action[2]
        elif ms is not None:
            from . import send_after  # the package's timer scheduler (imported late: no cycle)

            self.tokens += 1
            timer = send_after(ms, process.current().pid, (_TIMEOUT, key, self.tokens, action[2]))
            self.timeouts[key] = (timer, self.tokens)
        return True

    def _cancel(self, key: Any) -> None:
        from . import cancel_timer

        timer, _token = self.timeouts.pop(key)
        cancel_timer(timer)  # a message already sent is recognised as stale by its token

    def _system(self, from_: Any, request: Any) -> None:
        if request == "get_state":
            reply(from_, (self.state, self.data))
        elif type(request) is tuple and len(request) == 2 and request[0] == "terminate":
            self._terminate(request[1])
        else:
            reply(from_, ("error", "unknown_system_message"))

    def _terminate(self, reason: Any, crash: bool = False) -> None:
        # A machine killed while a callback ran is dead already: as in OTP, a killed process
        # never runs terminate (this unwinds its thread instead).
        process.check_alive()
        for key in list(self.timeouts):
            self._cancel(key)  # a dead machine's time-outs go with it, as Erlang's timers do
        terminate = getattr(self.module, "terminate", None)
        if terminate is not None:
            # As OTP's: a terminate that fails is reported, and the machine exits with its
            # failure rather than the reason it was stopping with (stop() then raises it).
            try:
                terminate(reason, self.state, self.data)
            except Exit as exc:
                reason, crash = exc.reason, True
            except Exception as exc:  # noqa: BLE001
                reason, crash = ("exception", exc, traceback.format_exc()), True
        if crash or not _is_quiet(reason):
            detail = reason[2] if type(reason) is tuple and len(reason) == 3 and reason[0] == "exception" \
                else repr(reason)
            log.error("gen_statem %r terminating in state %r with reason:\n%s",
                      process.current().pid, self.state, detail)
        raise Exit(reason)


def _is_quiet(reason: Any) -> bool:
    """A reason OTP ends a server with without an error report: normal, shutdown, (shutdown, _)."""
    return reason in ("normal", "shutdown") or (type(reason) is tuple and len(reason) == 2
                                                 and reason[0] == "shutdown")


# -- client side --------------------------------------------------------------------------------

def call(server: Any, request: Any, timeout: int | None = 5000) -> Any:
    """Send ``request`` and wait for the reply; raises ``nodes.Exit`` ("timeout", "noproc", ...)."""
    return _call(server, "$gen_call", request, timeout)


def call_tagged(server: Any, request: Any, ref: Ref, timeout: int | None = 5000) -> Any:
    """:func:`call` with ``ref`` as the call's tag (and its monitor's reference): for a caller
    that also needs a unique id inside the request, so that one reference serves both
    (``rafted.command``).  ``ref`` must come fresh from ``make_ref()`` for this one call."""
    return _call(server, "$gen_call", request, timeout, ref)


def _call(server: Any, tag: str, request: Any, timeout: int | None, ref: Ref | None = None) -> Any:
    process.check_timeout_ms("call", timeout)
    me = process.current()
    if type(server) is str or (type(server) is tuple and len(server) == 2 and type(server[0]) is str
                               and type(server[1]) is str and node.is_local_node(server[1])):
        # A name on this node is looked up once, and the call goes to (and monitors) the process
        # it names then, as OTP's gen:call does: "noproc" at once when nobody has it.
        pid = registry.lookup(server if type(server) is str else server[0])
        if pid is None:
            raise Exit("noproc")
        server = pid
    # The common case, a live process of this node named by its pid, is looked up once and
    # handed to the monitor, the send and the demonitor (each would look it up again).
    target = node.local_proc(server) if type(server) is Pid and server.node == node.name else None
    if type(server) is Pid:
        target_node = server.node
        if target is me or (target is None and server == me.pid):
            raise Exit("calling_self")
    else:
        target_node, _obj = process.resolve_server(server)
    mailbox = me.mailbox
    ref = process.monitor_as(me, server, target, ref)
    mailbox.activate_alias(ref)
    try:
        if target is not None:  # dropped if it died meanwhile, as a send
            process.send_as_me(target.mailbox.put, (tag, (me.pid, ref), request))
        else:
            process.send_as_me(node.route, server, (tag, (me.pid, ref), request))
    except BaseException:  # not sent (a request another node cannot be sent): nothing to wait for
        mailbox.deactivate_alias(ref)
        process.demonitor_as(me, ref, target=target)
        raise
    try:
        msg = process.await_reply(me, ref, ref, timeout)  # the monitor's ref tags the reply too
    except TimeoutError:
        raise Exit("timeout") from None
    mailbox.deactivate_alias(ref, purge=False)  # its one reply was just taken
    if type(msg) is CallReply:
        process.demonitor_as(me, ref, target=target)
        value = msg.value
        if type(value) is Pickled and not node.is_local_node(target_node):  # pickled apart for us
            try:
                return codec.loads(value.data)
            except Exception as error:
                error.add_note(f"the reply ({value.text}) to a call of {server!r} "
                               f"cannot be loaded on {node.name}")
                raise
        return value
    reason = msg[4]
    if reason == "noconnection":
        raise Exit(("nodedown", target_node))
    raise Exit(reason)


def cast(server: Any, msg: Any) -> str:
    """Send an asynchronous request; always ``"ok"``."""
    process.send_as_me(node.send, server, ("$gen_cast", msg), "cast")
    return "ok"


def reply(from_: Any, reply: Any) -> str:
    """Answer a call whose ``from_`` (pid, ref) a callback was handed."""
    if type(from_) is not tuple or len(from_) != 2 or type(from_[0]) is not Pid or type(from_[1]) is not Ref:
        raise TypeError(f"reply: from_ must be the (pid, ref) pair handed to the callback, got {from_!r}")
    to = from_[0]
    if type(reply) not in PLAIN_TYPES and not node.is_local_node(to.node):
        reply = codec.apart(reply)
    process.send_as_me(node.route, to, CallReply(from_[1], reply))
    return "ok"


def take_queued_calls(accept: Callable[[Any], bool], limit: int) -> list[tuple[Any, Any]]:
    """Beyond OTP, for a state function: the calls waiting at the head of its own mailbox.

    Takes out, in order, the ``$gen_call`` messages at the head of the calling machine's
    mailbox whose request ``accept`` is true, at most ``limit``, as ``(from_, request)``
    pairs; the run ends at the first other message, so nothing queued before a taken call is
    overtaken.  The caller handles them within the current event (a burst of like requests
    in one pass) and answers each with :func:`reply`.
    """
    blocked = False

    def call_at_head(m: Any) -> bool:
        nonlocal blocked
        if not blocked and type(m) is tuple and len(m) == 3 and m[0] == "$gen_call" and accept(m[2]):
            return True
        blocked = True  # the first other message ends the run: nothing behind it is taken
        return False

    taken: list[tuple[Any, Any]] = []
    while len(taken) < limit and not blocked:
        try:
            msg = process.receive(0, call_at_head)
        except TimeoutError:
            break
        taken.append((msg[1], msg[2]))
    return taken


def stop(server: Any, reason: Any = "normal", timeout: int | None = None) -> str:
    """Stop the machine (its ``terminate`` runs); ``"ok"``, or raises ``nodes.Exit("noproc")``."""
    process.check_timeout_ms("stop", timeout)  # before the stop request goes out, not after
    me = process.current()
    process.resolve_server(server)
    ref = process.monitor(server)
    try:
        process.send_as_me(node.route, server, ("$system", (me.pid, ref), ("terminate", reason)))
    except BaseException:  # not sent (a reason another node cannot be sent)
        process.demonitor(ref)
        raise
    try:
        msg = process.receive(timeout, lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN"
                              and m[1] == ref)
    except TimeoutError:
        process.demonitor(ref)
        raise Exit("timeout") from None
    down_reason = msg[4]
    if down_reason == reason:
        return "ok"
    raise Exit(down_reason)


def system_call(server: Any, request: Any, timeout: int | None = 5000) -> Any:
    return _call(server, "$system", request, timeout)

"""``rpc.call``: run a function on a node and bring back its result or its exception.

Every node runs a registered process ``rex`` (as Erlang does) once distribution
starts; a call sends it the function and its arguments (pickled, with
cloudpickle for functions defined in ``__main__`` or a shell), ``rex`` runs it in a
fresh process, watches it, and replies.  A call to the local node runs in a fresh local
process the same way, so ``rpc.call(nodes.node(), ...)`` behaves like a remote one: a
function whose process ends without returning or raising an ``Exception`` (killed, an exit
signal, ``SystemExit``) gives ``Exit(("badrpc", ("EXIT", reason)))`` at once, as in Erlang.

Between nodes the function with its arguments travel as pickled bytes inside the message,
and the outcome's values pickled apart beside a text (:func:`nodes.codec.apart`, as exit
reasons and ``gen_statem`` replies travel); the worker and the caller unpickle them: a
function the remote node cannot import (its module is not there) or a result or exception
class the caller cannot load then becomes an exception at the caller (a result's loading
error with a note, a :class:`RemoteError` with the exception's text, an exit reason
``("unloadable", text)``), instead of a message the transport cannot decode and drops (a
call that hangs).
"""

from __future__ import annotations

import traceback
from typing import Any

from . import codec, process
from . import this_node as node
from .codec import EncodeError
from .terms import CallReply, Exit, Pickled, Pid, Ref, make_ref

REX = "rex"


class RemoteError(Exception):
    """Raised for a remote exception whose class cannot be rebuilt here; carries its text."""


def call(node_name: str, fn: Any, *args: Any, timeout: int | None = None) -> Any:
    """``fn(*args)`` on ``node_name``.

    Raises fn's exception, or ``Exit(("badrpc", "nodedown"))`` / ``Exit(("badrpc", "timeout"))``.
    """
    if not isinstance(node_name, str):
        raise TypeError(f"rpc.call: node must be a node name str, got {node_name!r}")
    if not callable(fn):
        raise TypeError(f"rpc.call: expected a callable, got {fn!r}")
    process.check_timeout_ms("rpc.call", timeout)
    me = process.current()
    remote = not node.is_local_node(node_name)
    # an unpicklable fn or argument fails here, at the call site
    payload = codec.dumps((fn, args)) if remote else b""
    tag = make_ref()  # tags the reply; the monitor only tells us the other side is gone
    me.mailbox.activate_alias(tag)
    if remote:
        mref = process.monitor((REX, node_name))
        process.send_as_me(node.route, (REX, node_name), ("$rpc", me.pid, tag, payload))
    else:
        _, mref = process.spawn_monitor(_worker, me.pid, tag, fn, args)  # monitored before it runs
    try:
        msg = process.await_reply(me, tag, mref, timeout)
    except TimeoutError:
        raise Exit(("badrpc", "timeout")) from None
    me.mailbox.deactivate_alias(tag)
    process.demonitor(mref)
    if type(msg) is not CallReply:
        reason = msg[4]
        if reason in ("noconnection", "noproc") and remote:
            raise Exit(("badrpc", "nodedown"))
        raise Exit(("badrpc", ("EXIT", reason)))
    outcome = msg.value
    kind = outcome[0]
    if kind == "exit":  # the remote worker ended without an outcome
        raise Exit(("badrpc", ("EXIT", process.arrived_reason(outcome[1], node_name))))
    if kind == "ok":
        if not remote or type(outcome[1]) is not Pickled:  # (a local function may return one)
            return outcome[1]
        try:
            return codec.loads(outcome[1].data)
        except Exception as error:
            error.add_note(f"the result ({outcome[1].text}) of the call on {node_name} "
                           f"cannot be loaded on {node.name}")
            raise
    _, remote_exc, remote_tb = outcome
    if remote and type(remote_exc) is Pickled:
        try:
            remote_exc = codec.loads(remote_exc.data)
        except Exception:  # noqa: BLE001 - its class does not load here: the text must do
            remote_exc = remote_exc.text
    if isinstance(remote_exc, BaseException):
        remote_exc.add_note(f"remote traceback from {node_name}:\n{remote_tb}")
        raise remote_exc
    raise RemoteError(f"{remote_exc}\nremote traceback from {node_name}:\n{remote_tb}")


def _worker(caller: Pid, tag: Ref, fn: Any, args: tuple[Any, ...]) -> None:
    try:
        outcome: Any = ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the exception travels back to the caller
        outcome = ("raise", exc, traceback.format_exc())
    process.send_as_me(node.route, caller, CallReply(tag, outcome))


def _remote_worker(rex: Pid, payload: bytes) -> None:
    """A call from another node: unpickle here, and hand the outcome, its values pickled apart
    (:func:`nodes.codec.apart`), to ``rex``: a result or exception class the caller cannot load
    then fails one ``loads`` there instead of the whole frame, which the transport would drop."""
    try:
        fn, args = codec.loads(payload)
        outcome: Any = ("ok", codec.apart(fn(*args)))
    except Exception as exc:  # noqa: BLE001 - the exception travels back to the caller
        text = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
        try:
            travelling: Any = codec.apart(exc, text)
        except EncodeError:  # an exception that cannot be pickled still travels as its text
            travelling = text
        outcome = ("raise", travelling, traceback.format_exc())
    process.send_as_me(node.send, rex, (_OUTCOME, process.current().pid, outcome))


_OUTCOME = "$rpc_outcome"


def serve() -> None:
    """The body of ``rex``: run each request in a worker process of its own, and watch it.

    A worker that ends without an outcome (killed, an exit signal from a link, a
    ``BaseException`` such as ``SystemExit``) must not leave its caller waiting for the whole
    time-out, or for ever: ``rex`` monitors each worker and, on its DOWN, sends the caller
    ``("badrpc", ("EXIT", reason))`` as the local path's own monitor does.  The worker hands
    its outcome to ``rex``, which forwards it, rather than answering the caller itself: one
    sender keeps the two answers in order (a worker's message to ``rex`` comes before its
    DOWN), so a caller never takes a worker's exit for its outcome or the other way round.
    """
    me = process.current().pid
    running: dict[Pid, tuple[Pid, Ref]] = {}  # worker -> (caller, the caller's reply tag)
    while True:
        msg = process.receive()
        if type(msg) is not tuple:
            continue
        if len(msg) == 4 and msg[0] == "$rpc" and type(msg[3]) is bytes:
            _, caller, tag, payload = msg
            worker, _mref = process.spawn_monitor(_remote_worker, me, payload)
            running[worker] = (caller, tag)
        elif len(msg) == 3 and msg[0] == _OUTCOME and msg[1] in running:
            caller, tag = running.pop(msg[1])
            process.send_as_me(node.route, caller, CallReply(tag, msg[2]))
        elif len(msg) == 5 and msg[0] == "DOWN" and msg[3] in running:  # ended with no outcome
            caller, tag = running.pop(msg[3])
            reason = msg[4]
            try:
                outcome = ("exit", process.portable_reason(reason))
            except EncodeError:  # as a death notice says it (process._tell_death)
                outcome = ("exit", ("unpicklable", repr(reason)))
            process.send_as_me(node.route, caller, CallReply(tag, outcome))

"""``rpc.call``: run a function on a node and bring back its result or its exception.

Every node runs a registered process ``rex`` (as Erlang does) once distribution
starts; a call sends it the function and its arguments (pickled, with
cloudpickle for functions defined in ``__main__`` or a shell), ``rex`` runs it in a
fresh process and replies.  A call to the local node runs in a fresh local
process the same way, so ``rpc.call(nodes.node(), ...)`` behaves like a remote one.
"""

from __future__ import annotations

import traceback
from typing import Any

from . import process
from . import this_node as node
from .terms import CallReply, Exit, Pid, Ref, make_ref

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
    if timeout is not None and (not isinstance(timeout, int) or timeout < 0):
        raise TypeError(f"rpc.call: timeout must be a non-negative int of ms or None, got {timeout!r}")
    me = process.current()
    tag = make_ref()  # tags the reply; the monitor only tells us the other side is gone
    me.mailbox.activate_alias(tag)
    remote = not node.is_local_node(node_name)
    if remote:
        mref = process.monitor((REX, node_name))
        node.route((REX, node_name), ("$rpc", me.pid, tag, fn, args))
    else:
        mref = process.monitor(process.spawn(_worker, me.pid, tag, fn, args))

    def is_answer(m: Any) -> bool:
        if type(m) is CallReply:
            return m.ref == tag
        return type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == mref

    try:
        msg = process.receive(timeout, is_answer)
    except TimeoutError:
        me.mailbox.deactivate_alias(tag)
        process.demonitor(mref)
        raise Exit(("badrpc", "timeout")) from None
    me.mailbox.deactivate_alias(tag)
    process.demonitor(mref)
    if type(msg) is not CallReply:
        reason = msg[4]
        if reason in ("noconnection", "noproc") and remote:
            raise Exit(("badrpc", "nodedown"))
        raise Exit(("badrpc", ("EXIT", reason)))
    outcome = msg.value
    if outcome[0] == "ok":
        return outcome[1]
    _, exc, remote_tb = outcome
    if isinstance(exc, BaseException):
        exc.add_note(f"remote traceback from {node_name}:\n{remote_tb}")
        raise exc
    raise RemoteError(f"{exc}\nremote traceback from {node_name}:\n{remote_tb}")


def _worker(caller: Pid, tag: Ref, fn: Any, args: tuple[Any, ...]) -> None:
    try:
        outcome: Any = ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the exception travels back to the caller
        outcome = ("raise", exc, traceback.format_exc())
    node.route(caller, CallReply(tag, outcome))


def serve() -> None:
    """The body of ``rex``: run each request in a process of its own."""
    while True:
        msg = process.receive()
        if type(msg) is tuple and len(msg) == 5 and msg[0] == "$rpc":
            _, caller, tag, fn, args = msg
            process.spawn(_worker, caller, tag, fn, args)

"""How members talk: ``cast(server, msg)`` between members and ``reply(from_, reply)`` to callers,
and what the end of a call to a member means (:func:`call_catching_exit`).

This is the port of ``RaftedValue.Communication`` and its default
``RaftedValue.RemoteMessageGateway``. Every member-to-member message and
every reply to a client goes through ``config.communication_module``, so a
test can swap in a module that drops messages (a netsplit) or delays them.
A communication module is any class, module or object with these two
functions, called without an instance.
"""

from __future__ import annotations

from typing import Any

import nodes

__all__ = [
    "Communication",
    "RemoteMessageGateway",
    "check_communication_module",
    "NOT_THERE",
    "LOST",
    "exit_reason_head",
    "call_catching_exit",
]

# Exit reasons of a call to a member: not there at all (the request was certainly not handled),
# or lost on the way or while handling it (the outcome is unknown, as after a time-out).
NOT_THERE = frozenset({"noproc", "normal"})
LOST = frozenset({"shutdown", "killed", "noconnection", "nodedown"})


class Communication:
    """Optional base class documenting the interface (both functions must never block)."""

    @staticmethod
    def cast(server: Any, msg: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def reply(from_: Any, reply: Any) -> None:
        raise NotImplementedError


class RemoteMessageGateway(Communication):
    """Default communication module.

    The Erlang original sends with ``noconnect`` and falls back to a helper
    process so that a member never blocks on an unreachable node; ``nodes``
    gives that guarantee itself (a send never raises and never waits for a
    connection), so this is a plain cast / reply.
    """

    @staticmethod
    def cast(server: Any, msg: Any) -> None:
        nodes.gen_statem.cast(server, msg)

    @staticmethod
    def reply(from_: Any, reply: Any) -> None:
        nodes.gen_statem.reply(from_, reply)


def check_communication_module(module: Any) -> None:
    """Raise TypeError unless ``module`` has callable ``cast`` and ``reply``."""
    missing = [name for name in ("cast", "reply") if not callable(getattr(module, name, None))]
    if missing:
        raise TypeError(
            f"communication_module must provide callable cast(server, msg) and reply(from_, reply); "
            f"{module!r} lacks {', '.join(missing)}"
        )


def exit_reason_head(reason: Any) -> Any:
    """What names an exit reason: ``"nodedown"`` for ``("nodedown", node)``."""
    return reason[0] if type(reason) is tuple and reason else reason


# The original's catch_exit turns exactly :noproc and :normal into {:error, :noproc}: the
# member was not there, so the request was certainly not handled.  A server that died (was
# killed, crashed, say on a failing disk) or whose node was lost while the request was on its
# way or being handled may have logged it, and a later leader may commit it: like a time-out,
# the outcome is unknown (the original exits there; returning "timeout" keeps these functions
# from raising for a dead member).  Only calling a member from its own process still raises.
def call_catching_exit(server: Any, request: Any, timeout: int | None, tag: nodes.Ref | None = None) -> Any:
    """``gen_statem.call`` to a member, its exits as the API's errors: ``("error", "noproc")``
    when the member is not there, ``("error", "timeout")`` when the outcome is unknown.
    ``tag``: a fresh ref the request carries, used as the call's own (``gen_statem.call_tagged``)."""
    me = nodes.self()
    try:
        if tag is not None:
            return nodes.gen_statem.call_tagged(server, request, tag, timeout)
        return nodes.gen_statem.call(server, request, timeout=timeout)
    except nodes.Exit as e:
        if not nodes.is_alive(me):
            raise  # the caller's own death (a plain thread's is told by this Exit): not the call's
        head = exit_reason_head(e.reason)
        if head in NOT_THERE:
            return ("error", "noproc")
        if head == "calling_self":
            raise
        return ("error", "timeout")  # timed out, or the member died meanwhile: outcome unknown

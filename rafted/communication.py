"""How members talk: ``cast(server, msg)`` between members and ``reply(from_, reply)`` to callers.

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

__all__ = ["Communication", "RemoteMessageGateway", "check_communication_module"]


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

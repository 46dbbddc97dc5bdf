"""Helpers of the regression tests (importable on the nodes: they travel by reference)."""

from __future__ import annotations

from typing import Any

import nodes


class DropWriteReplies:
    """A communication module that loses the leader's replies to KV writes (``("ok", "ok")``).

    Everything else (member messages, status, reads, joins) goes through.  A write then
    commits and is applied, but its caller never hears of it: the leader seems to die
    between committing and replying.
    """

    @staticmethod
    def cast(server: Any, msg: Any) -> None:
        nodes.gen_statem.cast(server, msg)

    @staticmethod
    def reply(from_: Any, reply: Any) -> None:
        if reply == ("ok", "ok"):
            return
        nodes.gen_statem.reply(from_, reply)

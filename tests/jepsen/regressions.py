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


def _mutate_lease_never_expires() -> str:
    """A deliberately broken leader lease: the leader always answers reads alone."""
    from rafted import leadership

    leadership.lease_expired = lambda *args, **kwargs: False
    return "lease never expires"


def _mutate_forget_command_ids() -> str:
    """Deliberately broken de-duplication: a retried command id is applied again."""
    from rafted.command_results import CommandResults

    CommandResults.fetch = lambda self, cmd_id: (False, None)  # type: ignore[method-assign]
    return "command ids forgotten"


#: harness self-tests: ``--mutate NAME`` breaks every node this way; the campaign must fail
MUTATIONS = {"lease": _mutate_lease_never_expires, "dedup": _mutate_forget_command_ids}

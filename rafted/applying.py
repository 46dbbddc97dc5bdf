"""Applying committed entries to a member's value: commands, queries, membership changes.

The leader (given a :class:`~rafted.state.Ctx`) answers the clients, runs the leader hook and
tells a removed follower; followers (no ``Ctx``) change the value quietly; recovery from files
(:func:`replay_entries`) runs the hook for commands and queries but answers nobody. A data
module that raises fails only its own request, decided alike on every member. After applying,
entries no longer needed are dropped from the log (:func:`truncate_logs`).
"""

from __future__ import annotations

import logging
from typing import Any

import nodes
from rafted import _codec
from rafted import leadership as Leadership
from rafted import logs as Logs
from rafted import members as Members
from rafted._codec import ALWAYS_SERIALIZABLE
from rafted._values import replace as _replace_value
from rafted.command_results import CommandResults
from rafted.log_entry import (
    ADD_FOLLOWER,
    CHANGE_CONFIG,
    COMMAND,
    LEADER_ELECTED,
    QUERY,
    REMOVE_FOLLOWER,
    LogEntry,
)
from rafted.state import Ctx, State, replace_changed

__all__ = [
    "run_command",
    "query",
    "run_query",
    "leader_apply_committed_log_entries",
    "nonleader_apply_committed_log_entries",
    "apply_entries",
    "replay_entries",
    "RESTORING",
    "truncate_logs",
]

log = logging.getLogger("rafted")


def user_error(what: str, exc: Exception) -> tuple:
    return ("error", (what, f"{type(exc).__name__}: {exc}"))


def run_command(
    ctx: Ctx | None, s: State, data: Any, results: CommandResults, payload: tuple
) -> tuple[Any, CommandResults]:
    """Apply one committed command to (data, results); ``ctx`` is given in the leader only.

    A data module that raises (or returns no ``(ret, new_data)`` pair, or a ``ret`` that
    cannot be serialized) leaves the value unchanged and fails just this command with
    ``("error", ("command_failed", text))``: data modules are deterministic, so every member
    takes the same decision, and a bad command costs its caller an error rather than every
    member its life.
    """
    client, arg, cmd_id = payload
    found, result = results.fetch(cmd_id)
    if found:
        # already applied (a retried id): answer with the cached result, never apply twice
        if ctx is not None:
            ctx.reply(s, client, ("ok", result))
        return data, results
    try:
        ret = s.config.data_module.command(data, arg)
        if type(ret) is not tuple or len(ret) != 2:
            raise TypeError(f"command(data, arg) must return a (ret, new_data) tuple, got {ret!r}")
        if type(ret[0]) not in ALWAYS_SERIALIZABLE:
            # a result travels to clients on other nodes and lives on in snapshots (the cached
            # results): one that cannot is the data module's error, decided alike on every member
            why = _codec.cannot_serialize(ret[0])
            if why is not None:
                raise TypeError(f"command(data, arg) returned a result that cannot be serialized: {why}")
    except Exception as exc:
        if ctx is not None:
            log.error("%r.command(data, %r) failed", s.config.data_module, arg, exc_info=True)
            ctx.reply(s, client, user_error("command_failed", exc))
        return data, results
    result, new_data = ret
    results.put_mut(cmd_id, result, s.config.max_retained_command_results)
    if ctx is not None:
        ctx.reply(s, client, ("ok", result))
        ctx.hook(s, "on_command_committed", data, arg, result, new_data)
    return new_data, results


def query(s: State, arg: Any, client: Any = None) -> tuple[bool, Any]:
    """``(True, ret)``, or ``(False, error reply)`` when the data module's query raises, or
    returns a result that cannot travel to ``client`` (the ``from_`` of a caller on another
    node): that caller would otherwise wait out its whole time-out, as a command's caller does
    not (its result is checked for every member alike)."""
    try:
        ret = s.config.data_module.query(s.data, arg)
        if type(ret) not in ALWAYS_SERIALIZABLE and _on_another_node(client):
            why = _codec.cannot_serialize(ret)
            if why is not None:
                raise TypeError(f"query(data, arg) returned a result that cannot be serialized: {why}")
        return True, ret
    except Exception as exc:
        log.error("%r.query(data, %r) failed", s.config.data_module, arg, exc_info=True)
        return False, user_error("query_failed", exc)


def _on_another_node(client: Any) -> bool:
    return (type(client) is tuple and len(client) == 2 and type(client[0]) is nodes.Pid
            and client[0].node != nodes.node())


def run_query(ctx: Ctx, s: State, client: Any, arg: Any) -> None:
    ok, ret = query(s, arg, client)
    if not ok:
        ctx.reply(s, client, ret)
        return
    ctx.reply(s, client, ("ok", ret))
    ctx.hook(s, "on_query_answered", s.data, arg, ret)


def leader_apply_committed_log_entries(ctx: Ctx, s: State, entries: list[LogEntry]) -> State:
    # `w` is a fresh copy nobody else has seen: filling it in place costs one copy per batch
    w = _replace_value(s)
    apply_entries(ctx, w, entries)
    return truncate_logs(w)


def nonleader_apply_committed_log_entries(s: State, entries: list[LogEntry]) -> State:
    w = _replace_value(s)  # private copy, filled in place
    apply_entries(None, w, entries)
    return truncate_logs(w)


def apply_entries(ctx: Ctx | None, w: State, entries: list[LogEntry]) -> None:
    """Apply committed entries to the private copy ``w``.

    With ``ctx`` (the leader) clients get their replies, hooks run and a removed follower is
    told; without it (a follower) the value and the members change quietly.
    """
    results: CommandResults | None = None
    for e in entries:
        kind = e[2]
        if kind == COMMAND:
            if results is None:
                results = w.command_results.copy()
            w.data, results = run_command(ctx, w, w.data, results, e[3])
        elif kind == CHANGE_CONFIG:
            if ctx is not None and w.leadership is not None and e[3].lease_ms > w.config.lease_ms:
                w.leadership = Leadership.lease_restarted(w.leadership, ctx.now, e[1])
            w.config = e[3]
        elif kind == ADD_FOLLOWER or kind == REMOVE_FOLLOWER:
            if ctx is not None:
                membership_change_applied(ctx, w, kind, e[3])
            w.members = Members.membership_change_committed(w.members, e[1])
            if ctx is not None and kind == REMOVE_FOLLOWER and e[3] not in w.members.all:
                w.logs = Logs.forget_follower(w.logs, e[3])
        elif ctx is None:
            continue  # queries and elections concern only the leader that handles them
        elif kind == QUERY:
            client, arg = e[3]
            run_query(ctx, w, client, arg)
        elif kind == LEADER_ELECTED:
            payload = e[3]
            elected = payload[0] if isinstance(payload, list) and payload else payload
            if elected == ctx.me:
                ctx.hook(w, "on_elected", w.data)
        # RESTORE_FROM_FILES: nothing to do
    if results is not None:
        w.command_results = results


class _Replay(Ctx):
    """The context of a replay from files: the leader hook runs at once, nobody is answered
    (the callers belonged to the member's previous life and stopped waiting with it)."""

    __slots__ = ()

    def reply(self, s: State, from_: Any, reply: Any) -> None:
        pass

    def hook(self, s: State, name: str, *args: Any) -> None:
        Ctx.hook(self, s, name, *args)
        self.run()  # now, with this entry's values: holding every one until the end costs memory
        self.effects.clear()


RESTORING = "rafted_value_restoring"  # the original's process-dictionary key


def replay_entries(me: Any, now: int, w: State, entries: list[LogEntry]) -> None:
    """Recovery from files, as the original: every command and query entry runs the leader
    hook (``on_command_committed``, ``on_query_answered``) while the member's process
    dictionary holds ``"rafted_value_restoring": True`` (``nodes.get(RESTORING, False)``
    tells a hook it is a replay); config changes apply; membership and election entries
    are passed over (the membership is a new one)."""
    ctx = _Replay(me, now)
    results = w.command_results.copy()
    nodes.put(RESTORING, True)
    try:
        for e in entries:
            kind = e[2]
            if kind == COMMAND:
                w.data, results = run_command(ctx, w, w.data, results, e[3])
            elif kind == QUERY:
                client, arg = e[3]
                run_query(ctx, w, client, arg)
            elif kind == CHANGE_CONFIG:
                w.config = e[3]
    finally:
        nodes.erase(RESTORING)
    w.command_results = results


def membership_change_applied(ctx: Ctx, w: State, kind: str, pid: Any) -> None:
    if kind == ADD_FOLLOWER:
        ctx.hook(w, "on_follower_added", w.data, pid)
    else:
        # a cast rather than a stop: it stops `pid` only if it really is a follower
        ctx.cast(w, pid, "remove_follower_completed")
        ctx.hook(w, "on_follower_removed", w.data, pid)


def truncate_logs(s: State) -> State:
    if s.persistence is None:
        upto = s.logs.i_committed  # in memory, committed entries can go as soon as they are applied
    else:
        meta = s.persistence.latest_snapshot_metadata
        upto = 0 if meta is None else meta.last_committed_index  # only what a snapshot on disk covers
    return replace_changed(s, logs=Logs.truncate_old_logs(s.logs, upto))

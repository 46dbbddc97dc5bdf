"""A member's state and one event's context: what :mod:`rafted.server` hands its helpers.

:class:`State` is the original's ``RaftedValue.Server.State`` plus the shell's bookkeeping (the
armed timer, a pending flush, queued answers, the watch on the leader). :class:`Ctx` is one
event: the member's pid, the time read once for the whole event, and the effects (casts,
replies, hook calls) that the handlers decide and the shell runs after the new state is
computed, so that the Raft code itself sends nothing.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import nodes
from rafted import election as Election
from rafted import leadership as Leadership
from rafted import logs as Logs
from rafted import members as Members
from rafted._values import replace as _replace_value
from rafted.command_results import CommandResults
from rafted.config import Config
from rafted.leader_hook import INHERITED_NO_OPS

__all__ = [
    "TimerHandle",
    "State",
    "LeaderWatch",
    "Ctx",
    "now_ms",
    "call_hook",
    "send_reply",
    "replace_changed",
]

log = logging.getLogger("rafted")


@dataclass(slots=True)
class TimerHandle:
    """The member's one armed timer: ``token`` identifies its tick, ``fire_at`` its deadline."""

    token: int
    ref: Any
    fire_at: int


@dataclass(slots=True)
class State:
    """A member's state: the original's fields, then the shell's own bookkeeping.

    Treated as immutable: handlers build new values, so a state handed out
    by ``nodes.sys.get_state`` never changes under its reader.
    """

    members: Members.Members
    current_term: int
    leadership: Leadership.Leadership | None
    election: Election.Election
    logs: Logs.Logs
    data: Any
    command_results: CommandResults
    config: Config
    persistence: Any = None
    # shell bookkeeping
    timer: TimerHandle | None = None
    timer_seq: int = 0
    flush_pending: bool = False
    pending_responses: dict = field(default_factory=dict)
    leader_watch: LeaderWatch | None = None


@dataclass(slots=True)
class LeaderWatch:
    """A follower's monitor on its leader (see ``rafted.server._watch_leader``); ``ref`` is None
    once the DOWN came, so that a dead leader is not monitored again while it is still known."""

    leader: Any
    ref: Any


def call_hook(module: Any, name: str, args: tuple) -> None:
    """Call the leader hook ``module.name(*args)``."""
    # a failing hook is logged: it must not take the leader (and with it the group's progress) down
    try:
        getattr(module, name)(*args)
    except Exception:
        log.exception("leader hook %r.%s failed", module, name)


def now_ms() -> int:
    """The members' clock: monotonic milliseconds."""
    return int(time.monotonic() * 1000)


class Ctx:
    """One event's context: who we are, when it is, and the effects to run afterwards.

    ``rng`` draws the randomized election time-outs: None (a live member) uses the ``random``
    module; a simulation passes its own seeded ``random.Random`` so that a run replays exactly.
    """

    __slots__ = ("me", "now", "effects", "flush", "rng", "apply_after")

    def __init__(self, me: Any, now: int, rng: random.Random | None = None) -> None:
        self.me = me
        self.now = now
        self.effects: list[tuple[Any, tuple]] = []
        self.flush = False  # a flush was asked for: see rafted.server._run
        self.rng = rng
        # committed commands an in-memory follower applies once the effects have run (after
        # its answer went out): see rafted.server.apply_after_effects
        self.apply_after: list[Any] | None = None

    def election_timeout(self, config: Config) -> int:
        """A fresh randomized election time-out (ms) for ``config``."""
        return Election.random_timeout(config.election_timeout, self.rng)

    def cast(self, s: State, dest: Any, msg: Any) -> None:
        self.effects.append((s.config.communication_module.cast, (dest, msg)))

    def reply(self, s: State, from_: Any, reply: Any) -> None:
        self.effects.append((send_reply, (s.config.communication_module, from_, reply)))

    def hook(self, s: State, name: str, *args: Any) -> None:
        module = s.config.leader_hook_module
        if getattr(module, name, None) is INHERITED_NO_OPS[name]:
            return  # LeaderHook's own do-nothing (NoOp, the default): no call per command
        self.effects.append((call_hook, (module, name, args)))

    def run(self) -> None:
        for fn, args in self.effects:
            fn(*args)


def send_reply(module: Any, from_: Any, reply: Any) -> None:
    """Answer a client's call through the communication module."""
    try:
        module.reply(from_, reply)
    except nodes.EncodeError as e:
        # An answer for a client on another node that cannot travel (results are checked to
        # serialize, but one may exceed the frame limit): that client times out, the member goes
        # on. Messages between members are not caught: one that cannot be sent would be retried
        # for ever, so the member fails loudly instead.
        log.error("the reply to %r could not be serialized, dropped: %s", from_, e)


def replace_changed(s: State, **changes: Any) -> State:
    """``s`` with ``changes``; ``s`` itself when every one is already there."""
    # skip the copy when nothing changed (the common case for idle heartbeats)
    for k, v in changes.items():
        if getattr(s, k) is not v:
            return _replace_value(s, **changes)
    return s

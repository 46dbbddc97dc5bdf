"""How a member's first state comes about: a new group, a group recovered from files, a joiner.

``init`` of :mod:`rafted.server` calls these. A new group's member is its lonely leader
(:func:`initialize_leader_state`), or, on a persistence directory with files, the leader of
a group recovered from them (:func:`recover_state_from_snapshot_and_log`). A joiner asks the
members it knows to add it (:func:`call_add_server`, following ``not_leader`` hints and
waiting out a membership change under way) and starts from the snapshot the leader answers
with (:func:`initialize_follower_state`).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import nodes
from rafted import applying as Applying
from rafted import election as Election
from rafted import leadership as Leadership
from rafted import logs as Logs
from rafted import members as Members
from rafted._values import replace as _replace_value
from rafted.command_results import CommandResults
from rafted.communication import LOST, NOT_THERE, exit_reason_head
from rafted.config import Config
from rafted.log_entry import LEADER_ELECTED
from rafted.persistence import (
    DEFAULT_LOG_FILE_MIN_SIZE,
    Persistence,
    Recovered,
    read_latest_snapshot_and_logs_if_available,
)
from rafted.rpc import InstallSnapshot, InstallSnapshotCompressed
from rafted.snapshot import Snapshot
from rafted.snapshot import decode as decode_snapshot
from rafted.state import Ctx, State, call_hook, now_ms

__all__ = [
    "JOIN_TIMEOUT",
    "initialize_leader_state",
    "recover_state_from_snapshot_and_log",
    "initialize_follower_state",
    "received_snapshot",
    "call_add_server",
]

# How long a joining member keeps trying to be added (ms), and its first back-off.
JOIN_TIMEOUT = 5000
_JOIN_BACKOFF_MS = 10
_DEAD_REASONS = NOT_THERE | LOST


def _persistence_options(options: dict | None) -> tuple[str | None, float, int]:
    """``(persistence_dir, log_file_expansion_factor, log_file_min_size)`` of start_link's options."""
    options = options or {}
    return (options.get("persistence_dir"), options.get("log_file_expansion_factor", 10),
            options.get("log_file_min_size", DEFAULT_LOG_FILE_MIN_SIZE))


def initialize_leader_state(ctx: Ctx, config: Config, options: dict | None = None) -> State:
    """The lonely leader of a new group; with a ``persistence_dir`` holding files, the group
    recovered from them instead (:func:`recover_state_from_snapshot_and_log`)."""
    me = ctx.me
    dir, factor, min_size = _persistence_options(options)
    if dir is not None:
        recovered = read_latest_snapshot_and_logs_if_available(dir)
        if recovered is not None:
            return recover_state_from_snapshot_and_log(ctx, dir, factor, recovered, min_size)
    members = Members.new_for_lonely_leader(me)
    first_entry = (0, 1, LEADER_ELECTED, [me])
    data = config.data_module.new()
    persistence = None
    if dir is not None:
        snapshot = Snapshot(members, 0, first_entry, config, data, CommandResults())
        persistence = Persistence.new_with_initial_snapshot(dir, factor, snapshot, min_size)
    return State(
        members=members,
        current_term=0,
        leadership=Leadership.new_for_leader(ctx.now, config),
        election=Election.new_for_leader(me),
        logs=Logs.new_for_lonely_leader(first_entry),
        data=data,
        command_results=CommandResults(),
        config=config,
        persistence=persistence,
    )


def recover_state_from_snapshot_and_log(
    ctx: Ctx, dir: str, factor: float, r: Recovered, min_size: int = 0
) -> State:
    """A new 1-member group from a persistence dir: the config passed in is ignored in favour of
    the restored one, the membership on disk too (``me`` is the sole member); every entry found
    is committed, even those that were not before, after a ``restore_from_files`` entry."""
    me = ctx.me
    snapshot = r.snapshot
    # terms never decrease along a log: the restore entry gets the newest term found
    term = max([snapshot.term, *(e[0] for e in r.entries)])
    logs = Logs.new_for_lonely_leader(snapshot.last_committed_entry, r.entries)
    logs, entry_restore = Logs.add_entry_on_restored_from_files(logs, term, me)
    persistence = Persistence.new_with_disk_snapshot(dir, factor, r.metadata, entry_restore, min_size)
    logs, to_apply = Logs.commit_to_latest(logs)
    w = State(
        members=Members.new_for_lonely_leader(me),
        current_term=term,
        leadership=None,  # made below, with the config the applied entries leave
        election=Election.new_for_leader(me),
        logs=logs,
        data=snapshot.data,
        command_results=snapshot.command_results,
        config=snapshot.config,
        persistence=persistence,
    )
    # commands and queries run the leader hook, as the original's replay does; no replies
    Applying.replay_entries(me, ctx.now, w, to_apply)
    w.leadership = Leadership.new_for_leader(ctx.now, w.config)
    call_hook(w.config.leader_hook_module, "on_restored_from_files", (w.data,))
    return Applying.truncate_logs(w)


def initialize_follower_state(ctx: Ctx, received: tuple | Snapshot, options: dict | None = None) -> State:
    """A joiner's state from what the leader sent: a Snapshot, or ``(snapshot, file bytes or
    None, sender's term, leader pid)`` (see :func:`received_snapshot`)."""
    if isinstance(received, Snapshot):
        received = (received, None, received.term, received.members.leader)
    snapshot, data, term, leader = received
    config = snapshot.config
    members = snapshot.members
    if leader is not None and members.leader != leader:
        members = _replace_value(members, leader=leader, pending_leader_change=None)
    persistence = None
    dir, factor, min_size = _persistence_options(options)
    if dir is not None:
        persistence = Persistence.new_with_snapshot_sent_from_leader(dir, factor, snapshot, data, min_size)
    return State(
        members=members,
        current_term=max(term, snapshot.term),
        leadership=None,
        election=Election.new_for_follower(ctx.now, ctx.election_timeout(config)),
        logs=Logs.new_for_new_follower(snapshot.last_committed_entry),
        data=snapshot.data,
        command_results=snapshot.command_results,
        config=config,
        persistence=persistence,
    )


def received_snapshot(m: Any) -> tuple | None:
    """``(snapshot, file bytes or None, sender's term, leader pid)`` of a snapshot message."""
    if isinstance(m, InstallSnapshot):
        snap = Snapshot.from_install_snapshot(m)
        return (snap, None, m.term, snap.members.leader)
    if isinstance(m, InstallSnapshotCompressed):
        snap = decode_snapshot(m.bin)
        term = snap.term if m.term is None else m.term
        leader = snap.members.leader if m.leader_pid is None else m.leader_pid
        return (snap, m.bin, term, leader)
    return None


def call_add_server(known_members: list, me: Any, timeout_ms: int) -> tuple:
    """Ask the known members, in turn, to add ``me``: ``("ok", received)`` (see
    :func:`received_snapshot`) or ``("error", reason)``.

    Follows ``not_leader`` hints, skips dead or unresponsive members and,
    while a leader answers that a membership change is under way, waits and
    asks it again until ``timeout_ms`` has passed.
    """
    deadline = now_ms() + timeout_ms
    backoff = _JOIN_BACKOFF_MS
    last_error: Any = "no_leader_found"
    while True:
        anyone_alive = False
        queue = deque(known_members)
        hops = 0
        while queue:
            member = queue.popleft()
            remaining = deadline - now_ms()
            if remaining <= 0:
                return ("error", last_error)
            try:
                r = nodes.gen_statem.call(member, ("add_follower", me), timeout=min(remaining, 5000))
            except nodes.Exit as e:
                if exit_reason_head(e.reason) in _DEAD_REASONS or e.reason == "timeout":
                    continue
                raise
            if type(r) is tuple and len(r) == 2 and r[0] == "ok":
                received = received_snapshot(r[1])
                if received is not None:
                    return ("ok", received)
                return ("error", ("unexpected_reply", r))
            err = r[1] if type(r) is tuple and len(r) == 2 and r[0] == "error" else ("unexpected_reply", r)
            if type(err) is tuple and len(err) == 2 and err[0] == "not_leader":
                anyone_alive = True
                leader = err[1]
                if leader is not None and leader != member and hops < 2 * len(known_members) + 2:
                    hops += 1
                    queue = deque([leader, *(m for m in queue if m != leader)])
                continue
            if err in ("uncommitted_membership_change", "pending_leader_change"):
                # the leader is busy with another change (or has not committed in its term yet): wait
                anyone_alive = True
                last_error = err
                time.sleep(min(backoff, max(0, deadline - now_ms())) / 1000)
                backoff = min(backoff * 2, 200)
                queue.appendleft(member)
                continue
            return ("error", err)
        if not anyone_alive:
            return ("error", last_error)
        # members are there but none is leader right now (an election): try again shortly
        if deadline - now_ms() <= 0:
            return ("error", last_error)
        time.sleep(min(backoff, max(0, deadline - now_ms())) / 1000)
        backoff = min(backoff * 2, 200)

"""A consensus group member: the ``nodes.gen_statem`` callbacks (``RaftedValue.Server``).

State functions ``leader``, ``candidate`` and ``follower`` turn events into
calls on the pure core (:mod:`rafted.logs`, :mod:`rafted.members`,
:mod:`rafted.election`, :mod:`rafted.leadership`,
:mod:`rafted.command_results`) and carry out what they decide. Each event
runs with a :class:`rafted.state.Ctx`: the member's pid, the time (read once), and a
list of effects (casts, replies, hooks) executed after the handler has
computed the new state.

Events:

- casts (member-to-member, all with a term): the classes of :mod:`rafted.rpc`;
  ``"remove_follower_completed"``. The same objects arriving as plain
  messages (``"info"``) are handled alike, so a test's communication module
  may deliver them with ``nodes.send`` / ``nodes.send_after``.
- calls: ``("command", arg, cmd_id)``, ``("query", arg)``,
  ``("change_config", config)``, ``("add_follower", pid)``,
  ``("remove_follower", pid)``, ``("replace_leader", pid_or_None)`` (leader
  only); ``("query_non_leader", arg)``, ``("force_remove_member", pid)``,
  ``"status"`` (any state).
- internal messages: ``(TICK, token)`` from the member's one timer, and
  ``FLUSH``, which the member sends itself.

Timers: the core keeps deadlines (election deadline; heartbeat and quorum
deadlines of a leader), the shell arms a single ``nodes.send_after`` for the
nearest one and re-arms lazily, so a follower does not cancel and re-arm a
timer on every heartbeat.

Batching: a leader appends each client request to its log at once but sends
AppendEntries on ``FLUSH``, a message it sends itself on the first request
of a batch: it arrives after every request already queued, so a burst goes
out as one request per follower. Followers likewise answer once per batch
of AppendEntries (the answers are merged). When nothing else is queued at
the end of the event that asked for it, the flush runs at once in the same
turn instead (what the FLUSH message would do next anyway, minus a trip
through the mailbox). A follower in memory applies the commands an
AppendEntries commits only after that flush, once its answer is out
(:func:`apply_after_effects`): the leader waits for the answer, nobody for
the follower's copy of the value.

Persistence (``state.persistence``, :mod:`rafted.persistence`): entries are
written as they are appended and synced once per batch at ``FLUSH`` (a
follower before it answers; a leader right after sending the batch, before
it handles any answer, so before it counts its own copy). A persisting
leader sends its latest snapshot file's bytes (``InstallSnapshotCompressed``
with its term and pid); a persisting follower writes a snapshot it installs
before acknowledging it. Creating a group on a directory with files
recovers from them (:func:`rafted.startup.recover_state_from_snapshot_and_log`).

Beyond the original (see the README / reference):

- membership changes are refused with ``"uncommitted_membership_change"``
  until an entry of the leader's own term has committed (the single-server
  membership change bug, Ongaro on raft-dev, 2015); the same condition
  gates lease-based reads, because until then a new leader may not have
  applied everything committed before it;
- a member that steps down within its term keeps its vote for that term;
- a follower truncates its log after a conflicting entry and acknowledges
  (and commits) only what it verified against the leader's log;
- a data module that raises fails that one request (``("error",
  ("command_failed" | "query_failed", text))``, the value unchanged on every
  member) and a leader hook that raises is logged, instead of crashing
  every member that applies the command;
- a follower monitors its leader and, when it exits or its node goes down,
  starts an election as soon as the other members will grant votes instead
  of at its election time-out (:func:`_watch_leader`, :func:`_on_leader_down`).
"""

from __future__ import annotations

import logging
from typing import Any

import nodes
from rafted import _codec, dir_lock
from rafted import applying as Applying
from rafted import election as Election
from rafted import leadership as Leadership
from rafted import logs as Logs
from rafted import members as Members
from rafted import startup as Startup
from rafted._codec import ALWAYS_SERIALIZABLE
from rafted._values import replace as _replace_value
from rafted.config import Config
from rafted.log_entry import (
    CHANGE_CONFIG,
    COMMAND,
    QUERY,
    LogEntry,
)
from rafted.persistence import (
    SNAPSHOT_CREATED,
    PersistenceError,
    UnpersistableEntry,
)
from rafted.rpc import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotCompressed,
    RequestVoteRequest,
    RequestVoteResponse,
    TimeoutNow,
)
from rafted.snapshot import Snapshot
from rafted.snapshot import decode as decode_snapshot
from rafted.state import Ctx, LeaderWatch, State, TimerHandle, now_ms, replace_changed

__all__ = ["State", "init", "leader", "candidate", "follower", "terminate", "TICK", "FLUSH"]

log = logging.getLogger("rafted")

TICK = "$rafted_tick"
FLUSH = ("$rafted_flush",)


#
# initialization
#
def init(args: tuple) -> tuple:
    group_info, options = args
    me = nodes.self()
    ctx = Ctx(me, now_ms())
    dir = options.get("persistence_dir")
    started = False
    try:
        if dir is not None:
            dir_lock.acquire(dir, me)  # before reading it, and before a joiner bothers the leader
        if group_info[0] == "create_new_consensus_group":
            s = Startup.initialize_leader_state(ctx, group_info[1], options)
            name = "leader"
        else:
            join_timeout = options.get("join_timeout", Startup.JOIN_TIMEOUT)
            result = Startup.call_add_server(list(group_info[1]), me, join_timeout)
            if result[0] == "error":
                return ("stop", result[1])
            s = Startup.initialize_follower_state(ctx, result[1], options)
            name = "follower"
        started = True
    except (PersistenceError, OSError) as e:
        # damaged files, an unusable directory or one in use: refuse to start rather than lose data
        log.error("rafted member cannot start from %r: %s", dir, e)
        return ("stop", ("persistence_error", e))
    finally:
        if not started:
            _release_dir(dir, me)  # a start that failed, however, lets go of the directory at once
    s = _ensure_timer(ctx, name, _watch_leader(ctx, name, s))
    if name == "leader":
        _hold_one_cpu(True)
    ctx.run()
    if ctx.flush:
        nodes.send(me, FLUSH)
    return ("ok", name, s)


def _hold_one_cpu(leading: bool) -> None:
    # The leader's node does most of a group's work: while leading, its threads share one CPU
    # (see nodes.hold_one_cpu), which roughly halved its CPU time per command on a 2-core VM.
    nodes.hold_one_cpu(leading)


#
# gen_statem entry points
#
def leader(event_type: Any, event_content: Any, data: State) -> tuple:
    return _run("leader", event_type, event_content, data)


def candidate(event_type: Any, event_content: Any, data: State) -> tuple:
    return _run("candidate", event_type, event_content, data)


def follower(event_type: Any, event_content: Any, data: State) -> tuple:
    return _run("follower", event_type, event_content, data)


def terminate(reason: Any, state_name: Any, data: Any) -> None:
    p = getattr(data, "persistence", None)
    if p is not None:
        try:
            p.close()  # sync and close the log file, let a running snapshot writer finish
        except OSError:
            log.exception("closing the persistence of %r failed", nodes.self())
        _release_dir(p.dir, nodes.self())
    return None


def _release_dir(dir: str | None, me: nodes.Pid) -> None:
    if dir is not None:
        dir_lock.release(dir, me)


def _run(state_name: str, event_type: Any, msg: Any, s: State) -> tuple:
    ctx = Ctx(nodes.self(), now_ms())
    result = _dispatch(ctx, state_name, event_type, msg, s)
    result = _finish(ctx, state_name, result, s)
    ctx.run()
    if ctx.flush:
        if len(result) == 2 and result[0] == "keep_state" and msg is not FLUSH and _mailbox_empty(ctx.me):
            # nothing is waiting: FLUSH would be the very next event, so handle it now (a
            # follower's answer goes out there, before it applies what the answer commits)
            result = _run(state_name, "info", FLUSH, result[1])
        else:
            nodes.send(ctx.me, FLUSH)
    if ctx.apply_after is not None:
        result = apply_after_effects(ctx, result)
    return result


def _mailbox_empty(me: Any) -> bool:
    info = nodes.process_info(me, "message_queue_len")
    return info is not None and info[1] == 0


def _dispatch(ctx: Ctx, state_name: str, event_type: Any, msg: Any, s: State) -> tuple:
    if event_type == "info":
        if type(msg) is tuple and len(msg) == 2 and msg[0] == TICK:
            return _on_tick(ctx, state_name, msg[1], s)
        if msg == FLUSH:
            return _on_flush(ctx, state_name, s)
        if type(msg) is tuple and len(msg) == 5 and s.persistence is not None:
            p = s.persistence
            if msg[0] == SNAPSHOT_CREATED:
                return ("keep_state", _replace_value(s, persistence=p.snapshot_created(*msg[1:])))
            if msg[0] == "DOWN" and p.snapshot_writer is not None and msg[1] == p.snapshot_writer[1]:
                return ("keep_state", _replace_value(s, persistence=p.snapshot_writer_down(msg[1], msg[4])))
        if type(msg) is tuple and len(msg) == 5 and msg[0] == "DOWN":
            w = s.leader_watch
            if w is not None and msg[1] == w.ref:
                return _on_leader_down(ctx, state_name, s)
            return ("keep_state", s)  # a monitor given up meanwhile
        event_type = "cast"  # member messages delivered as plain messages
    if event_type == "cast":
        if state_name == "leader":
            return _leader_cast(ctx, msg, s)
        if state_name == "candidate":
            return _candidate_cast(ctx, msg, s)
        return _follower_cast(ctx, msg, s)
    if type(event_type) is tuple and len(event_type) == 2 and event_type[0] == "call":
        from_ = event_type[1]
        if state_name == "leader":
            return _leader_call(ctx, from_, msg, s)
        return _handle_call_common(ctx, from_, msg, state_name, s)
    return ("keep_state", s)


def _finish(ctx: Ctx, state_name: str, result: tuple, s_in: State) -> tuple:
    kind = result[0]
    if kind == "keep_state":
        name, pos = state_name, 1
    elif kind == "next_state":
        name, pos = result[1], 2
    else:
        return result
    s = result[pos]
    if name != state_name and "leader" in (name, state_name):
        _hold_one_cpu(name == "leader")
    if name != state_name or s.members is not s_in.members:
        watched = _watch_leader(ctx, name, s)
        if watched is not s:
            s = watched
            result = (*result[:pos], s, *result[pos + 1 :])
    if name == state_name and (s is s_in or (
            s.leadership is s_in.leadership and s.election is s_in.election and s.timer is s_in.timer
            and s.members is s_in.members and s.config is s_in.config)):
        # nothing the timer depends on changed (a command, a lease read, a stale tick): the
        # armed timer still stands
        return result
    s2 = _ensure_timer(ctx, name, s)
    if s2 is s:
        return result
    return (*result[:pos], s2, *result[pos + 1 :])


#
# timers and flushing
#
def _next_deadline(state_name: str, s: State, me: Any) -> int | None:
    if state_name == "leader":
        l = s.leadership  # noqa: E741
        if l is None:
            return None
        q = Leadership.quorum_deadline(l, s.members, me, s.config)
        if q is None:
            return None  # a lonely leader needs neither heartbeats nor a quorum check
        return min(q, l.heartbeat_due_at)
    return s.election.deadline


def _watch_leader(ctx: Ctx, state_name: str, s: State) -> State:
    """A follower monitors the leader it knows (beyond the original; see :func:`_on_leader_down`).

    Runs after every event that changed the membership view or the state: a monitor is set
    when a follower learns of a new leader and dropped when it stops following it.
    """
    leader = s.members.leader if state_name == "follower" and s.members.leader != ctx.me else None
    w = s.leader_watch
    if (w.leader if w is not None else None) == leader:
        return s
    if w is not None and w.ref is not None:
        nodes.demonitor(w.ref)
    watch = None if leader is None else LeaderWatch(leader, nodes.monitor(leader))
    return _replace_value(s, leader_watch=watch)


def _on_leader_down(ctx: Ctx, state_name: str, s: State) -> tuple:
    """The leader this follower follows is gone (its process exited, or its node went down).

    Instead of waiting out its election time-out (1-2 ``election_timeout`` after the last
    message), the follower moves its deadline up to when the other members will grant votes:
    at once, or, with a lease, once the lease the old leader held has run out (they refuse
    before: see :func:`_leader_authority_timed_out`). Members take turns, ``heartbeat_timeout``
    apart in the order of their pids, so that two of them do not split the vote. Only time
    changes: an election started early is as safe as any, and a leader that is in fact alive
    behind a partition is replaced as it would be at the time-out.
    """
    w = s.leader_watch
    assert w is not None
    s = _replace_value(s, leader_watch=LeaderWatch(w.leader, None))
    if state_name != "follower":
        return ("keep_state", s)
    rank = _rank_without(s.members.all, w.leader, ctx.me)
    deadline = Election.early_deadline(s.config, ctx.now, rank)
    if s.election.deadline is not None and s.election.deadline <= deadline:
        return ("keep_state", s)
    return ("keep_state", _replace_value(s, election=_replace_value(s.election, deadline=deadline)))


def _rank_without(members: set, gone: Any, me: Any) -> int:
    """``me``'s place among the other members once ``gone`` is left out (0: the first to run)."""
    try:
        return sorted(p for p in members if p != gone).index(me)
    except (TypeError, ValueError):  # pids of mixed kinds, or not a member (any turn will do)
        return len(members)


def _ensure_timer(ctx: Ctx, state_name: str, s: State) -> State:
    deadline = _next_deadline(state_name, s, ctx.me)
    t = s.timer
    if deadline is None or (t is not None and t.fire_at <= deadline):
        return s  # an earlier tick re-arms for the rest when it finds nothing due
    if t is not None:
        nodes.cancel_timer(t.ref)
    token = s.timer_seq + 1
    # (a deadline further off than a timer can wait, with huge configured times: the tick then
    # finds nothing due and re-arms for the rest)
    delay = max(0, deadline - ctx.now)
    fire_at = deadline
    if delay > nodes.MAX_TIMEOUT_MS:
        delay, fire_at = nodes.MAX_TIMEOUT_MS, ctx.now + nodes.MAX_TIMEOUT_MS
    ref = nodes.send_after(delay, ctx.me, (TICK, token))
    return _replace_value(s, timer=TimerHandle(token, ref, fire_at), timer_seq=token)


def _on_tick(ctx: Ctx, state_name: str, token: int, s: State) -> tuple:
    if s.timer is None or s.timer.token != token:
        return ("keep_state", s)  # a cancelled timer that had already fired
    s = _replace_value(s, timer=None)
    if state_name == "leader":
        l = s.leadership  # noqa: E741
        assert l is not None
        if Leadership.cannot_reach_quorum(l, s.members, ctx.me, ctx.now, s.config):
            return ("next_state", "follower", _convert_to_follower(ctx, s, s.current_term))
        if ctx.now >= l.heartbeat_due_at:
            return ("keep_state", _broadcast_append_entries(ctx, s, heartbeat=True))
        return ("keep_state", s)
    if Election.timed_out(s.election, ctx.now):
        return _become_candidate_and_start_new_election(ctx, s, False)
    return ("keep_state", s)


def _schedule_flush(ctx: Ctx, s: State) -> State:
    if s.flush_pending:
        return s
    ctx.flush = True  # a FLUSH message, or the flush at once (see _run)
    return _replace_value(s, flush_pending=True)


def _on_flush(ctx: Ctx, state_name: str, s: State) -> tuple:
    s = _replace_value(s, flush_pending=False)
    p = s.persistence
    if p is not None and state_name == "leader" and len(s.members.all) > 1:
        # Send the batch first, then sync it while the followers write theirs (one fsync for the
        # batch). The leader counts its own copy only when it handles their answers: events
        # after this one, so after the sync, which runs right after the sends.
        s = _broadcast_append_entries(ctx, s, heartbeat=False)
        ctx.effects.append((p.sync, ()))
    else:
        if p is not None:
            # a lonely leader commits at once, a follower acknowledges: durable first
            s = _replace_value(s, persistence=p.sync())
        if state_name == "leader":
            s = _broadcast_append_entries(ctx, s, heartbeat=False)
    if s.pending_responses:
        for dest, resp in s.pending_responses.items():
            ctx.cast(s, dest, resp)
        s = _replace_value(s, pending_responses={})
    return ("keep_state", s)


#
# leader
#
def _leader_cast(ctx: Ctx, msg: Any, s: State) -> tuple:
    t = type(msg)
    if t is AppendEntriesResponse:
        return _leader_append_entries_response(ctx, msg, s)
    if t is RequestVoteRequest:
        return _handle_request_vote_request(ctx, msg, s, "leader")
    if t is AppendEntriesRequest or t is RequestVoteResponse or t is InstallSnapshot:
        # a newer term makes us a follower; otherwise neglect (this term's or an older one's)
        return _become_follower_if_new_term_started(ctx, msg, s) or ("keep_state", s)
    if t is InstallSnapshotCompressed:
        return _become_follower_if_new_term_started(ctx, _with_term(msg), s) or ("keep_state", s)
    # neglect "remove_follower_completed", TimeoutNow and anything else
    return ("keep_state", s)


def _leader_append_entries_response(ctx: Ctx, r: AppendEntriesResponse, s: State) -> tuple:
    res = _become_follower_if_new_term_started(ctx, r, s)
    if res is not None:
        return res
    if r.term < s.current_term:
        return ("keep_state", s)  # an answer to an earlier leadership
    me, frm = ctx.me, r.from_
    assert s.leadership is not None
    leadership = Leadership.follower_responded(s.leadership, s.members, frm, r.leader_timestamp, me)
    if r.success:
        i_rep = r.i_replicated or 0
        if leadership.lease_restart is not None:
            leadership = Leadership.lease_confirmed_by(leadership, frm, r.leader_timestamp, i_rep)
        logs, to_apply = Logs.set_follower_index(s.logs, s.members, s.current_term, frm, i_rep, me)
        s = replace_changed(s, leadership=leadership, logs=logs)
        if to_apply:
            s = Applying.leader_apply_committed_log_entries(ctx, s, to_apply)
        if s.members.pending_leader_change == frm and frm in s.members.all:
            req = Logs.make_timeout_now_req(s.logs, s.current_term, frm, ctx.now, me)
            if req is not None:
                # `frm` is alive and reachable: hand leadership over and stop serving clients
                ctx.cast(s, frm, TimeoutNow(append_entries_req=req))
                return ("next_state", "follower", _convert_to_follower(ctx, s, s.current_term))
        if Logs.has_entries_to_send(s.logs, frm):
            s = _schedule_flush(ctx, s)
        return ("keep_state", s)
    # the follower's log does not match: resend from its hint
    logs = Logs.rewind_follower(s.logs, frm, r.i_replicated)
    s = replace_changed(s, leadership=leadership, logs=logs)
    if logs is not s.logs or Logs.has_entries_to_send(logs, frm):
        s = _schedule_flush(ctx, s)
    return ("keep_state", s)



def _well_formed(tag: Any, n: int, req: Any) -> bool:
    """Whether a request's arguments have the forms a member can take without crashing.

    The public functions check them at the call site; a raw ``gen_statem.call`` does not, and
    an unhashable command id, say, would be logged, replicated and then crash every member
    that applies it (and, persisted, every restart). A malformed request is answered
    ``("error", "unexpected_message")``, the original's answer to a request it does not know.
    """
    if tag == "command":
        return n == 3 and _hashable(req[2])
    if tag in ("add_follower", "remove_follower", "force_remove_member"):
        return n == 2 and _is_member(req[1])
    if tag == "replace_leader":
        return n == 2 and (req[1] is None or _is_member(req[1]))
    return True


def _is_member(value: Any) -> bool:
    """Whether ``value`` can name a member: a pid (a str in the simulator, which names members
    so). Anything else, logged as a member (None, say), would crash every member that sends
    it a message."""
    return type(value) is nodes.Pid or type(value) is str


def _hashable(value: Any) -> bool:
    if type(value) is nodes.Ref:  # the common id, the call's own reference
        return True
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _leader_call(ctx: Ctx, from_: Any, req: Any, s: State) -> tuple:
    tag = req[0] if type(req) is tuple and req else req
    n = len(req) if type(req) is tuple else 0
    if not _well_formed(tag, n, req):
        ctx.reply(s, from_, ("error", "unexpected_message"))
        return ("keep_state", s)
    if tag == "command" and n == 3:
        return _leader_command(ctx, from_, req[1], req[2], s)
    if tag == "query" and n == 2:
        return _leader_query(ctx, from_, req[1], s)
    if tag == "change_config" and n == 2:
        return _leader_change_config(ctx, from_, req[1], s)
    if tag == "add_follower" and n == 2:
        return _leader_add_follower(ctx, from_, req[1], s)
    if tag == "remove_follower" and n == 2:
        return _leader_remove_follower(ctx, from_, req[1], s)
    if tag == "replace_leader" and n == 2:
        return _leader_replace_leader(ctx, from_, req[1], s)
    return _handle_call_common(ctx, from_, req, "leader", s)


def _append_and_flush(ctx: Ctx, s: State, logs: Logs.Logs, entry: LogEntry, **changes: Any) -> State:
    s = _replace_value(s, logs=logs, **changes)
    s = _persist_log_entries(s, [entry])
    return _schedule_flush(ctx, s)


def _append_or_refuse(ctx: Ctx, from_: Any, s: State, logs: Logs.Logs, entry: LogEntry, what: str) -> State:
    """Append ``entry``; a leader refuses one it cannot serialize (``("error", (what, text))``
    to the caller) instead of crashing, when the entry would be written or go to other
    members (see :func:`_refused_unsendable`)."""
    if _refused_unsendable(ctx, s, from_, what, entry[2], entry[3]):
        return s
    try:
        return _append_and_flush(ctx, s, logs, entry)
    except UnpersistableEntry as e:
        log.error("refusing a request that cannot be persisted: %s", e)
        ctx.reply(s, from_, ("error", (what, str(e))))
        return s


def _refused_unsendable(ctx: Ctx, s: State, from_: Any, what: str, kind: str, *values: Any) -> bool:
    """True (and the caller answered with an error) when one of ``values``, the user's part of a
    new entry, cannot be serialized and read back while the group has other members or
    persists its log: sending it would fail on every AppendEntries, so the leader could neither
    replicate it nor go on, and a log entry that cannot be read back makes its directory
    impossible to start from. A lonely in-memory leader never serializes its entries (a
    joiner gets a snapshot of the value)."""
    if len(s.members.all) == 1 and s.persistence is None:
        return False
    for value in values:
        why = _codec.cannot_serialize(value)
        if why is not None:
            log.error("refusing a %s entry that cannot be sent to other members: %s", kind, why)
            ctx.reply(s, from_, ("error", (what, f"cannot serialize the {kind} entry: {why}")))
            return True
    return False


def _leader_command(ctx: Ctx, from_: Any, arg: Any, cmd_id: Any, s: State) -> tuple:
    # The commands queued right behind this one join it in this event: one pass through the
    # state machine for a burst instead of one per command. Only a run of commands at the head
    # of the mailbox is taken, so no other message is overtaken.
    burst = [(from_, arg, cmd_id)]
    for frm, (_, a, cid) in nodes.gen_statem.take_queued_calls(_is_command, COMMAND_BURST):
        burst.append((frm, a, cid))
    if s.persistence is not None:
        # each written on its own: one that cannot be serialized is refused alone
        for frm, a, cid in burst:
            s = _append_command(ctx, frm, a, cid, s)
        return ("keep_state", s)
    # one copy of the log and of the state for the whole burst
    if len(s.members.all) > 1:
        burst = [c for c in burst if not (
            (type(c[1]) not in ALWAYS_SERIALIZABLE or type(c[2]) not in ALWAYS_SERIALIZABLE)
            and _refused_unsendable(ctx, s, c[0], "command_failed", COMMAND, c[1], c[2]))]
        if not burst:
            return ("keep_state", s)
    logs = Logs.add_entries(s.logs, s.current_term, COMMAND, burst)
    return ("keep_state", _schedule_flush(ctx, _replace_value(s, logs=logs)))


def _append_command(ctx: Ctx, from_: Any, arg: Any, cmd_id: Any, s: State) -> State:
    term = s.current_term
    logs, entry = Logs.add_entry(s.logs, lambda i: (term, i, COMMAND, (from_, arg, cmd_id)))
    return _append_or_refuse(ctx, from_, s, logs, entry, "command_failed")


#: at most this many queued commands join the one being handled (bounds one event's work)
COMMAND_BURST = 256


def _is_command(req: Any) -> bool:
    # a malformed one stays queued, to be refused on its own (see _well_formed)
    return type(req) is tuple and len(req) == 3 and req[0] == "command" and _hashable(req[2])


def _leader_query(ctx: Ctx, from_: Any, arg: Any, s: State) -> tuple:
    assert s.leadership is not None
    lease_ok = not Leadership.lease_expired(s.leadership, s.members, ctx.me, ctx.now, s.config)
    if lease_ok and Logs.committed_in_term(s.logs, s.current_term):
        # with a valid lease nobody else can have been elected: answer alone
        Applying.run_query(ctx, s, from_, arg)
        return ("keep_state", s)
    # otherwise confirm leadership by replicating the query like a command
    term = s.current_term
    logs, entry = Logs.add_entry(s.logs, lambda i: (term, i, QUERY, (from_, arg)))
    return ("keep_state", _append_or_refuse(ctx, from_, s, logs, entry, "query_failed"))


def _leader_change_config(ctx: Ctx, from_: Any, new_config: Any, s: State) -> tuple:
    if not isinstance(new_config, Config):
        ctx.reply(s, from_, ("error", "invalid_config"))
        return ("keep_state", s)
    term = s.current_term
    logs, entry = Logs.add_entry(s.logs, lambda i: (term, i, CHANGE_CONFIG, new_config))
    s2 = _append_or_refuse(ctx, from_, s, logs, entry, "invalid_config")
    if s2 is not s:
        ctx.reply(s2, from_, "ok")
    return ("keep_state", s2)


def _membership_change_allowed(s: State) -> bool:
    # Raft's single-server changes are unsafe if a new leader adds its own change before an
    # entry of its term commits (Ongaro, raft-dev 2015): an uncommitted change of an earlier
    # leader may then be lost while both configurations elect different leaders.
    return Logs.committed_in_term(s.logs, s.current_term)


def _leader_add_follower(ctx: Ctx, from_: Any, new_follower: Any, s: State) -> tuple:
    if not _membership_change_allowed(s):
        ctx.reply(s, from_, ("error", "uncommitted_membership_change"))
        return ("keep_state", s)
    if len(s.members.all) <= 1 and s.flush_pending:
        # A lonely leader commits what it appended before a joiner counts: the joiner then gets
        # those entries inside its snapshot, never as entries (a lonely leader's entries were not
        # checked to travel). The FLUSH message already sent finds nothing left to do.
        s = _on_flush(ctx, "leader", s)[1]
    # a persisting leader sends its latest snapshot file: the joiner's log starts after it
    meta = s.persistence.latest_snapshot_metadata if s.persistence is not None else None
    snapshot_index = None if meta is None else meta.last_committed_index
    logs, entry = Logs.add_entry_on_add_follower(s.logs, s.current_term, new_follower, snapshot_index)
    result = Members.start_adding_follower(s.members, entry)
    if result[0] == "error":
        ctx.reply(s, from_, result)  # the appended entry is simply dropped with `logs`
        return ("keep_state", s)
    leadership = s.leadership
    assert leadership is not None
    if len(s.members.all) <= 1:
        # a lonely leader had no quorum to lose; its quorum clock starts now
        leadership = _replace_value(leadership, quorum_timer_started_at=ctx.now)
    before = s
    s = _append_and_flush(ctx, s, logs, entry, members=result[1], leadership=leadership)
    file_snapshot = _read_snapshot_file_for_sending(ctx, s)
    if file_snapshot is not None:
        ctx.reply(s, from_, ("ok", file_snapshot[0]))
        return ("keep_state", s)
    # in memory (or the file could not be read: the joiner then is ahead of its next index)
    snapshot = _make_install_snapshot(ctx, s, for_joiner=True)
    remote = type(new_follower) is nodes.Pid and new_follower.node != nodes.node()
    why = _codec.cannot_serialize(snapshot) if remote else None
    if why is not None:
        # the value cannot travel to the joiner's node: refused before it counts as a member (in
        # memory nothing was written, so the state before the entry is the whole undo)
        log.error("refusing %r: the snapshot for it cannot be serialized: %s", new_follower, why)
        ctx.reply(before, from_, ("error", ("cannot_serialize_snapshot", why)))
        return ("keep_state", before)
    ctx.reply(s, from_, ("ok", snapshot))
    return ("keep_state", s)


def _leader_remove_follower(ctx: Ctx, from_: Any, old_follower: Any, s: State) -> tuple:
    if not _membership_change_allowed(s):
        ctx.reply(s, from_, ("error", "uncommitted_membership_change"))
        return ("keep_state", s)
    logs, entry = Logs.add_entry_on_remove_follower(s.logs, s.current_term, old_follower)
    result = Members.start_removing_follower(s.members, entry, ctx.me)
    if result[0] == "error":
        ctx.reply(s, from_, result)
        return ("keep_state", s)
    assert s.leadership is not None
    if not Leadership.can_safely_remove(s.leadership, s.members, old_follower, ctx.me, ctx.now, s.config):
        ctx.reply(s, from_, ("error", "will_break_quorum"))
        return ("keep_state", s)
    leadership = Leadership.remove_follower_response_time_entry(s.leadership, old_follower)
    s = _append_and_flush(ctx, s, logs, entry, members=result[1], leadership=leadership)
    ctx.reply(s, from_, "ok")
    return ("keep_state", s)


def _leader_replace_leader(ctx: Ctx, from_: Any, new_leader: Any, s: State) -> tuple:
    # the hand-over itself happens when `new_leader` next answers an AppendEntries
    result = Members.start_replacing_leader(s.members, new_leader, ctx.me)
    if result[0] == "error":
        ctx.reply(s, from_, result)
        return ("keep_state", s)
    assert s.leadership is not None
    if new_leader is not None and new_leader in Leadership.unresponsive_followers(
        s.leadership, s.members, ctx.me, ctx.now, s.config
    ):
        ctx.reply(s, from_, ("error", "new_leader_unresponsive"))
        return ("keep_state", s)
    s = _replace_value(s, members=result[1])
    ctx.reply(s, from_, "ok")
    return ("keep_state", s)


def _become_leader(ctx: Ctx, s: State) -> tuple:
    me = ctx.me
    logs, entry = Logs.add_entry_on_elected_leader(s.logs, s.members, s.current_term, me)
    s = _replace_value(
        s,
        members=Members.put_leader(s.members, me),
        leadership=Leadership.new_for_leader(ctx.now, s.config),
        election=_replace_value(s.election, voted_for=me, votes=None, deadline=None),
        logs=logs,
    )
    s = _persist_log_entries(s, [entry])
    if s.persistence is not None:
        s = _replace_value(s, persistence=s.persistence.sync())
    s = _broadcast_append_entries(ctx, s, heartbeat=True)
    return ("next_state", "leader", s)


def _broadcast_append_entries(ctx: Ctx, s: State, heartbeat: bool) -> State:
    me = ctx.me
    followers = Members.other_members_list(s.members, me)
    if not followers:
        # no other member: nobody will answer, the leader decides alone, once its own copy is
        # durable (a heartbeat tick may come here between an append and its flush)
        logs, to_apply = Logs.commit_to_latest(s.logs)
        if logs is not s.logs:
            if s.persistence is not None:
                s = _replace_value(s, persistence=s.persistence.sync())
            s = _replace_value(s, logs=logs)
            s = Applying.leader_apply_committed_log_entries(ctx, s, to_apply)
        return s
    shared: dict = {}  # followers at the same position get one entries object, pickled once
    sent_to_all = True
    for f in followers:
        s, sent = _send_append_entries(ctx, s, f, heartbeat, shared)
        sent_to_all = sent_to_all and sent
    if heartbeat or sent_to_all:
        # As the original, any round that reached every follower resets the heartbeat timer:
        # the next heartbeat is due heartbeat_timeout after the last message, not on a fixed
        # beat. (When a round skipped a follower, e.g. one getting a snapshot, the heartbeat
        # stays due as it was, so nobody goes without a message for longer.) The timer itself
        # is lazy: an earlier tick finds nothing due and re-arms.
        assert s.leadership is not None
        s = _replace_value(s, leadership=Leadership.heartbeat_sent(s.leadership, ctx.now, s.config))
    return s


def _send_append_entries(
    ctx: Ctx, s: State, follower: Any, heartbeat: bool, shared: dict | None = None
) -> tuple[State, bool]:
    """Send ``follower`` what it needs: ``(state, whether anything was sent)``."""
    meta = s.persistence.latest_snapshot_metadata if s.persistence is not None else None
    r = Logs.make_append_entries_req(
        s.logs,
        s.current_term,
        follower,
        ctx.now,
        ctx.me,
        heartbeat=heartbeat,
        snapshot_retry_ms=Leadership.max_election_timeout(s.config),
        snapshot_index=None if meta is None else meta.last_committed_index,
        shared_entries=shared,
    )
    kind = r[0]
    if kind == "ok":
        ctx.cast(s, follower, r[1])
        return replace_changed(s, logs=r[2]), True
    if kind == "snapshot":
        # the entries it needs are gone from memory: send a snapshot instead
        s = _replace_value(s, logs=r[1])
        file_snapshot = _read_snapshot_file_for_sending(ctx, s)
        if file_snapshot is not None:
            ctx.cast(s, follower, file_snapshot[0])
        else:
            # (if the file could not be read, the follower acknowledges i_committed instead)
            ctx.cast(s, follower, _make_install_snapshot(ctx, s, for_joiner=False))
        return s, True
    return s, False  # nothing to send now ("skip"), or not a follower ("unknown")


def _read_snapshot_file_for_sending(ctx: Ctx, s: State) -> tuple[InstallSnapshotCompressed, int] | None:
    """A persisting leader sends its latest snapshot file's bytes (as the original): the message
    and the snapshot's index, or None (in memory, or the file cannot be read)."""
    p = s.persistence
    meta = p.latest_snapshot_metadata if p is not None else None
    if meta is None:
        return None
    try:
        with open(meta.path, "rb") as f:
            data = f.read()
    except OSError as e:
        log.warning("cannot read snapshot file %s to send it: %s", meta.path, e)
        return None
    msg = InstallSnapshotCompressed(bin=data, term=s.current_term, leader_pid=ctx.me)
    return msg, meta.last_committed_index


def _make_install_snapshot(ctx: Ctx, s: State, for_joiner: bool) -> InstallSnapshot:
    """The committed state of a leader, as InstallSnapshot.

    A lagging follower gets the committed membership and replays any
    uncommitted change from the log; a joiner also gets the pending
    add_follower entry that names it, so that it counts itself a member.
    """
    m = s.members
    change = m.uncommitted_membership_change
    if for_joiner:
        members = Members.Members(leader=ctx.me, all=set(m.all), uncommitted_membership_change=change)
    else:
        all_ = m.all
        if change is not None and change[1] > s.logs.i_committed:
            all_ = Members.revert_entry(all_, change)
        members = Members.Members(leader=ctx.me, all=set(all_))
    return InstallSnapshot(
        members=members,
        term=s.current_term,
        last_committed_entry=Logs.last_committed_entry(s.logs),
        config=s.config,
        data=s.data,
        command_results=s.command_results,
    )


#
# candidate
#
def _candidate_cast(ctx: Ctx, msg: Any, s: State) -> tuple:
    t = type(msg)
    if t is AppendEntriesRequest:
        return _handle_append_entries_request(ctx, msg, s, "candidate")
    if t is InstallSnapshot or t is InstallSnapshotCompressed:
        msg = _with_term(msg)
        res = _become_follower_if_new_term_started(ctx, msg, s)
        if res is not None:
            return res
        if msg.term == s.current_term:
            # this term has a leader: follow it (the vote for this term is kept)
            return ("next_state", "follower", s, [("next_event", "cast", msg)])
        return ("keep_state", s)
    if t is RequestVoteRequest:
        return _handle_request_vote_request(ctx, msg, s, "candidate")
    if t is RequestVoteResponse:
        res = _become_follower_if_new_term_started(ctx, msg, s)
        if res is not None:
            return res
        if msg.term < s.current_term or not msg.vote_granted:
            return ("keep_state", s)
        election, majority = Election.gain_vote(s.election, s.members.all, msg.from_)
        s = _replace_value(s, election=election)
        if majority:
            return _become_leader(ctx, s)
        return ("keep_state", s)
    if t is AppendEntriesResponse:
        return _become_follower_if_new_term_started(ctx, msg, s) or ("keep_state", s)
    # neglect "remove_follower_completed", TimeoutNow, ...
    return ("keep_state", s)


def _become_candidate_and_start_new_election(ctx: Ctx, s: State, replacing_leader: bool) -> tuple:
    me = ctx.me
    term = s.current_term + 1
    if s.members.all == {me}:
        # a 1-member group already has the majority (itself): skip the candidate state
        s = _replace_value(s, current_term=term, election=Election.new_for_leader(me))
        return _become_leader(ctx, s)
    election = Election.update_for_candidate(
        s.election, me, ctx.now, ctx.election_timeout(s.config)
    )
    s = _replace_value(
        s, members=Members.put_leader(s.members, None), current_term=term, election=election
    )
    last = Logs.last_entry(s.logs)
    req = RequestVoteRequest(
        term=term, candidate_pid=me, last_log=(last[0], last[1]), replacing_leader=replacing_leader
    )
    for member in Members.other_members_list(s.members, me):
        ctx.cast(s, member, req)
    return ("next_state", "candidate", s)


#
# follower
#
def _follower_cast(ctx: Ctx, msg: Any, s: State) -> tuple:
    t = type(msg)
    if t is AppendEntriesRequest:
        return _handle_append_entries_request(ctx, msg, s, "follower")
    if t is RequestVoteRequest:
        return _handle_request_vote_request(ctx, msg, s, "follower")
    if t is AppendEntriesResponse or t is RequestVoteResponse:
        return _become_follower_if_new_term_started(ctx, msg, s) or ("keep_state", s)
    if t is TimeoutNow:
        return _follower_timeout_now(ctx, msg, s)
    if t is InstallSnapshot or t is InstallSnapshotCompressed:
        return _handle_install_snapshot(ctx, msg, s)
    if msg == "remove_follower_completed":
        return ("stop", "normal", s)
    return ("keep_state", s)


def _follower_timeout_now(ctx: Ctx, msg: TimeoutNow, s: State) -> tuple:
    req = msg.append_entries_req
    if req.term != s.current_term or not Logs.contain_given_prev_log(s.logs, req.prev_log):
        return ("keep_state", s)
    r = Logs.append_entries(s.logs, s.members, req.prev_log, req.entries, req.i_leader_commit)
    if r[0] != "ok":
        return ("keep_state", s)
    _, logs, members, to_apply, to_persist, _i_match = r
    s = _replace_value(s, logs=logs, members=members)
    s = Applying.nonleader_apply_committed_log_entries(s, to_apply)
    s = _persist_log_entries(s, to_persist)
    if s.persistence is not None:
        s = _replace_value(s, persistence=s.persistence.sync())
    # caught up with the old leader: start an election at once
    return _become_candidate_and_start_new_election(ctx, s, True)


def _with_term(msg: Any) -> Any:
    """An InstallSnapshotCompressed without a term (from a sender that does not add it) gets the
    snapshot's term and leader."""
    if type(msg) is InstallSnapshotCompressed and msg.term is None:
        snap = decode_snapshot(msg.bin)
        return InstallSnapshotCompressed(bin=msg.bin, term=snap.term, leader_pid=snap.members.leader)
    return msg


def _handle_install_snapshot(ctx: Ctx, msg: Any, s: State) -> tuple:
    msg = _with_term(msg)
    res = _become_follower_if_new_term_started(ctx, msg, s)
    if res is not None:
        return res
    if msg.term < s.current_term:
        return ("keep_state", s)  # from a deposed leader
    received = Startup.received_snapshot(msg)
    assert received is not None
    snap, data, _term, leader_pid = received
    index = snap.last_committed_entry[1]
    held = s.logs.map.get(index) if s.logs.i_committed < index <= s.logs.i_max else None
    if held is not None and held[0] == snap.last_committed_entry[0]:
        # Our log already holds the snapshot's last entry (the leader sent it on a stale answer
        # of ours): keep what follows it, entries we may have acknowledged already, and commit
        # up to it from our own log (Raft's InstallSnapshot, step 6), as an empty AppendEntries.
        r = Logs.append_entries(s.logs, s.members, (held[0], index), [], index)
        _, logs, members, to_apply, _, _ = r
        s = replace_changed(s, logs=logs, members=Members.put_leader(members, leader_pid))
        if to_apply:
            s = Applying.nonleader_apply_committed_log_entries(s, to_apply)
    elif index > s.logs.i_committed:
        persistence = s.persistence
        if persistence is not None:
            # on disk before it is acknowledged; our old files no longer describe our state
            persistence = persistence.install_snapshot(snap, data)
        s = _replace_value(
            s,
            # answers not sent yet describe the log just replaced: acknowledge the snapshot only
            pending_responses={},
            members=_replace_value(snap.members, leader=leader_pid, pending_leader_change=None),
            logs=Logs.new_for_new_follower(snap.last_committed_entry),
            data=snap.data,
            command_results=snap.command_results,
            config=snap.config,
            persistence=persistence,
        )
    else:
        # a stale snapshot (we have moved past it): keep our state, tell the leader where we are
        s = _replace_value(s, members=Members.put_leader(s.members, leader_pid))
        index = s.logs.i_committed
    s = _reset_election_timer_on_leader_message(ctx, s)
    # InstallSnapshot carries no timestamp: 0 never counts towards the leader's lease
    resp = AppendEntriesResponse(ctx.me, s.current_term, True, index, 0)
    s = _queue_append_entries_response(ctx, s, leader_pid, resp)
    return ("keep_state", s)


def _become_follower_if_new_term_started(ctx: Ctx, msg: Any, s: State) -> tuple | None:
    """If ``msg`` carries a newer term, become its follower and handle ``msg`` again as one."""
    if msg.term > s.current_term:
        s = _convert_to_follower(ctx, s, msg.term)
        return ("next_state", "follower", s, [("next_event", "cast", msg)])
    return None


def _convert_to_follower(ctx: Ctx, s: State, new_term: int) -> State:
    election = Election.update_for_follower(
        s.election, ctx.now, ctx.election_timeout(s.config), new_term > s.current_term
    )
    return _replace_value(
        s,
        members=Members.put_leader(s.members, None),
        current_term=new_term,
        leadership=None,
        election=election,
    )


def _reset_election_timer_on_leader_message(ctx: Ctx, s: State) -> State:
    timeout = ctx.election_timeout(s.config)
    return _replace_value(s, election=Election.reset_timer(s.election, ctx.now, timeout))


def _queue_append_entries_response(ctx: Ctx, s: State, dest: Any, resp: AppendEntriesResponse) -> State:
    """Answer once per batch: merge with an answer to the same leader not sent yet."""
    old = s.pending_responses.get(dest)
    if old is not None and old.term == resp.term:
        ts = max(old.leader_timestamp, resp.leader_timestamp)
        if old.success and resp.success:
            resp.i_replicated = max(old.i_replicated or 0, resp.i_replicated or 0)
        elif old.success:
            # keep what we know matches; a real gap shows up at the leader's next request
            resp = AppendEntriesResponse(old.from_, old.term, True, old.i_replicated, ts)
        resp.leader_timestamp = ts
    pending = dict(s.pending_responses)
    pending[dest] = resp
    s = _replace_value(s, pending_responses=pending)
    return _schedule_flush(ctx, s)


def _handle_append_entries_request(ctx: Ctx, req: AppendEntriesRequest, s: State, state_name: str) -> tuple:
    res = _become_follower_if_new_term_started(ctx, req, s)
    if res is not None:
        return res
    me, leader_pid = ctx.me, req.leader_pid
    if req.term < s.current_term:
        # from a deposed leader: tell it the newer term
        resp = AppendEntriesResponse(me, s.current_term, False, s.logs.i_max, req.leader_timestamp)
        return ("keep_state", _queue_append_entries_response(ctx, s, leader_pid, resp))
    r = Logs.append_entries(s.logs, s.members, req.prev_log, req.entries, req.i_leader_commit)
    if r[0] == "ok":
        _, logs, members, to_apply, to_persist, i_match = r
        s = replace_changed(s, logs=logs, members=Members.put_leader(members, leader_pid))
        if (to_apply and state_name == "follower" and s.persistence is None
                and all(e[2] == COMMAND for e in to_apply)):
            # Answer first, apply after (the event loop applies them once the answer is out):
            # the leader waits for the answer, nobody waits for this member's copy of the value.
            # In memory there is nothing to sync before answering, and commands change only the
            # value and the cached results, which nothing decided in this event depends on.
            ctx.apply_after = to_apply
        elif to_apply:
            s = Applying.nonleader_apply_committed_log_entries(s, to_apply)
        s = _persist_log_entries(s, to_persist)
        resp = AppendEntriesResponse(me, req.term, True, i_match, req.leader_timestamp)
    else:
        # we lack or contradict `prev_log`: tell the leader where to resume
        s = replace_changed(s, members=Members.put_leader(s.members, leader_pid))
        resp = AppendEntriesResponse(me, req.term, False, r[1], req.leader_timestamp)
    s = _reset_election_timer_on_leader_message(ctx, s)
    s = _queue_append_entries_response(ctx, s, leader_pid, resp)
    if state_name != "follower":
        return ("next_state", "follower", s)
    return ("keep_state", s)


def apply_after_effects(ctx: Ctx, result: tuple) -> tuple:
    """Apply ``ctx.apply_after`` (committed commands) to the state of ``result``, a follower's
    ``keep_state``: the event loop calls this once the event's effects have run and its answer
    has been sent (a simulator, once it has interpreted the effects)."""
    assert ctx.apply_after is not None and result[0] == "keep_state", result
    entries, ctx.apply_after = ctx.apply_after, None
    return ("keep_state", Applying.nonleader_apply_committed_log_entries(result[1], entries), *result[2:])


def _leader_authority_timed_out(ctx: Ctx, state_name: str, s: State) -> bool:
    if state_name == "leader":
        assert s.leadership is not None
        return Leadership.lease_expired(s.leadership, s.members, ctx.me, ctx.now, s.config)
    return Election.minimum_timeout_elapsed_since_last_leader_message(s.election, s.config, ctx.now)


def _handle_request_vote_request(ctx: Ctx, req: RequestVoteRequest, s: State, state_name: str) -> tuple:
    me = ctx.me
    if req.replacing_leader or _leader_authority_timed_out(ctx, state_name, s):
        res = _become_follower_if_new_term_started(ctx, req, s)
        if res is not None:
            return res
        grant = (
            req.term == s.current_term
            and s.election.voted_for in (None, req.candidate_pid)
            and Logs.candidate_log_up_to_date(s.logs, req.last_log)
        )
        ctx.cast(s, req.candidate_pid, RequestVoteResponse(from_=me, term=s.current_term, vote_granted=grant))
        if grant:
            timeout = ctx.election_timeout(s.config)
            election = Election.vote_for(s.election, req.candidate_pid, ctx.now, timeout)
            s = _replace_value(s, election=election)
        return ("keep_state", s)
    # we still trust a live leader: refuse without adopting the (possibly disruptive) newer term
    ctx.cast(s, req.candidate_pid, RequestVoteResponse(from_=me, term=s.current_term, vote_granted=False))
    return ("keep_state", s)


#
# requests any member answers
#
def _handle_call_common(ctx: Ctx, from_: Any, req: Any, state_name: str, s: State) -> tuple:
    tag = req[0] if type(req) is tuple and req else req
    n = len(req) if type(req) is tuple else 0
    if tag == "query_non_leader" and n == 2:
        ok, ret = Applying.query(s, req[1], from_)
        ctx.reply(s, from_, ("ok", ret) if ok else ret)
        return ("keep_state", s)
    if not _well_formed(tag, n, req):
        ctx.reply(s, from_, ("error", "unexpected_message"))
        return ("keep_state", s)
    if tag == "force_remove_member" and n == 2:
        # Removing a member may make a candidate the winner; the next time-out sorts that out.
        pid = req[1]
        if pid == ctx.me:
            # named by its registered name, a member was asked to forget itself: it would go on
            # as a leader of nobody (the caller turns this into a ValueError, as for a pid)
            ctx.reply(s, from_, ("error", "cannot_remove_self"))
            return ("keep_state", s)
        s = _replace_value(s, members=Members.force_remove_member(s.members, pid))
        if s.leadership is not None:
            s = _replace_value(
                s,
                logs=Logs.forget_follower(s.logs, pid),
                leadership=Leadership.remove_follower_response_time_entry(s.leadership, pid),
            )
        ctx.reply(s, from_, "ok")
        return ("keep_state", s)
    if tag == "status" and n == 0:
        ctx.reply(s, from_, _status(ctx, state_name, s))
        return ("keep_state", s)
    if state_name == "leader":
        ctx.reply(s, from_, ("error", "unexpected_message"))
    else:
        ctx.reply(s, from_, ("error", ("not_leader", s.members.leader)))
    return ("keep_state", s)


def _status(ctx: Ctx, state_name: str, s: State) -> dict:
    if state_name == "leader" and s.leadership is not None:
        unresponsive = Leadership.unresponsive_followers(s.leadership, s.members, ctx.me, ctx.now, s.config)
    else:
        unresponsive = []
    members = list(s.members.all)
    try:
        members.sort()
    except TypeError:
        pass
    return {
        "from": ctx.me,
        "members": members,
        "leader": s.members.leader,
        "unresponsive_followers": unresponsive,
        "current_term": s.current_term,
        "state_name": state_name,
        "config": s.config,
    }



def _persist_log_entries(s: State, entries: list[LogEntry]) -> State:
    """The persistence seam: write new entries (synced at the next flush, before anyone counts them)."""
    p = s.persistence
    if p is None or not entries:
        return s
    p = p.write_log_entries(entries)
    if p.log_compaction_runnable():
        # the membership as of the last committed entry: an uncommitted change is in the log after it
        m = s.members
        all_ = m.all
        change = m.uncommitted_membership_change
        if change is not None and change[1] > s.logs.i_committed:
            all_ = Members.revert_entry(all_, change)
        snapshot = Snapshot(
            members=Members.Members(leader=m.leader, all=set(all_)),
            term=s.current_term,
            last_committed_entry=Logs.last_committed_entry(s.logs),
            config=s.config,
            data=s.data,
            command_results=s.command_results,
        )
        p = p.switch_log_file_and_spawn_snapshot_writer(snapshot, s.logs.i_max + 1,
                                                        dir_lock.rename_guard(p.dir, nodes.self()))
    return _replace_value(s, persistence=p)

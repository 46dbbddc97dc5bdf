"""Who is in the consensus group and what membership change is under way (``RaftedValue.Members``).

Pure data and functions. ``all`` is the membership as of the member's last
log entry (Raft's single-server changes take effect when appended, not when
committed); ``uncommitted_membership_change`` is the one add/remove entry
not yet committed; ``pending_leader_change`` the follower a ``replace_leader``
call is handing leadership to. ``me`` is the calling member's pid, passed in
so that nothing here needs the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rafted._values import replace as _replace_value
from rafted.log_entry import ADD_FOLLOWER, REMOVE_FOLLOWER, RESTORE_FROM_FILES, LogEntry

__all__ = [
    "Members",
    "new_for_lonely_leader",
    "other_members_list",
    "put_leader",
    "start_adding_follower",
    "start_removing_follower",
    "start_replacing_leader",
    "membership_change_committed",
    "force_remove_member",
    "apply_entry",
    "revert_entry",
    "majority",
]

Result = tuple[str, Any]  # ("ok", Members) | ("error", reason)


def majority(n: int) -> int:
    """How many of ``n`` members form a majority (votes, commits, the quorum check)."""
    return n // 2 + 1


@dataclass(slots=True)
class Members:
    """Membership view of one member. Treated as immutable: functions return new values."""

    leader: Any = None
    all: set = field(default_factory=set)
    uncommitted_membership_change: LogEntry | None = None
    pending_leader_change: Any = None


def new_for_lonely_leader(me: Any) -> Members:
    return Members(leader=me, all={me})


def other_members_list(m: Members, me: Any) -> list:
    """Every member but ``me``, in a stable order (sorted when pids are comparable)."""
    others = [p for p in m.all if p != me]
    try:
        others.sort()
    except TypeError:
        pass
    return others


def put_leader(m: Members, leader_or_none: Any) -> Members:
    # a hand-over is bound to the leadership that accepted it: drop it whenever the leader changes
    if m.leader == leader_or_none and m.pending_leader_change is None:
        return m
    return _replace_value(m, leader=leader_or_none, pending_leader_change=None)


def _reject_if_changing(m: Members, check_leader_change: bool) -> str | None:
    if m.uncommitted_membership_change is not None:
        return "uncommitted_membership_change"
    if check_leader_change and m.pending_leader_change is not None:
        return "pending_leader_change"
    return None


def start_adding_follower(m: Members, entry: LogEntry) -> Result:
    """Accept ``entry`` (an add_follower entry just appended) or say why not."""
    err = _reject_if_changing(m, True)
    if err:
        return ("error", err)
    new_follower = entry[3]
    if new_follower in m.all:
        return ("error", "already_joined")
    return ("ok", _replace_value(m, all=m.all | {new_follower}, uncommitted_membership_change=entry))


def start_removing_follower(m: Members, entry: LogEntry, me: Any) -> Result:
    """Accept ``entry`` (a remove_follower entry just appended) or say why not."""
    err = _reject_if_changing(m, True)
    if err:
        return ("error", err)
    old_follower = entry[3]
    if old_follower == me:
        return ("error", "cannot_remove_leader")
    if old_follower not in m.all:
        return ("error", "not_member")
    return ("ok", _replace_value(m, all=m.all - {old_follower}, uncommitted_membership_change=entry))


def start_replacing_leader(m: Members, new_leader: Any, me: Any) -> Result:
    """Record (or with ``None`` cancel) a leader hand-over to ``new_leader``."""
    err = _reject_if_changing(m, False)
    if err:
        return ("error", err)
    if new_leader is None:
        return ("ok", _replace_value(m, pending_leader_change=None))
    if new_leader == me:
        return ("error", "already_leader")
    if new_leader in m.all:
        return ("ok", _replace_value(m, pending_leader_change=new_leader))
    return ("error", "not_member")


def membership_change_committed(m: Members, index: int) -> Members:
    change = m.uncommitted_membership_change
    if change is not None and change[1] <= index:
        return _replace_value(m, uncommitted_membership_change=None)
    return m


def force_remove_member(m: Members, pid: Any) -> Members:
    """Forget ``pid`` locally (unsafe, not replicated): the last resort after losing the majority."""
    change = m.uncommitted_membership_change
    if change is not None and change[3] == pid:
        change = None
    return _replace_value(
        m,
        all=m.all - {pid},
        uncommitted_membership_change=change,
        pending_leader_change=None if m.pending_leader_change == pid else m.pending_leader_change,
    )


def apply_entry(m: Members, entry: LogEntry) -> Members:
    """Membership after appending ``entry`` (changes take effect when appended)."""
    kind = entry[2]
    if kind == ADD_FOLLOWER:
        return _replace_value(m, all=m.all | {entry[3]}, uncommitted_membership_change=entry)
    if kind == REMOVE_FOLLOWER:
        return _replace_value(m, all=m.all - {entry[3]}, uncommitted_membership_change=entry)
    if kind == RESTORE_FROM_FILES:
        return _replace_value(m, all={entry[3]}, uncommitted_membership_change=None)
    return m


def revert_entry(all_: set, entry: LogEntry) -> set:
    """The member set before ``entry`` given the set after it (to undo overwritten entries)."""
    kind = entry[2]
    if kind == ADD_FOLLOWER:
        return all_ - {entry[3]}
    if kind == REMOVE_FOLLOWER:
        return all_ | {entry[3]}
    return all_

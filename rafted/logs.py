"""The replicated log (``RaftedValue.Logs``): entries, commit index and, in a leader, follower progress.

Pure data and functions; the server passes in its own pid (``me``), the
current time and settings. ``map`` holds entries ``i_min .. i_max``;
``i_committed`` is also the applied index (committed entries are applied at
once). In a leader ``followers`` maps each follower to ``(i_next,
i_replicated)``: the next index to send and the last index known to match.

Beyond the original, to keep a loaded leader cheap:

- replication is pipelined: ``i_next`` advances when entries are *sent*, at
  most ``MAX_ENTRIES_IN_FLIGHT`` beyond ``i_replicated``; heartbeats carry no
  entries;
- a follower rejecting a request tells where to resume (its last index, or
  its commit index on a conflict), so the leader jumps back at once;
- a follower that lags behind ``i_min`` gets one snapshot at a time
  (``snapshots_in_flight``), re-sent only after ``snapshot_retry_ms``;
- a follower truncates its log after a conflicting entry (Raft's rule),
  undoing the membership changes it drops, and acknowledges only the
  entries it verified (``prev + len(entries)``), never a stale suffix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rafted import members as Members
from rafted._values import copier as _copier
from rafted._values import replace as _replace_value
from rafted.log_entry import (
    ADD_FOLLOWER,
    LEADER_ELECTED,
    MEMBERSHIP_CHANGES,
    REMOVE_FOLLOWER,
    RESTORE_FROM_FILES,
    LogEntry,
)
from rafted.rpc import AppendEntriesRequest, Entries

__all__ = [
    "Logs",
    "LogMap",
    "EXTRA_ENTRIES_KEPT_IN_MEMORY",
    "MAX_ENTRIES_IN_FLIGHT",
    "new_for_lonely_leader",
    "new_for_new_follower",
    "last_entry",
    "last_committed_entry",
    "committed_in_term",
    "add_entry",
    "add_entries",
    "add_entry_on_elected_leader",
    "add_entry_on_add_follower",
    "add_entry_on_remove_follower",
    "add_entry_on_restored_from_files",
    "commit_to_latest",
    "make_append_entries_req",
    "make_timeout_now_req",
    "set_follower_index",
    "rewind_follower",
    "has_entries_to_send",
    "forget_follower",
    "contain_given_prev_log",
    "append_entries",
    "candidate_log_up_to_date",
    "truncate_old_logs",
    "slice_entries",
]

# Committed entries kept beyond the truncation point (the original keeps 100 in memory).
EXTRA_ENTRIES_KEPT_IN_MEMORY = 100
# Unacknowledged entries the leader lets a follower have in flight.
MAX_ENTRIES_IN_FLIGHT = 1000


class _Store:
    """The shared, append-only backing list of one or more :class:`LogMap` views."""

    __slots__ = ("entries", "base")

    def __init__(self, entries: list[LogEntry], base: int) -> None:
        self.entries = entries  # entries[k] is the entry at index base + k
        self.base = base


class LogMap(Mapping[int, LogEntry]):
    """An immutable mapping index → entry over the window ``lo .. hi`` of a shared store.

    Appending at ``hi + 1`` extends the store in place when this view is its
    newest (nothing was appended beyond ``hi``): older views keep their own
    window and never see the new entry. Otherwise (a sibling already appended
    there, or a follower overwrites conflicting entries) the window is copied
    into a fresh store first. Dropping old entries moves ``lo``; the store is
    compacted (copied) once its dead prefix outgrows the live window, so both
    operations are amortized O(1).
    """

    __slots__ = ("_store", "_lo", "_hi")

    def __init__(self, store: _Store, lo: int, hi: int) -> None:
        self._store = store
        self._lo = lo
        self._hi = hi  # empty when hi < lo

    @classmethod
    def of(cls, entries: list[LogEntry]) -> LogMap:
        """A view of consecutive ``entries`` (indices taken from the entries themselves)."""
        lo = entries[0][1]
        return cls(_Store(list(entries), lo), lo, lo + len(entries) - 1)

    # Mapping protocol
    def __getitem__(self, i: int) -> LogEntry:
        if type(i) is int and self._lo <= i <= self._hi:
            s = self._store
            return s.entries[i - s.base]
        raise KeyError(i)

    def get(self, i: int, default: Any = None) -> Any:
        if type(i) is int and self._lo <= i <= self._hi:
            s = self._store
            return s.entries[i - s.base]
        return default

    def __contains__(self, i: object) -> bool:
        return type(i) is int and self._lo <= i <= self._hi

    def __len__(self) -> int:
        return max(0, self._hi - self._lo + 1)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._lo, self._hi + 1))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LogMap):
            if len(self) != len(other) or (len(self) and self._lo != other._lo):
                return False
            return self.slice(self._lo, self._hi) == other.slice(other._lo, other._hi)
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LogMap({dict(self.items())!r})"

    def __reduce__(self) -> tuple:
        return (LogMap._from_window, (self.slice(self._lo, self._hi), self._lo))

    @classmethod
    def _from_window(cls, entries: list[LogEntry], lo: int) -> LogMap:
        return cls(_Store(entries, lo), lo, lo + len(entries) - 1)

    # value operations (each returns a new view, ``self`` is left as it is)
    def slice(self, i1: int, i2: int) -> list[LogEntry]:
        """The entries ``i1 .. i2`` (all must be in the window), as a new list."""
        if i2 < i1:
            return []
        if i1 < self._lo or i2 > self._hi:
            raise KeyError(i1 if i1 < self._lo else i2)
        s = self._store
        return s.entries[i1 - s.base : i2 - s.base + 1]

    def appended(self, entries: list[LogEntry]) -> LogMap:
        """This window plus ``entries`` at ``hi + 1 ..`` (consecutive indices)."""
        if not entries:
            return self
        if entries[0][1] != self._hi + 1:
            raise ValueError(f"entry {entries[0][1]} appended after {self._hi}")
        s = self._store
        lst = s.entries
        if s.base + len(lst) - 1 != self._hi or self._lo - s.base > max(len(lst) - (self._lo - s.base), 256):
            # a newer view owns the store's tail (or most of it is dead): copy the window
            lst = lst[self._lo - s.base : self._hi - s.base + 1]
            s = _Store(lst, self._lo)
        lst.extend(entries)
        return LogMap(s, self._lo, self._hi + len(entries))

    def appended_one(self, entry: LogEntry) -> LogMap:
        s = self._store
        lst = s.entries
        hi = self._hi
        n = len(lst)
        if s.base + n - 1 != hi or self._lo - s.base > max(n - (self._lo - s.base), 256):
            lst = lst[self._lo - s.base : hi - s.base + 1]
            s = _Store(lst, self._lo)
        lst.append(entry)
        return LogMap(s, self._lo, hi + 1)

    def truncated(self, lo: int, hi: int) -> LogMap:
        """The window narrowed to ``lo .. hi`` (shares the store; later appends copy if needed)."""
        return LogMap(self._store, max(lo, self._lo), min(hi, self._hi))


@dataclass(slots=True)
class Logs:
    """The log of one member. Treated as immutable: every function returns a new value."""

    map: LogMap
    i_min: int
    i_max: int
    i_committed: int
    followers: dict[Any, tuple[int, int]] | None = None
    snapshots_in_flight: dict[Any, tuple[int, int]] = field(default_factory=dict)


_copy_logs = _copier(Logs)


def _new_with_last_entry(entry: LogEntry) -> Logs:
    i = entry[1]
    return Logs(map=LogMap.of([entry]), i_min=i, i_max=i, i_committed=i)


def slice_entries(m: Mapping[int, LogEntry], i1: int, i2: int) -> list[LogEntry]:
    if type(m) is LogMap:
        return m.slice(i1, i2)
    return [m[i] for i in range(i1, i2 + 1)]


#
# for leader
#
def new_for_lonely_leader(last_committed_entry: LogEntry, entries_to_append: Sequence[LogEntry] = ()) -> Logs:
    """A log holding only ``last_committed_entry`` (plus entries recovered from disk, uncommitted)."""
    logs = _new_with_last_entry(last_committed_entry)
    logs.followers = {}
    if entries_to_append:
        logs.map = logs.map.appended(list(entries_to_append))
        logs.i_max = logs.map._hi
    return logs


def last_entry(logs: Logs) -> LogEntry:
    return logs.map[logs.i_max]


def last_committed_entry(logs: Logs) -> LogEntry:
    return logs.map[logs.i_committed]


def committed_in_term(logs: Logs, term: int) -> bool:
    """Whether an entry of ``term`` has committed (so everything before it is committed too)."""
    return logs.map[logs.i_committed][0] == term


def add_entry(logs: Logs, make: Callable[[int], LogEntry]) -> tuple[Logs, LogEntry]:
    """Append ``make(index)`` at ``i_max + 1`` (leader only)."""
    i = logs.i_max + 1
    entry = make(i)
    new = _copy_logs(logs)
    new.map = logs.map.appended_one(entry)
    new.i_max = i
    return new, entry


def add_entries(logs: Logs, term: int, kind: str, payloads: list[Any]) -> Logs:
    """Append one ``(term, index, kind, payload)`` entry per payload after ``i_max`` (leader
    only): :func:`add_entry` for a burst, copying the log once."""
    i = logs.i_max + 1
    new = _copy_logs(logs)
    new.map = logs.map.appended([(term, i + k, kind, p) for k, p in enumerate(payloads)])
    new.i_max = i + len(payloads) - 1
    return new


def add_entry_on_elected_leader(
    logs: Logs, members: Members.Members, term: int, me: Any
) -> tuple[Logs, LogEntry]:
    others = Members.other_members_list(members, me)
    # start optimistic: the new entry goes out with the first request; a follower that lacks
    # earlier entries says so and the leader jumps back to its hint
    followers = {f: (logs.i_max + 1, 0) for f in others}
    new_logs = _replace_value(logs, followers=followers, snapshots_in_flight={})
    return add_entry(new_logs, lambda i: (term, i, LEADER_ELECTED, [me, *others]))


def add_entry_on_add_follower(
    logs: Logs, term: int, new_follower: Any, snapshot_index: int | None = None
) -> tuple[Logs, LogEntry]:
    # the joiner receives a snapshot at i_committed (or, from a persisting leader, its latest
    # snapshot file at `snapshot_index`): replicate everything after it
    followers = dict(logs.followers or {})
    followers[new_follower] = ((logs.i_committed if snapshot_index is None else snapshot_index) + 1, 0)
    new_logs = _replace_value(logs, followers=followers)
    return add_entry(new_logs, lambda i: (term, i, ADD_FOLLOWER, new_follower))


def add_entry_on_remove_follower(logs: Logs, term: int, follower_to_remove: Any) -> tuple[Logs, LogEntry]:
    return add_entry(logs, lambda i: (term, i, REMOVE_FOLLOWER, follower_to_remove))


def add_entry_on_restored_from_files(logs: Logs, term: int, me: Any) -> tuple[Logs, LogEntry]:
    return add_entry(logs, lambda i: (term, i, RESTORE_FROM_FILES, me))


def commit_to_latest(logs: Logs) -> tuple[Logs, list[LogEntry]]:
    """A lonely leader is its own majority: everything appended is committed."""
    if logs.i_committed == logs.i_max:
        return logs, []
    to_apply = slice_entries(logs.map, logs.i_committed + 1, logs.i_max)
    return _replace_value(logs, i_committed=logs.i_max), to_apply


#: a term no log entry has (terms start at 0)
NO_TERM = -1


def _prev_term(logs: Logs, i_prev: int) -> int:
    return 0 if i_prev == 0 else logs.map[i_prev][0]


def make_append_entries_req(
    logs: Logs,
    term: int,
    follower: Any,
    now: int,
    me: Any,
    *,
    heartbeat: bool,
    snapshot_retry_ms: int,
    max_in_flight: int = MAX_ENTRIES_IN_FLIGHT,
    snapshot_index: int | None = None,
    shared_entries: dict[tuple[int, int], list[LogEntry]] | None = None,
) -> tuple:
    """What to send to ``follower`` now.

    Returns ``("ok", request, logs)``; ``("snapshot", logs)`` when the follower
    needs entries already truncated (send it a snapshot of the committed
    state, or of ``snapshot_index`` if given: a persisting leader sends its
    latest snapshot file; the follower's next index becomes the snapshot's
    index + 1); ``("skip", logs)``
    when there is nothing to send (no new entries and not a heartbeat, too
    many in flight, or a snapshot is already on its way); ``("unknown",
    logs)`` for a pid that is not a follower.

    ``shared_entries`` (a dict the caller keeps for one round of sends) hands followers at the
    same position the same :class:`~rafted.rpc.Entries` object, which is pickled only once.
    """
    followers = logs.followers
    fi = followers.get(follower) if followers is not None else None
    if fi is None:
        return ("unknown", logs)
    i_next, i_rep = fi
    i_prev = i_next - 1
    if i_prev != 0 and i_prev < logs.i_min:
        sent = logs.snapshots_in_flight.get(follower)
        if sent is not None and now - sent[1] < snapshot_retry_ms:
            if not heartbeat:
                return ("skip", logs)
            # A heartbeat all the same, or the follower's election timer runs out while its
            # snapshot is on the way (or lost, waiting for the retry) and it disrupts the group.
            # It names the snapshot's index with a term no entry has: a follower that has the
            # snapshot (committed up to there) accepts it without a term check, one that has
            # not rejects it; nothing is appended either way.
            req = AppendEntriesRequest(
                leader_pid=me,
                term=term,
                prev_log=(NO_TERM, sent[0]),
                entries=[],
                i_leader_commit=logs.i_committed,
                leader_timestamp=now,
            )
            return ("ok", req, logs)
        i_snap = logs.i_committed if snapshot_index is None else snapshot_index
        new_followers = dict(followers)  # type: ignore[arg-type]
        new_followers[follower] = (i_snap + 1, i_rep)
        in_flight = dict(logs.snapshots_in_flight)
        in_flight[follower] = (i_snap, now)
        return ("snapshot", _replace_value(logs, followers=new_followers, snapshots_in_flight=in_flight))
    hi = min(logs.i_max, i_rep + max_in_flight)
    if i_next > hi and not heartbeat:
        return ("skip", logs)
    if shared_entries is None or i_next > hi:
        entries = logs.map.slice(i_next, hi)
    else:
        entries = shared_entries.get((i_next, hi))  # type: ignore[assignment]
        if entries is None:
            entries = shared_entries[(i_next, hi)] = Entries(logs.map.slice(i_next, hi))
    req = AppendEntriesRequest(
        leader_pid=me,
        term=term,
        prev_log=(_prev_term(logs, i_prev), i_prev),
        entries=entries,
        i_leader_commit=logs.i_committed,
        leader_timestamp=now,
    )
    if not entries:
        return ("ok", req, logs)
    new_followers = dict(followers)  # type: ignore[arg-type]
    new_followers[follower] = (hi + 1, i_rep)
    return ("ok", req, _replace_value(logs, followers=new_followers))


def make_timeout_now_req(
    logs: Logs, term: int, follower: Any, now: int, me: Any
) -> AppendEntriesRequest | None:
    """An AppendEntriesRequest with every entry ``follower`` has not acknowledged, for TimeoutNow.

    ``None`` if the follower lags behind ``i_min`` (try again later).
    """
    fi = (logs.followers or {}).get(follower)
    if fi is None:
        return None
    i_prev = fi[1]
    if i_prev != 0 and i_prev < logs.i_min:
        return None
    return AppendEntriesRequest(
        leader_pid=me,
        term=term,
        prev_log=(_prev_term(logs, i_prev), i_prev),
        entries=slice_entries(logs.map, i_prev + 1, logs.i_max),
        i_leader_commit=logs.i_committed,
        leader_timestamp=now,
    )


def _quorum_index(followers: dict, members_set: set, me: Any, i_max: int) -> int:
    """Highest index that a majority of ``members_set`` (the leader holding all) has replicated."""
    if not members_set:
        return 0
    values = sorted((i_max if p == me else followers.get(p, (0, 0))[1] for p in members_set), reverse=True)
    return values[Members.majority(len(values)) - 1]  # the lowest index a majority holds


def _update_commit_index(logs: Logs, term: int, members_set: set, me: Any) -> Logs:
    # Membership changes take effect when appended, so the majority that commits an entry is
    # the membership as of that entry. Walk back from i_max, one segment per membership
    # change, and commit the highest entry of the current term a majority of its segment holds.
    m, i_c, i_max = logs.map, logs.i_committed, logs.i_max
    if i_max <= i_c or m[i_max][0] != term:
        return logs  # only an entry of the current term can be committed by counting
    followers = logs.followers or {}
    set_ = members_set
    upper = i_max
    while upper > i_c:
        k = upper
        while k > i_c and m[k][2] not in MEMBERSHIP_CHANGES:
            k -= 1
        lower = k if k > i_c else i_c + 1
        cand = min(_quorum_index(followers, set_, me, i_max), upper)
        if cand >= lower:
            if m[cand][0] == term:
                return _replace_value(logs, i_committed=cand)
            return logs  # terms never decrease along the log: nothing earlier is of this term
        if k <= i_c:
            break
        set_ = Members.revert_entry(set_, m[k])
        upper = k - 1
    return logs


def set_follower_index(
    logs: Logs, members: Members.Members, term: int, follower: Any, i_replicated: int, me: Any
) -> tuple[Logs, list[LogEntry]]:
    """Record that ``follower`` holds the leader's entries up to ``i_replicated``; advance the commit index.

    Returns the new log and the newly committed entries to apply.
    """
    followers = logs.followers or {}
    fi = followers.get(follower)
    if fi is None or follower not in members.all:
        return logs, []  # an ex-member's answer
    i_next, i_rep = fi
    i_replicated = min(i_replicated, logs.i_max)
    if i_replicated <= i_rep:
        return logs, []
    # in passing, forget followers that are no longer members
    new_followers = {p: v for p, v in followers.items() if p in members.all and p != me}
    new_followers[follower] = (max(i_next, i_replicated + 1), i_replicated)
    in_flight = logs.snapshots_in_flight
    sent = in_flight.get(follower)
    if sent is not None and i_replicated >= sent[0]:
        in_flight = {p: v for p, v in in_flight.items() if p != follower}
    new_logs = _replace_value(logs, followers=new_followers, snapshots_in_flight=in_flight)
    new_logs = _update_commit_index(new_logs, term, members.all, me)
    return new_logs, slice_entries(new_logs.map, logs.i_committed + 1, new_logs.i_committed)


def rewind_follower(logs: Logs, follower: Any, hint: int | None) -> Logs:
    """A follower rejected a request: resend from its hint (or one entry earlier without a hint)."""
    followers = logs.followers or {}
    fi = followers.get(follower)
    if fi is None:
        return logs
    i_next, i_rep = fi
    target = i_next - 1 if hint is None else hint + 1
    new_next = max(i_rep + 1, min(i_next, target))
    if new_next == i_next:
        return logs
    new_followers = dict(followers)
    new_followers[follower] = (new_next, i_rep)
    return _replace_value(logs, followers=new_followers)


def has_entries_to_send(logs: Logs, follower: Any, max_in_flight: int = MAX_ENTRIES_IN_FLIGHT) -> bool:
    fi = (logs.followers or {}).get(follower)
    if fi is None:
        return False
    i_next, i_rep = fi
    return i_next <= min(logs.i_max, i_rep + max_in_flight)


def forget_follower(logs: Logs, follower: Any) -> Logs:
    followers = logs.followers or {}
    if follower not in followers and follower not in logs.snapshots_in_flight:
        return logs
    return _replace_value(
        logs,
        followers={p: v for p, v in followers.items() if p != follower},
        snapshots_in_flight={p: v for p, v in logs.snapshots_in_flight.items() if p != follower},
    )


#
# for non-leader
#
def new_for_new_follower(last_committed_entry: LogEntry) -> Logs:
    return _new_with_last_entry(last_committed_entry)


def contain_given_prev_log(logs: Logs, prev_log: tuple[int, int]) -> bool:
    """Whether this log matches the leader's up to ``prev_log``.

    Committed entries match any legitimate leader's log (Raft's leader
    completeness), which also covers indices already truncated.
    """
    term_prev, i_prev = prev_log
    if i_prev <= logs.i_committed:
        return True
    e = logs.map.get(i_prev)
    return e is not None and e[0] == term_prev


def _uncommitted_membership_change(
    m: Mapping[int, LogEntry], i_committed: int, i_max: int
) -> LogEntry | None:
    for i in range(i_max, i_committed, -1):
        if m[i][2] in MEMBERSHIP_CHANGES:
            return m[i]
    return None


def append_entries(
    logs: Logs,
    members: Members.Members,
    prev_log: tuple[int, int],
    entries: list[LogEntry],
    i_leader_commit: int,
) -> tuple:
    """A follower handles the leader's entries.

    Returns ``("reject", hint)`` when the log does not match at
    ``prev_log`` (resend after index ``hint``), else ``("ok", logs, members,
    entries_to_apply, entries_to_persist, i_match)`` where ``i_match`` is the
    last index now known to match the leader's log.
    """
    term_prev, i_prev = prev_log
    if i_prev > logs.i_committed:
        if i_prev > logs.i_max:
            return ("reject", logs.i_max)
        if logs.map[i_prev][0] != term_prev:
            return ("reject", logs.i_committed)  # conflict: committed entries surely match
    m = logs.map
    new_map: LogMap | None = None
    new_members = members
    to_persist: list[LogEntry] = []
    i_max = logs.i_max
    for pos, e in enumerate(entries):
        idx = e[1]
        if idx <= logs.i_committed:
            continue
        if idx <= i_max:
            if m[idx][0] == e[0]:
                continue  # already have it (a duplicate or reordered request)
            # conflict: drop this entry and everything after it, undoing membership changes
            # (a narrower view: the shared store is left as it is, the append below copies)
            all_ = new_members.all
            for j in range(i_max, idx - 1, -1):
                all_ = Members.revert_entry(all_, m[j])
            i_max = idx - 1
            new_map = m.truncated(logs.i_min, i_max)
            change = _uncommitted_membership_change(new_map, logs.i_committed, i_max)
            new_members = _replace_value(new_members, all=all_, uncommitted_membership_change=change)
        rest = entries[pos:]
        new_map = (m if new_map is None else new_map).appended(list(rest))
        for e2 in rest:
            to_persist.append(e2)
            new_members = Members.apply_entry(new_members, e2)
        i_max = max(i_max, entries[-1][1])
        break
    i_match = entries[-1][1] if entries else i_prev
    i_committed = max(logs.i_committed, min(i_leader_commit, i_match))
    final_map = m if new_map is None else new_map
    if new_map is None and i_committed == logs.i_committed:
        new_logs = logs
    else:
        new_logs = _replace_value(logs, map=final_map, i_max=i_max, i_committed=i_committed)
    to_apply = slice_entries(final_map, logs.i_committed + 1, i_committed)
    return ("ok", new_logs, new_members, to_apply, to_persist, i_match)


def candidate_log_up_to_date(logs: Logs, candidate_last_log: tuple[int, int]) -> bool:
    e = logs.map[logs.i_max]
    return (e[0], e[1]) <= tuple(candidate_last_log)


def truncate_old_logs(logs: Logs, removable_upto: int, keep: int = EXTRA_ENTRIES_KEPT_IN_MEMORY) -> Logs:
    """Drop entries older than ``removable_upto - keep`` (``removable_upto`` is committed and,
    with persistence, covered by a snapshot), bounding memory under a long stream of commands."""
    new_i_min = min(removable_upto, logs.i_committed) - keep + 1
    if new_i_min <= logs.i_min:
        return logs
    return _replace_value(logs, map=logs.map.truncated(new_i_min, logs.i_max), i_min=new_i_min)

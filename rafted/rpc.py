"""Member-to-member messages (``RaftedValue.RPC``): compact slotted dataclasses.

All of them carry the sender's ``term`` (:class:`TimeoutNow` in its
request; :class:`InstallSnapshotCompressed` optionally). A test communication module can recognise them
by type to drop or delay them. ``from`` is a Python keyword, so the sender
field is ``from_``.

Differences from the original, both for faster catch-up:
``AppendEntriesResponse.i_replicated`` on a rejection is the follower's hint
(the index after which the leader should resend), and followers answer an
``InstallSnapshot`` with an ``AppendEntriesResponse``.
"""

from __future__ import annotations

import copyreg
import dataclasses
import operator
from dataclasses import dataclass
from typing import Any

from rafted import _codec

__all__ = [
    "Entries",
    "AppendEntriesRequest",
    "AppendEntriesResponse",
    "RequestVoteRequest",
    "RequestVoteResponse",
    "InstallSnapshot",
    "InstallSnapshotCompressed",
    "TimeoutNow",
    "MEMBER_MESSAGES",
]


class Entries(list):  # type: ignore[type-arg]
    """The entries a leader sends: a list that is pickled once however many followers get it.

    A leader sends the same entries to every follower at the same position in its log
    (:func:`rafted.logs.make_append_entries_req` shares the object between them); the
    first pickle is kept and reused for the others, so a batch is serialized once, not once
    per follower. Unpickled, it is a plain list. Never modify one after it was sent.
    """

    __slots__ = ("_pickled",)
    _pickled: bytes

    def __reduce__(self) -> tuple[Any, ...]:
        try:
            blob = self._pickled
        except AttributeError:
            blob = self._pickled = _codec.dumps(list(self))
        return (_codec.loads, (blob,))


@dataclass(slots=True)
class AppendEntriesRequest:
    """Log replication and heartbeat from the leader.

    ``prev_log`` is ``(term, index)`` of the entry just before ``entries``;
    ``leader_timestamp`` (leader's monotonic ms at send) is echoed back and
    drives the leader lease and the quorum check.
    """

    leader_pid: Any
    term: int
    prev_log: tuple[int, int]
    entries: list
    i_leader_commit: int
    leader_timestamp: int


@dataclass(slots=True)
class AppendEntriesResponse:
    """A follower's answer to one (or a batch of) AppendEntriesRequest / InstallSnapshot.

    On success ``i_replicated`` is the last index known to match the
    leader's log; on failure it is the follower's hint: resend from
    ``i_replicated + 1``.
    """

    from_: Any
    term: int
    success: bool
    i_replicated: int | None
    leader_timestamp: int


@dataclass(slots=True)
class RequestVoteRequest:
    """A candidate asking for a vote; ``replacing_leader`` marks a hand-over started by TimeoutNow."""

    term: int
    candidate_pid: Any
    last_log: tuple[int, int]
    replacing_leader: bool = False


@dataclass(slots=True)
class RequestVoteResponse:
    """The answer to a RequestVoteRequest."""

    from_: Any
    term: int
    vote_granted: bool


@dataclass(slots=True)
class InstallSnapshot:
    """The whole replicated state, for a joining member or a follower that lags behind the leader's log."""

    members: Any
    term: int
    last_committed_entry: tuple
    config: Any
    data: Any
    command_results: Any


@dataclass(slots=True)
class InstallSnapshotCompressed:
    """A snapshot file's bytes, sent by persisting leaders (see :mod:`rafted.snapshot`).

    The file was written earlier, perhaps under another term or leader, so
    (beyond the original) the sender adds its current ``term`` and its pid
    as ``leader_pid``; ``None`` means: take them from the snapshot.
    """

    bin: bytes
    term: int | None = None
    leader_pid: Any = None


@dataclass(slots=True)
class TimeoutNow:
    """Leader hand-over: catch up with ``append_entries_req`` and start an election at once."""

    append_entries_req: AppendEntriesRequest

    @property
    def term(self) -> int:
        return self.append_entries_req.term


MEMBER_MESSAGES = (
    AppendEntriesRequest,
    AppendEntriesResponse,
    RequestVoteRequest,
    RequestVoteResponse,
    InstallSnapshot,
    InstallSnapshotCompressed,
    TimeoutNow,
)


def _pickle_by_fields(cls: type) -> None:
    """Pickle ``cls`` as ``cls(*fields)``, its field values taken by C getters.

    A slotted dataclass otherwise pickles as a new object plus a dict of its slots, set one by
    one when unpickled: 2.4 µs each way for an AppendEntriesResponse, against 1.7 this way,
    and every AppendEntries round pickles two requests and two responses on the leader, one of
    each on a follower, on the path a command waits on.
    """
    names = tuple(f.name for f in dataclasses.fields(cls))
    cls._pickled_fields = property(operator.attrgetter(*names))  # type: ignore[attr-defined]
    copyreg.pickle(cls, operator.attrgetter("__class__", "_pickled_fields"))


for _cls in MEMBER_MESSAGES:
    # attrgetter of one name returns the value, not a tuple: TimeoutNow, with one field, keeps
    # the default way
    if len(dataclasses.fields(_cls)) > 1:
        _pickle_by_fields(_cls)

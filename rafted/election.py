"""Votes and the election time-out (``RaftedValue.Election``).

Pure data and functions: no timer lives here. ``deadline`` is the monotonic
time (ms) at which a follower or candidate starts a new election;
``leader_message_at`` is when it last heard from a leader, which is what
lets it refuse disruptive vote requests. Times and the randomized
time-out come in as arguments (see :func:`random_timeout`); the server
arms one real timer for the nearest deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from rafted._values import replace as _replace_value
from rafted.members import majority

__all__ = [
    "Election",
    "random_timeout",
    "new_for_leader",
    "new_for_follower",
    "update_for_candidate",
    "update_for_follower",
    "vote_for",
    "gain_vote",
    "reset_timer",
    "timed_out",
    "minimum_timeout_elapsed_since_last_leader_message",
    "early_deadline",
]


@dataclass(slots=True)
class Election:
    """Election bookkeeping of one member. Treated as immutable."""

    voted_for: Any = None
    votes: set | None = None
    deadline: int | None = None
    leader_message_at: int | None = None


def random_timeout(election_timeout: int, rng: random.Random | None = None) -> int:
    """A time-out in ``election_timeout + 1 .. 2 * election_timeout`` ms.

    The original's ``timeout + :rand.uniform(timeout)``; ``rng`` makes it reproducible.
    """
    r = rng.randint(1, election_timeout) if rng is not None else random.randint(1, election_timeout)
    return election_timeout + r


def new_for_leader(me: Any) -> Election:
    return Election(voted_for=me)


def new_for_follower(now: int, timeout: int) -> Election:
    # a fresh follower has just heard from the leader (it joined through it)
    return Election(deadline=now + timeout, leader_message_at=now)


def update_for_candidate(e: Election, me: Any, now: int, timeout: int) -> Election:
    return _replace_value(e, voted_for=me, votes={me}, deadline=now + timeout)


def update_for_follower(e: Election, now: int, timeout: int, new_term: bool) -> Election:
    """Election state of a member that becomes a follower.

    The vote is forgotten only when the term changes: a leader that steps
    down within its own term must not vote a second time in that term.
    ``leader_message_at`` is kept, so a deposed leader does not trust itself.
    """
    return _replace_value(
        e,
        voted_for=None if new_term else e.voted_for,
        votes=None,
        deadline=now + timeout,
    )


def vote_for(e: Election, candidate: Any, now: int, timeout: int) -> Election:
    return _replace_value(e, voted_for=candidate, deadline=now + timeout)


def gain_vote(e: Election, all_members: set, voter: Any) -> tuple[Election, bool]:
    """Count ``voter``'s vote; True when the votes of current members form a majority."""
    votes = (e.votes or set()) | {voter}
    won = len(votes & all_members) >= majority(len(all_members))
    return _replace_value(e, votes=votes, deadline=None if won else e.deadline), won


def reset_timer(e: Election, now: int, timeout: int) -> Election:
    """Called on every message from a valid leader."""
    return _replace_value(e, deadline=now + timeout, leader_message_at=now)


def timed_out(e: Election, now: int) -> bool:
    return e.deadline is not None and now >= e.deadline


def minimum_timeout_elapsed_since_last_leader_message(e: Election, config: Any, now: int) -> bool:
    """True once this member may vote for another leader (``config.vote_refusal_ms`` after its
    last message from the one it trusted, whose lease has then run out)."""
    t = e.leader_message_at
    if t is None:
        return True
    return t + config.vote_refusal_ms <= now


def early_deadline(config: Any, now: int, rank: int) -> int:
    """When a follower that learns at ``now`` that its leader is gone starts an election (beyond
    the original), then ``rank`` turns of ``heartbeat_timeout`` later so that members do not
    split the vote.

    As soon as every other member will grant votes. Without a lease, at once. With one, a
    member refuses votes until ``vote_refusal_ms`` after *its own* last message from the
    leader, which may have come a little later than ours; but none came after the leader was
    gone (give or take one in flight), and it was gone by ``now``: so ``now +
    vote_refusal_ms`` and a heartbeat interval for what was in flight. Counting from our own
    last message instead would start too soon whenever another member heard from the leader
    last, and a refused election leaves the candidate waiting out a whole election time-out.
    """
    if config.vote_refusal_ms <= 0:
        return now + rank * config.heartbeat_timeout
    return now + config.vote_refusal_ms + (1 + rank) * config.heartbeat_timeout

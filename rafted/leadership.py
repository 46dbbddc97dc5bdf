"""What a leader knows about its followers' liveness (``RaftedValue.Leadership``).

Pure data and functions: the heartbeat and quorum "timers" are deadlines
(monotonic ms) that the server turns into one real timer. Followers echo
the leader's send timestamp, so every comparison here uses the leader's own
clock: the lease (``election_timeout - margin`` after a majority last
answered) and the quorum check (step down when no majority answered within
``2 * election_timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rafted._values import replace as _replace_value
from rafted.members import majority

__all__ = [
    "Leadership",
    "new_for_leader",
    "heartbeat_sent",
    "follower_responded",
    "quorum_last_reached_at",
    "quorum_deadline",
    "cannot_reach_quorum",
    "unresponsive_followers",
    "can_safely_remove",
    "remove_follower_response_time_entry",
    "lease_expired",
    "lease_restarted",
    "lease_confirmed_by",
    "max_election_timeout",
]


@dataclass(slots=True)
class Leadership:
    """Liveness bookkeeping of a leader. Treated as immutable.

    ``follower_responded_times`` maps follower -> latest leader timestamp it
    answered; ``quorum_timer_started_at`` is when the leader last knew it had
    a majority (or became leader).  After a config that lengthens the lease,
    ``lease_restart`` is ``(when it was applied, its entry's index)`` and only the followers
    in ``lease_confirmed`` count towards the lease (see :func:`lease_restarted`).
    """

    heartbeat_due_at: int
    quorum_timer_started_at: int
    follower_responded_times: dict = field(default_factory=dict)
    lease_restart: tuple[int, int] | None = None
    lease_confirmed: frozenset = frozenset()


def max_election_timeout(config: Any) -> int:
    return 2 * config.election_timeout


def new_for_leader(now: int, config: Any) -> Leadership:
    return Leadership(heartbeat_due_at=now + config.heartbeat_timeout, quorum_timer_started_at=now)


def heartbeat_sent(l: Leadership, now: int, config: Any) -> Leadership:  # noqa: E741
    return _replace_value(l, heartbeat_due_at=now + config.heartbeat_timeout)


def _is_lonely(members: Any, me: Any) -> bool:
    return len(members.all) <= 1


def quorum_last_reached_at(l: Leadership, members: Any, me: Any,  # noqa: E741
                           among: frozenset | None = None) -> int | None:
    """Latest leader timestamp such that a majority (the leader included) answered at or after it,
    counting only the followers ``among`` when given.

    ``None`` for a lonely leader or when too few followers have answered yet.
    """
    n = len(members.all)
    if n <= 1:
        return None
    needed = majority(n) - (1 if me in members.all else 0)  # followers needed besides the leader
    all_ = members.all if among is None else members.all & among
    times = sorted((t for p, t in l.follower_responded_times.items() if p in all_ and p != me), reverse=True)
    if len(times) < needed:
        return None
    return times[needed - 1]


def follower_responded(l: Leadership, members: Any, follower: Any, timestamp: int, me: Any) -> Leadership:  # noqa: E741
    """Record that ``follower`` answered a message the leader sent at ``timestamp``."""
    if follower == me or follower not in members.all:
        return l  # an ex-member's answer must not count towards the quorum
    times = l.follower_responded_times
    old = times.get(follower)
    if old is not None and old >= timestamp:
        return l
    new_times = {p: t for p, t in times.items() if p in members.all}
    new_times[follower] = timestamp
    new_l = _replace_value(l, follower_responded_times=new_times)
    reached = quorum_last_reached_at(new_l, members, me)
    if reached is not None and reached > new_l.quorum_timer_started_at:
        new_l.quorum_timer_started_at = reached  # new_l is a fresh copy: safe to set
    return new_l


def quorum_deadline(l: Leadership, members: Any, me: Any, config: Any) -> int | None:  # noqa: E741
    """When the leader must step down unless a majority answers; ``None`` for a lonely leader."""
    if _is_lonely(members, me):
        return None
    return l.quorum_timer_started_at + max_election_timeout(config)


def cannot_reach_quorum(l: Leadership, members: Any, me: Any, now: int, config: Any) -> bool:  # noqa: E741
    d = quorum_deadline(l, members, me, config)
    return d is not None and now >= d


def unresponsive_followers(l: Leadership, members: Any, me: Any, now: int, config: Any) -> list:  # noqa: E741
    """Followers that did not answer any message sent in the last ``2 * election_timeout`` ms."""
    since = now - max_election_timeout(config)
    times = l.follower_responded_times
    out = [p for p in members.all if p != me and (times.get(p) is None or times[p] < since)]
    try:
        out.sort()
    except TypeError:
        pass
    return out


def can_safely_remove(l: Leadership, members: Any, follower: Any, me: Any, now: int, config: Any) -> bool:  # noqa: E741
    """False when removing the healthy ``follower`` would leave the healthy members short of a majority."""
    unhealthy = unresponsive_followers(l, members, me, now, config)
    if follower in unhealthy:
        return True  # an unresponsive follower can always be removed
    n_after = len(members.all) - 1
    n_healthy_after = n_after - len(unhealthy)
    return n_healthy_after >= majority(n_after)


def remove_follower_response_time_entry(l: Leadership, follower: Any) -> Leadership:  # noqa: E741
    if follower not in l.follower_responded_times:
        return l
    times = dict(l.follower_responded_times)
    del times[follower]
    return _replace_value(l, follower_responded_times=times)


def lease_expired(l: Leadership, members: Any, me: Any, now: int, config: Any) -> bool:  # noqa: E741
    """Whether the leader may no longer assume that nobody else has been elected.

    A lonely leader is its own majority: its lease never expires.
    """
    if _is_lonely(members, me) and me in members.all:
        return False
    among = None if l.lease_restart is None else l.lease_confirmed
    reached = quorum_last_reached_at(l, members, me, among)
    if reached is None:
        return True
    return reached + config.lease_ms <= now


def lease_restarted(l: Leadership, now: int, index: int) -> Leadership:  # noqa: E741
    """The leader applied, at ``now``, a config (entry ``index``) that lengthens the lease.

    Its followers apply it only when they learn that it committed, and until then refuse votes
    only for as long as the old config says: a follower counts towards the lease again once it
    has been seen to apply it (:func:`lease_confirmed_by`), whatever it answered before.
    """
    return _replace_value(l, lease_restart=(now, index), lease_confirmed=frozenset())


def lease_confirmed_by(l: Leadership, follower: Any, timestamp: int, i_replicated: int) -> Leadership:  # noqa: E741
    """``follower`` accepted a message sent at ``timestamp`` and holds the log up to
    ``i_replicated``: when that message left after the lengthening config was applied (so it
    told the follower of its commit) and the follower holds the config's entry, the follower
    has applied it before answering (config entries are applied first)."""
    r = l.lease_restart
    if r is None or follower in l.lease_confirmed or timestamp <= r[0] or i_replicated < r[1]:
        return l
    return _replace_value(l, lease_confirmed=l.lease_confirmed | {follower})

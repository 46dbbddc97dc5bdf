"""The member configuration (``RaftedValue.Config``) and its validation.

A :class:`Config` is a frozen dataclass with the original's field names, so
``dataclasses.replace(config, election_timeout=600)`` is the port of
``Map.put(config, :election_timeout, 600)``. Configs travel inside snapshots
and ``change_config`` log entries, hence they compare with ``==``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import nodes
from rafted.communication import RemoteMessageGateway, check_communication_module
from rafted.data import check_data_module
from rafted.leader_hook import NoOp, check_leader_hook_module

__all__ = ["Config", "make_config"]


def _check_positive_int(name: str, value: Any) -> None:
    # bool is an int subclass; True as a time-out is certainly a mistake
    what = "a positive int" if name == "max_retained_command_results" else "a positive int (milliseconds)"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if value > nodes.MAX_TIMEOUT_MS:  # a timer that long would not arm (see nodes.MAX_TIMEOUT_MS)
        raise ValueError(f"{name} must be at most {nodes.MAX_TIMEOUT_MS}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings shared by every member of a consensus group.

    ``election_timeout`` is the minimum; each member picks its time-out at
    random in ``election_timeout .. 2 * election_timeout``.
    ``election_timeout_clock_drift_margin`` sets the leader lease to
    ``election_timeout - margin`` ms; equal to ``election_timeout`` (the
    default) or larger disables the lease (the original accepts any positive
    margin, so this port does too).
    """

    data_module: Any
    leader_hook_module: Any = NoOp
    communication_module: Any = RemoteMessageGateway
    heartbeat_timeout: int = 200
    election_timeout: int = 1000
    election_timeout_clock_drift_margin: int = 1000
    max_retained_command_results: int = 100

    def __post_init__(self) -> None:
        # Checked on every construction, including dataclasses.replace().
        check_data_module(self.data_module)
        check_leader_hook_module(self.leader_hook_module)
        check_communication_module(self.communication_module)
        for name in (
            "heartbeat_timeout",
            "election_timeout",
            "election_timeout_clock_drift_margin",
            "max_retained_command_results",
        ):
            _check_positive_int(name, getattr(self, name))

    @property
    def lease_ms(self) -> int:
        """How long after a majority answered a leader's message, timed on the leader's clock from
        its sending, the leader answers queries alone: ``election_timeout -
        election_timeout_clock_drift_margin`` ms (0 or less: no lease)."""
        return self.election_timeout - self.election_timeout_clock_drift_margin

    @property
    def vote_refusal_ms(self) -> int:
        """How long after its last message from the leader a follower refuses to vote for anybody
        else: with a lease, the whole ``election_timeout`` (Raft's minimum election time-out),
        so that the margin covers a follower's clock running fast against the leader's (the
        original refuses for ``lease_ms`` only, which leaves the margin no room for drift);
        without one, not at all, as in the original."""
        return self.election_timeout if self.lease_ms > 0 else 0


def make_config(
    data_module: Any,
    heartbeat_timeout: int = 200,
    election_timeout: int = 1000,
    election_timeout_clock_drift_margin: int | None = None,
    max_retained_command_results: int = 100,
    leader_hook_module: Any = None,
    communication_module: Any = None,
) -> Config:
    """Build a validated :class:`Config` (``RaftedValue.make_config``).

    ``None`` for the margin means ``election_timeout`` (no lease); ``None``
    hook / communication modules mean the defaults (:class:`rafted.leader_hook.NoOp`,
    :class:`rafted.communication.RemoteMessageGateway`). Raises TypeError or
    ValueError naming the offending option.
    """
    _check_positive_int("election_timeout", election_timeout)
    margin = election_timeout_clock_drift_margin
    if margin is None:
        margin = election_timeout
    return Config(
        data_module=data_module,
        leader_hook_module=NoOp if leader_hook_module is None else leader_hook_module,
        communication_module=RemoteMessageGateway if communication_module is None else communication_module,
        heartbeat_timeout=heartbeat_timeout,
        election_timeout=election_timeout,
        election_timeout_clock_drift_margin=margin,
        max_retained_command_results=max_retained_command_results,
    )

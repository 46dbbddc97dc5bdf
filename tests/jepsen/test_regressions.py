"""Failing schedules the campaigns found, kept as deterministic tests.

1. ``--trust-noproc`` campaign, seed 51 (kill faults only): a client's cas was in flight
   when the leader's node was SIGKILLed; ``RaftedValue.command`` answered
   ``("error", "noproc")`` -- which in the Elixir original means "the member did not
   exist, nothing was done" -- yet the cas had been committed and a later read saw its
   value.  rafted folded a lost connection (``nodedown`` / ``noconnection``) and a killed
   member into ``noproc``.  Now those are ``("error", "timeout")``: outcome unknown,
   retry with the same id.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest
from nodecluster import wait_until

import nodes
from rafted import RaftedValue

from .regressions import DropWriteReplies
from .workload import KV, start_member

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


def _wait(pred: Any, timeout: float, what: str) -> Any:
    return wait_until(pred, timeout, what, interval=0.05)


def test_a_command_lost_with_the_leaders_node_is_unknown_not_noproc(node_cluster: Any) -> None:
    n1, n2, n3 = (node_cluster.start_node() for _ in range(3))
    config = RaftedValue.make_config(KV, heartbeat_timeout=50, election_timeout=500,
                                     election_timeout_clock_drift_margin=100,
                                     communication_module=DropWriteReplies)
    ok, leader = nodes.rpc.call(n1.name, start_member, ("create_new_consensus_group", config), "kv", 10_000)
    assert ok == "ok"
    followers = []
    for n in (n2, n3):
        ok, pid = nodes.rpc.call(n.name, start_member, ("join_existing_consensus_group", [leader]), "kv",
                                 10_000)
        assert ok == "ok"
        followers.append(pid)

    result: list[Any] = []
    caller = threading.Thread(
        target=lambda: result.append(RaftedValue.command(leader, ("write", "k", "v"), timeout=30_000,
                                                         id="the-write")))
    caller.start()
    try:
        # the write commits and is applied everywhere; only its reply is lost
        _wait(lambda: all(RaftedValue.query_non_leader(f, ("read", "k")) == ("ok", "v") for f in followers),
              20, "the write to reach the followers")
        n1.signal(signal.SIGKILL)  # the leader's node dies before the caller heard anything
    finally:
        caller.join(60)
    assert result, "the command did not return"
    # the write was applied: "noproc" ("certainly not done") would be a lie
    assert result[0] == ("error", "timeout"), result
    new_leader = _wait(lambda: next((f for f in followers if RaftedValue.status(f)["state_name"] == "leader"),
                                    None), 20, "a new leader")
    assert RaftedValue.query(new_leader, ("read", "k")) == ("ok", "v")
    # a retry with the same id is answered from the cache (its reply is lost too): applied once
    RaftedValue.command(new_leader, ("write", "k", "v2"), timeout=1000, id="the-write")
    assert RaftedValue.query(new_leader, ("read", "k")) == ("ok", "v")

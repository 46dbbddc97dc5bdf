"""A consensus group over real node OS processes: the seed README's example, then a node dies.

The data module is defined inside the test (like a class typed into a
shell), so it travels by value inside the config and the snapshots.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import nodecluster
import pytest
from rafted_support import make_lock_maker

import nodes
import rafted
from nodes import dist
from rafted import RaftedValue
from rafted.logs import EXTRA_ENTRIES_KEPT_IN_MEMORY

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


def make_queue_with_length() -> Any:
    class QueueWithLength(rafted.Data):
        def new():
            return ((), 0)

        def command(state, arg):
            q, n = state
            if arg == "dequeue":
                return q[0], (q[1:], n - 1)
            _, v = arg  # ("enqueue", v)
            return n, (q + (v,), n + 1)

        def query(state, arg):
            return state[1]

    return QueueWithLength


def member_starter() -> Any:
    """The function rpc runs on a node to start a member there.

    It is made inside a function, so it travels by value: this module cannot be imported on
    the nodes."""

    def start_member(group_info: Any, name: str) -> Any:
        import rafted as r

        return r.RaftedValue.start_link(group_info, name=name)

    return start_member


def find_leader(servers: list) -> Any:
    for s in servers:
        try:
            st = RaftedValue.status(s, 1000)
        except nodes.Exit:
            continue
        if st["state_name"] == "leader":
            return s
    return None


def wait_until(pred: Any, timeout: float, what: str) -> Any:
    return nodecluster.wait_until(pred, timeout, what, interval=0.02)


def test_seed_example_across_three_nodes_and_failover(node_cluster: Any) -> None:
    start_member = member_starter()

    n1, n2, n3 = (node_cluster.start_node() for _ in range(3))
    config = RaftedValue.make_config(
        make_queue_with_length(),
        heartbeat_timeout=50,
        election_timeout=400,
        election_timeout_clock_drift_margin=100,
    )
    assert nodes.rpc.call(n1.name, start_member, ("create_new_consensus_group", config), "foo")[0] == "ok"
    foo = ("foo", n1.name)
    join = ("join_existing_consensus_group", [foo])
    assert nodes.rpc.call(n2.name, start_member, join, "bar")[0] == "ok"
    assert nodes.rpc.call(n3.name, start_member, join, "baz")[0] == "ok"
    bar, baz = ("bar", n2.name), ("baz", n3.name)

    for i, v in enumerate("abcde"):
        assert RaftedValue.command(foo, ("enqueue", v)) == ("ok", i)
    assert RaftedValue.command(foo, "dequeue") == ("ok", "a")
    assert RaftedValue.command(foo, "dequeue") == ("ok", "b")
    assert RaftedValue.command(foo, ("enqueue", "f")) == ("ok", 3)
    assert RaftedValue.query(foo, "length") == ("ok", 4)
    assert RaftedValue.command(bar, "dequeue") == (
        "error",
        ("not_leader", nodes.rpc.call(n1.name, nodes.whereis, "foo")),
    )
    status = RaftedValue.status(foo)
    assert len(status["members"]) == 3 and {p.node for p in status["members"]} == {n1.name, n2.name, n3.name}
    wait_until(lambda: RaftedValue.query_non_leader(baz, "length") == ("ok", 4), 5, "baz to catch up")

    # the leader's node dies: the others elect a new leader and keep the value
    n1.signal(signal.SIGKILL)
    leader = wait_until(lambda: find_leader([bar, baz]), 10, "a new leader")
    assert RaftedValue.command(leader, "dequeue") == ("ok", "c")
    assert RaftedValue.query(leader, "length") == ("ok", 3)


def test_when_the_leaders_node_dies_the_followers_elect_at_once(node_cluster: Any) -> None:
    """The followers' nodes see the TCP connection close and their members the leader's DOWN
    (noconnection): a new leader within moments, where the 30-60 s time-out would still run.
    The nodes' ticks are a minute apart, so it is not they that tell."""
    start_member = member_starter()
    n1, n2, n3 = (node_cluster.start_node(env={"NODES_TICK_MS": "60000"}) for _ in range(3))
    config = RaftedValue.make_config(make_queue_with_length(), heartbeat_timeout=100, election_timeout=30_000)
    assert nodes.rpc.call(n1.name, start_member, ("create_new_consensus_group", config), "foo")[0] == "ok"
    join = ("join_existing_consensus_group", [("foo", n1.name)])
    assert nodes.rpc.call(n2.name, start_member, join, "bar")[0] == "ok"
    assert nodes.rpc.call(n3.name, start_member, join, "baz")[0] == "ok"
    assert RaftedValue.command(("foo", n1.name), ("enqueue", "a")) == ("ok", 0)
    bar, baz = ("bar", n2.name), ("baz", n3.name)
    wait_until(lambda: all(RaftedValue.query_non_leader(m, "length") == ("ok", 1) for m in (bar, baz)), 10,
               "the followers to hold the entry")
    term = RaftedValue.status(bar)["current_term"]
    n1.signal(signal.SIGKILL)
    leader = wait_until(lambda: find_leader([bar, baz]), 10, "a new leader")
    assert RaftedValue.status(leader)["current_term"] == term + 1  # one election
    assert RaftedValue.command(leader, "dequeue") == ("ok", "a")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and at least two usable CPUs")
def test_the_leaders_node_keeps_its_threads_on_one_cpu_and_hands_that_over_with_leadership(
        node_cluster: Any) -> None:
    start_member = member_starter()

    def process_cpus() -> list[int]:
        # rpc runs this in a fresh process of the node: a runtime thread like the member's
        return sorted(os.sched_getaffinity(0))

    everywhere = sorted(os.sched_getaffinity(0))
    n1, n2 = node_cluster.start_node(), node_cluster.start_node()
    config = RaftedValue.make_config(make_queue_with_length())
    assert nodes.rpc.call(n1.name, start_member, ("create_new_consensus_group", config), "foo")[0] == "ok"
    foo, bar = ("foo", n1.name), ("bar", n2.name)
    assert nodes.rpc.call(n2.name, start_member, ("join_existing_consensus_group", [foo]), "bar")[0] == "ok"

    held = nodes.rpc.call(n1.name, process_cpus)
    assert len(held) == 1 and held[0] in everywhere  # the lonely leader held it from its start
    assert nodes.rpc.call(n2.name, process_cpus) == everywhere  # a follower's node is left free

    bar_pid = nodes.rpc.call(n2.name, nodes.whereis, "bar")
    assert RaftedValue.replace_leader(foo, bar_pid) == "ok"
    wait_until(lambda: len(nodes.rpc.call(n2.name, process_cpus)) == 1, 10,
               "the new leader's node to hold a CPU")
    wait_until(lambda: nodes.rpc.call(n1.name, process_cpus) == everywhere, 10,
               "the old leader's node to let its CPU go")
    assert RaftedValue.command(bar, ("enqueue", "x")) == ("ok", 0)


def test_a_leader_refuses_what_it_could_not_send_to_the_other_nodes_and_goes_on(node_cluster: Any) -> None:
    """A client on the leader's node hands it objects no pickler can serialize: the leader must
    neither crash nor get stuck on an entry it can never replicate."""

    start_member = member_starter()

    def on_this_node(fn_name: str, arg_kind: str) -> Any:
        # the client runs on the leader's node: nothing is pickled on the way in
        import threading

        import rafted as r

        arg = threading.Lock() if arg_kind == "lock" else "inc"
        return getattr(r.RaftedValue, fn_name)("m", arg)

    n1, n2, n3 = (node_cluster.start_node() for _ in range(3))
    # "lock" makes a result that could not travel back to a client on another node
    config = RaftedValue.make_config(make_lock_maker())  # no lease: a query goes through the log
    assert nodes.rpc.call(n1.name, start_member, ("create_new_consensus_group", config), "m")[0] == "ok"
    join = ("join_existing_consensus_group", [("m", n1.name)])
    assert nodes.rpc.call(n2.name, start_member, join, "m")[0] == "ok"
    assert nodes.rpc.call(n3.name, start_member, join, "m")[0] == "ok"
    leader = ("m", n1.name)
    assert RaftedValue.command(leader, "inc") == ("ok", 0)
    term = RaftedValue.status(leader)["current_term"]

    r = nodes.rpc.call(n1.name, on_this_node, "command", "lock")
    assert r[0] == "error" and r[1][0] == "command_failed" and "serialize" in r[1][1], r
    r = nodes.rpc.call(n1.name, on_this_node, "query", "lock")
    assert r[0] == "error" and r[1][0] == "query_failed" and "serialize" in r[1][1], r
    # a result that could not reach a client on another node fails the command, the value unchanged
    r = RaftedValue.command(leader, "lock")
    assert r[0] == "error" and r[1][0] == "command_failed" and "cannot be serialized" in r[1][1], r
    # so does a query's, at once, where its caller waited out the whole time-out
    for fn, member in ((RaftedValue.query, leader), (RaftedValue.query_non_leader, ("m", n2.name))):
        r = fn(member, "lock", timeout=60_000)
        assert r[0] == "error" and r[1][0] == "query_failed" and "cannot be serialized" in r[1][1], r

    assert RaftedValue.command(leader, "inc") == ("ok", 1)
    status = RaftedValue.status(leader)
    assert status["state_name"] == "leader" and status["current_term"] == term
    # the followers have everything the leader committed
    for f in (("m", n2.name), ("m", n3.name)):
        wait_until(lambda f=f: RaftedValue.query_non_leader(f, None) == ("ok", 2), 5, f"{f} to catch up")


def test_a_joiner_on_another_node_is_refused_when_the_value_cannot_travel(node_cluster: Any) -> None:
    class Poisonable(rafted.Data):
        def new():
            return (0, None)

        def command(state, arg):
            import threading

            n, extra = state
            return n, (n + 1, threading.Lock() if arg == "poison" else extra)

        def query(state, arg):
            return state[0]

    start_member = member_starter()

    n1, n2 = (node_cluster.start_node() for _ in range(2))
    config = RaftedValue.make_config(Poisonable)
    assert nodes.rpc.call(n1.name, start_member, ("create_new_consensus_group", config), "m")[0] == "ok"
    leader = ("m", n1.name)
    assert RaftedValue.command(leader, "poison") == ("ok", 0)  # the value now holds a lock

    r = nodes.rpc.call(n2.name, start_member, ("join_existing_consensus_group", [leader]), "m")
    assert r[0] == "error" and r[1][0] == "cannot_serialize_snapshot", r
    # refused before it counted: the group is still the lonely leader, and it goes on
    status = RaftedValue.status(leader)
    assert status["state_name"] == "leader" and len(status["members"]) == 1, status
    assert RaftedValue.command(leader, "inc") == ("ok", 1)


def test_a_follower_cut_off_under_load_is_caught_up_after_the_heal_while_the_leaders_log_stays_bounded(
        node_cluster: Any) -> None:
    """A lagging follower is caught up without unbounded growth: while one follower is cut off the
    other keeps a quorum, every command commits, and the leader keeps no entries for the missing
    follower (its in-memory log holds the committed tail it always keeps and nothing more, however
    many commands go by); after the heal that follower gets the whole value."""
    start_member = member_starter()

    def commands_on_this_node(count: int, first: int) -> Any:
        # the client runs beside the leader (as in the benchmark) and looks at the leader's log as it goes
        import nodes as n
        import rafted as r

        longest = 0
        for i in range(first, first + count):
            result = r.RaftedValue.command("c", "inc")
            if result != ("ok", i):
                return ("unexpected", i, result)
            if i % 50 == 0:
                longest = max(longest, len(n.sys.get_state("c")[1].logs.map))
        return ("ok", longest)

    n1, n2, n3 = (node_cluster.start_node() for _ in range(3))
    # a counter: "inc" answers the value before it (the lock is never asked for here)
    config = RaftedValue.make_config(make_lock_maker(), heartbeat_timeout=50, election_timeout=400)
    assert nodes.rpc.call(n1.name, start_member, ("create_new_consensus_group", config), "c")[0] == "ok"
    join = ("join_existing_consensus_group", [("c", n1.name)])
    assert nodes.rpc.call(n2.name, start_member, join, "c")[0] == "ok"
    assert nodes.rpc.call(n3.name, start_member, join, "c")[0] == "ok"
    leader, cut_off = ("c", n1.name), ("c", n3.name)
    assert RaftedValue.command(leader, "inc") == ("ok", 0)
    cut_off_pid = nodes.rpc.call(n3.name, nodes.whereis, "c")

    # both sides drop each other's frames; this node (the harness) still reaches every node
    assert nodes.rpc.call(n3.name, dist.partition, [n1.name, n2.name]) is None
    for n in (n1, n2):
        assert nodes.rpc.call(n.name, dist.partition, [n3.name]) is None
    wait_until(lambda: cut_off_pid in RaftedValue.status(leader)["unresponsive_followers"], 10,
               "the leader to see the follower gone")

    total = 3000  # three times the entries a follower may have in flight
    result = nodes.rpc.call(n1.name, commands_on_this_node, total, 1, timeout=120_000)
    assert result[0] == "ok", result
    assert result[1] <= EXTRA_ENTRIES_KEPT_IN_MEMORY + 32, f"the leader's log grew to {result[1]} entries"
    # it really missed them all (it may not have applied the first command: its commit came later)
    assert RaftedValue.query_non_leader(cut_off, None) in (("ok", 0), ("ok", 1))

    for n in (n1, n2, n3):
        assert nodes.rpc.call(n.name, dist.heal) is None
    wait_until(lambda: RaftedValue.query_non_leader(cut_off, None) == ("ok", total + 1), 30,
               "the cut-off follower to catch up")
    # The group serves on, whoever leads after the heal: the cut-off member's elections raised its
    # term, so the leader may change meanwhile. One id for every try: applied once, whoever answers.
    members = [leader, ("c", n2.name), cut_off]
    cmd_id = nodes.make_ref()

    def one_more_command() -> bool:
        now_leader = find_leader(members)
        if now_leader is None:
            return False
        return RaftedValue.command(now_leader, "inc", id=cmd_id) == ("ok", total + 1)

    wait_until(one_more_command, 10, "one more command")

    def all_answer_the_leader() -> bool:
        now_leader = find_leader(members)
        return now_leader is not None and not RaftedValue.status(now_leader)["unresponsive_followers"]

    wait_until(all_answer_the_leader, 10, "every follower to answer the leader")

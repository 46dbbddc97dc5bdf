"""Randomized membership changes, kills, netsplits and leader hand-overs under a running client.

The port of rafted_value's property tests. A seeded random generator
(printed; set ``RAFTED_SEED`` to replay, ``RAFTED_STEPS`` for more steps)
picks operations; a client process keeps running commands and queries
(retrying with the same command id) and checks every answer against a
sequential model. After every step, every live member's state is checked:
terms and commit indices never decrease, at most one leader per term, the
same data at the same commit index, bounded logs and caches.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from rafted_support import (
    CONF,
    HEARTBEAT,
    T_MAX_ELECTION,
    Cluster,
    JustAnInt,
    Netsplit,
    receive_matching,
    wait_until,
    with_,
)

import nodes
from rafted import RaftedValue
from rafted import logs as Logs
from rafted.leader_hook import LeaderHook

RUNNER = "rafted_random_runner"
SEED = int(os.environ.get("RAFTED_SEED", random.randrange(2**32)))
STEPS = int(os.environ.get("RAFTED_STEPS", "40"))
HOOK_TAGS = ("follower_added", "follower_removed", "elected")


class MessageSendingHook(LeaderHook):
    @staticmethod
    def on_follower_added(data: Any, pid: Any) -> None:
        nodes.send(RUNNER, ("follower_added", pid))

    @staticmethod
    def on_follower_removed(data: Any, pid: Any) -> None:
        nodes.send(RUNNER, ("follower_removed", pid))

    @staticmethod
    def on_elected(data: Any) -> None:
        nodes.send(RUNNER, ("elected", nodes.self()))


CONFIG = with_(CONF, leader_hook_module=MessageSendingHook, communication_module=Netsplit)
WAIT_MS = 3 * T_MAX_ELECTION + 1000
# An election may take several rounds: split votes, and only the members with the most complete
# log can win (with 4 members and 1 isolated, every remaining vote is needed, so a round is
# lost whenever a member that lags starts it: a third of the rounds, or more when a busy
# process delays the vote requests and candidacies collide). Thirty rounds of the longest
# election time-out make a missing leader a real finding, not bad luck; the failure message
# shows each member's timers, so a stuck one would stand out.
ELECTION_WAIT_MS = 30 * T_MAX_ELECTION + 1000


#
# the client
#
def client_loop(runner: Any, members: list, seed: int) -> None:
    rng = random.Random(seed)
    value = JustAnInt.new()
    pending: tuple | None = None
    n_done = 0
    while True:
        while True:
            try:
                msg = nodes.receive(timeout=0)
            except TimeoutError:
                break
            if msg == "finish":
                nodes.send(runner, ("client_done", n_done))
                return
            if type(msg) is tuple and msg[0] == "members":
                members = msg[1]
        if pending is None:
            cmd = rng.choice([("command", ("set", rng.randint(1, 10))), ("command", "inc"), ("query", "get")])
            pending = (cmd, nodes.make_ref(), 40)
        cmd, ref, tries = pending
        if tries == 0:
            nodes.send(runner, ("client_failed", f"no leader answered {cmd!r}"))
            return
        r = run_client_request(list(members), cmd, ref)
        if r is None:
            pending = (cmd, ref, tries - 1)
            try:
                nodes.receive(timeout=100, match=lambda m: m == "finish")
                nodes.send(runner, ("client_done", n_done))
                return
            except TimeoutError:
                continue
        kind, arg = cmd
        if kind == "command":
            expected, value = JustAnInt.command(value, arg)
        else:
            expected = JustAnInt.query(value, arg)
        if r != expected:
            nodes.send(
                runner, ("client_failed", f"{cmd!r} returned {r!r}, the sequential model says {expected!r}")
            )
            return
        pending = None
        n_done += 1


def run_client_request(members: list, cmd: tuple, ref: Any) -> Any:
    hops = 0
    while members and hops < 20:
        hops += 1
        m = members.pop(0)
        kind, arg = cmd
        if kind == "command":
            r = RaftedValue.command(m, arg, 500, ref)
        else:
            r = RaftedValue.query(m, arg, 500)
        if r[0] == "ok":
            return r[1]
        err = r[1]
        if type(err) is tuple and err[0] == "not_leader" and err[1] is not None:
            members = [err[1], *(x for x in members if x != err[1])]
    return None


#
# the test's model of the group, and the invariants
#
@dataclass
class Ctx:
    rng: random.Random
    cluster: Cluster
    client: Any
    working: list
    killed: list = field(default_factory=list)
    isolated: list = field(default_factory=list)
    leader: Any = None
    leaders: dict = field(default_factory=dict)
    terms: dict = field(default_factory=dict)
    commits: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    leader_commit: int = 0
    log: list = field(default_factory=list)

    @property
    def all(self) -> list:
        return self.working + self.killed + self.isolated

    def fail(self, what: str) -> None:
        pytest.fail(f"{what}\n(seed {SEED}; steps so far: {self.log})")


def assert_invariants(ctx: Ctx) -> None:
    pairs = [(m, nodes.sys.get_state(m)) for m in ctx.working + ctx.isolated]
    for m, (name, s) in pairs:
        check_member(ctx, m, name, s)
    for m, (_, s) in pairs:
        if ctx.terms.get(m, 0) > s.current_term:
            ctx.fail(f"term of {m} went down")
        if ctx.commits.get(m, 0) > s.logs.i_committed:
            ctx.fail(f"commit index of {m} went down")
        ctx.terms[m] = s.current_term
        ctx.commits[m] = s.logs.i_committed
    leader_pairs = [(m, s) for m, (name, s) in pairs if name == "leader"]
    for m, s in leader_pairs:
        if ctx.leaders.setdefault(s.current_term, m) != m:
            ctx.fail(f"two leaders in term {s.current_term}: {ctx.leaders[s.current_term]} and {m}")
    if leader_pairs:
        m, s = max(leader_pairs, key=lambda p: p[1].current_term)
        if Logs.committed_in_term(s.logs, s.current_term):
            if s.logs.i_committed < ctx.leader_commit:
                ctx.fail("the leader's commit index went down")
            ctx.leader_commit = s.logs.i_committed


def check_member(ctx: Ctx, m: Any, name: str, s: Any) -> None:
    logs = s.logs
    ok = logs.i_min <= logs.i_committed <= logs.i_max and sorted(logs.map) == list(
        range(logs.i_min, logs.i_max + 1)
    )
    if not ok or logs.i_committed - logs.i_min + 1 > 100:
        ctx.fail(f"bad log on {m}: {logs.i_min} {logs.i_committed} {logs.i_max} ({len(logs.map)} entries)")
    if len(s.command_results) > s.config.max_retained_command_results:
        ctx.fail(f"too many cached results on {m}")
    if ctx.data.setdefault(logs.i_committed, s.data) != s.data:
        ctx.fail(f"{m} has {s.data!r} at {logs.i_committed}, another member {ctx.data[logs.i_committed]!r}")
    if name == "leader":
        assert s.members.leader == m and s.election.voted_for == m and s.leadership is not None
        assert s.members.uncommitted_membership_change is None or s.members.pending_leader_change is None
    elif name == "candidate":
        assert s.members.leader is None and s.election.voted_for == m and s.leadership is None
    else:
        assert s.leadership is None and s.election.deadline is not None


#
# operations
#
def drain_hook_messages() -> None:
    while receive_matching(lambda m: type(m) is tuple and m and m[0] in HOOK_TAGS, 0) is not None:
        pass


def wait_elected(ctx: Ctx, among: list) -> Any:
    before = election_view(among)
    msg = receive_matching(lambda m: type(m) is tuple and m[0] == "elected" and m[1] in among,
                           ELECTION_WAIT_MS)
    if msg is None:
        ctx.fail(f"no leader elected among {among} within {ELECTION_WAIT_MS} ms; when the wait began "
                 f"they were: {before}; now they are: {election_view(among)}")
    return msg[1]


def leader_view(leader: Any) -> str:
    """What the leader knows of its followers (for a failure message)."""
    try:
        name, s = nodes.sys.get_state(leader)
        status = RaftedValue.status(leader)
    except nodes.Exit as e:
        return f"unreachable ({e.reason})"
    now = int(time.monotonic() * 1000)
    heard = {p: now - t for p, t in (s.leadership.follower_responded_times if s.leadership else {}).items()}
    return (f"{name} in term {s.current_term}, unresponsive {status['unresponsive_followers']}, "
            f"heard from (ms ago) {heard}, followers (next, replicated) {s.logs.followers}, "
            f"snapshots in flight {s.logs.snapshots_in_flight}, members {list(s.members.all)}, "
            f"changing {s.members.uncommitted_membership_change} / {s.members.pending_leader_change}")


def election_view(members: list) -> list:
    """What each member thinks of the election (for a failure message)."""
    view = []
    for m in members:
        try:
            name, s = nodes.sys.get_state(m)
        except nodes.Exit as e:
            view.append((m, "unreachable", e.reason))
            continue
        now = int(time.monotonic() * 1000)  # the members' clock (rafted.state.now_ms)
        e, t = s.election, s.timer
        view.append((m, name, f"term {s.current_term}", f"voted for {e.voted_for}",
                     f"log up to {Logs.last_entry(s.logs)[:2]} (term, index), committed {s.logs.i_committed}",
                     f"members {len(s.members.all)}",
                     f"election deadline {'-' if e.deadline is None else e.deadline - now} ms",
                     f"timer {'none' if t is None else f'#{t.token} in {t.fire_at - now} ms'}",
                     "leader heard " + ("never" if e.leader_message_at is None
                                        else f"{now - e.leader_message_at} ms ago")))
    return view


def expect_hook(ctx: Ctx, tag: str, pid: Any) -> None:
    if receive_matching(lambda m: m == (tag, pid), WAIT_MS) is None:
        ctx.fail(f"no {tag} for {pid}")


def followers_in_majority(ctx: Ctx) -> list:
    return [m for m in ctx.working if m != ctx.leader]


def op_replace_leader(ctx: Ctx) -> None:
    target = ctx.rng.choice(followers_in_majority(ctx))
    r = RaftedValue.replace_leader(ctx.leader, target)
    if r != "ok":
        ctx.fail(f"replace_leader -> {r!r}")
    ctx.leader = wait_elected(ctx, [target])


def op_add_follower(ctx: Ctx) -> None:
    ok, pid = ctx.cluster.start(("join_existing_consensus_group", [ctx.leader]))
    if ok != "ok":
        ctx.fail(f"join -> {pid!r}")
    expect_hook(ctx, "follower_added", pid)
    ctx.working.append(pid)


def op_remove_follower(ctx: Ctx) -> None:
    if 2 * len(followers_in_majority(ctx)) <= len(ctx.all):
        return  # could not afford to lose one more
    target = ctx.rng.choice(followers_in_majority(ctx))
    r = RaftedValue.remove_follower(ctx.leader, target)
    if r != "ok":
        ctx.fail(f"remove_follower -> {r!r}")
    expect_hook(ctx, "follower_removed", target)
    if receive_matching(lambda m: m == ("EXIT", target, "normal"), WAIT_MS) is None:
        ctx.fail(f"removed {target} did not stop")
    ctx.working.remove(target)


def op_kill_member(ctx: Ctx) -> None:
    if 2 * (len(ctx.working) - 1) > len(ctx.all):
        target = ctx.rng.choice(ctx.working)
    elif ctx.isolated:
        target = ctx.rng.choice(ctx.isolated)
    else:
        return
    nodes.gen_statem.stop(target)
    receive_matching(lambda m: m == ("EXIT", target, "normal"), WAIT_MS)
    if target in ctx.working:
        ctx.working.remove(target)
    else:
        ctx.isolated.remove(target)
    ctx.killed.append(target)
    if target == ctx.leader:
        ctx.leader = wait_elected(ctx, ctx.working)


def op_purge_killed_member(ctx: Ctx) -> None:
    target = ctx.rng.choice(ctx.killed)
    r = RaftedValue.remove_follower(ctx.leader, target)
    if r != "ok":
        ctx.fail(f"remove_follower of dead {target} -> {r!r}")
    expect_hook(ctx, "follower_removed", target)
    ctx.killed.remove(target)


def pick_operation(ctx: Ctx) -> Any:
    n_all = len(ctx.all)
    ops = [op_replace_leader]
    if n_all < 7:
        ops.append(op_add_follower)
    if n_all > 3:
        ops += [op_remove_follower, op_kill_member]
    if ctx.killed:
        ops.append(op_purge_killed_member)
    return ctx.rng.choice(ops)


def check_client(ctx: Ctx) -> None:
    msg = receive_matching(lambda m: type(m) is tuple and m[0] == "client_failed", 0)
    if msg is not None:
        ctx.fail(f"client: {msg[1]}")
    crash = receive_matching(
        lambda m: (
            type(m) is tuple
            and len(m) == 3
            and m[0] == "EXIT"
            and type(m[2]) is tuple
            and m[2][0] == "exception"
        ),
        0,
    )
    if crash is not None:
        ctx.fail(f"member {crash[1]} crashed:\n{crash[2][2]}")


def unresponsive(leader: Any) -> list:
    return RaftedValue.status(leader)["unresponsive_followers"]


def wait_leader_hears_working_members(ctx: Ctx) -> None:
    """A new leader or member has answered no heartbeat yet: let the leader hear from everyone reachable
    (otherwise a removal right after could be refused as will_break_quorum, rightly)."""
    unreachable = set(ctx.killed) | set(ctx.isolated)
    wait_until(
        lambda: set(RaftedValue.status(ctx.leader)["unresponsive_followers"]) <= unreachable,
        WAIT_MS / 1000,
        what="the leader to hear from every working member",
    )


def run_steps(ctx: Ctx, n: int) -> None:
    for _ in range(n):
        drain_hook_messages()
        op = pick_operation(ctx)
        ctx.log.append(op.__name__[3:])
        op(ctx)
        wait_leader_hears_working_members(ctx)
        nodes.send(ctx.client, ("members", list(ctx.working)))
        assert_invariants(ctx)
        check_client(ctx)


def start(cluster: Cluster) -> Ctx:
    nodes.register(RUNNER, nodes.self())
    Netsplit.set([])
    rng = random.Random(SEED)
    print(f"rafted randomized test: RAFTED_SEED={SEED} RAFTED_STEPS={STEPS}")
    leader, followers = cluster.make(2, CONFIG)
    for f in followers:
        expect_hook_plain("follower_added", f)
    members = [leader, *followers]
    client = nodes.spawn(client_loop, nodes.self(), members, rng.randrange(2**32))
    ctx = Ctx(rng=rng, cluster=cluster, client=client, working=members, leader=leader)
    assert_invariants(ctx)
    return ctx


def expect_hook_plain(tag: str, pid: Any) -> None:
    assert receive_matching(lambda m: m == (tag, pid), WAIT_MS) is not None, f"no {tag} for {pid}"


def finish(ctx: Ctx) -> None:
    check_client(ctx)
    nodes.send(ctx.client, "finish")
    done = receive_matching(lambda m: type(m) is tuple and m[0] in ("client_done", "client_failed"), 30_000)
    if done is None or done[0] != "client_done":
        ctx.fail(f"client: {done!r}")
    assert done[1] > 0, "the client never got an answer"
    print(f"client: {done[1]} answers checked; steps: {' '.join(ctx.log)}")

    def up_to_date() -> bool:
        states = [nodes.sys.get_state(m)[1] for m in ctx.working]
        return (
            all(s.logs.i_committed == s.logs.i_max for s in states)
            and len({s.logs.i_max for s in states}) == 1
        )

    wait_until(up_to_date, 5.0, what="every member to be up to date")
    assert_invariants(ctx)


def test_randomized_membership_changes_kills_and_hand_overs(cluster: Cluster) -> None:
    ctx = start(cluster)
    try:
        run_steps(ctx, STEPS)
        finish(ctx)
    finally:
        nodes.unregister(RUNNER)
        nodes.exit(ctx.client, "kill")


def test_randomized_with_netsplits(cluster: Cluster) -> None:
    ctx = start(cluster)
    try:
        for _ in range(max(1, STEPS // 8)):
            assert not ctx.isolated and not ctx.killed
            drain_hook_messages()
            n_isolated = ctx.rng.randint(1, (len(ctx.working) - 1) // 2)
            isolated = ctx.rng.sample(ctx.working, n_isolated)
            ctx.log.append(f"isolate {len(isolated)}{' incl. leader' if ctx.leader in isolated else ''}")
            ctx.working = [m for m in ctx.working if m not in isolated]
            ctx.isolated = isolated
            nodes.send(ctx.client, ("members", list(ctx.working)))
            Netsplit.set(isolated)
            if ctx.leader in isolated:
                ctx.leader = wait_elected(ctx, ctx.working)
            try:
                wait_until(lambda: sorted(unresponsive(ctx.leader)) == sorted(ctx.isolated), WAIT_MS / 1000)
            except AssertionError:
                ctx.fail(f"within {WAIT_MS} ms, the leader {ctx.leader} did not report exactly the "
                         f"isolated {ctx.isolated} as unresponsive; the leader: {leader_view(ctx.leader)}; "
                         f"the working members: {election_view(ctx.working)}")
            assert_invariants(ctx)
            run_steps(ctx, 3)
            # heal, then purge the dead
            ctx.log.append("heal")
            Netsplit.set([])
            ctx.working += ctx.isolated
            ctx.isolated = []
            nodes.send(ctx.client, ("members", list(ctx.working)))

            def leader_of_all() -> Any:
                # the healed members' higher terms may depose the leader once more: wait until all agree
                states = {m: nodes.sys.get_state(m) for m in ctx.working}
                leaders = [m for m, (name, _) in states.items() if name == "leader"]
                if len(leaders) != 1:
                    return None
                top = states[leaders[0]][1]
                if not Logs.committed_in_term(top.logs, top.current_term):
                    return None
                if any(
                    s.current_term != top.current_term or s.members.leader != leaders[0]
                    for _, s in states.values()
                ):
                    return None
                return leaders[0]

            # the healed members' higher terms start an election, which may take several rounds
            try:
                ctx.leader = wait_until(leader_of_all, ELECTION_WAIT_MS / 1000)
            except AssertionError:
                ctx.fail(f"no leader all agree on within {ELECTION_WAIT_MS} ms of healing; "
                         f"the members: {election_view(ctx.working)}")
            while ctx.killed:
                drain_hook_messages()
                op_purge_killed_member(ctx)

            def settled() -> bool:
                st = RaftedValue.status(ctx.leader)
                return (
                    st["state_name"] == "leader"
                    and sorted(st["members"]) == sorted(ctx.working)
                    and st["unresponsive_followers"] == []
                )

            wait_until(settled, WAIT_MS / 1000 + HEARTBEAT / 1000, what="the healed group to settle")
            assert_invariants(ctx)
            check_client(ctx)
        finish(ctx)
    finally:
        Netsplit.set([])
        nodes.unregister(RUNNER)
        nodes.exit(ctx.client, "kill")

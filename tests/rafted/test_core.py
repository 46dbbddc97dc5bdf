"""Unit tests of the pure core (logs, members, election, leadership, command_results, config).

Pids are plain strings here: the core only needs hashable, comparable values.
"""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from rafted_support import CONF, ELECTION, MARGIN, JustAnInt

import rafted
from rafted import election as Election
from rafted import leadership as Leadership
from rafted import logs as Logs
from rafted import members as Members
from rafted.command_results import CommandResults
from rafted.rpc import AppendEntriesRequest, AppendEntriesResponse, TimeoutNow

A, B, C, D, E = "A", "B", "C", "D", "E"


def leader_logs(term: int = 1, others: tuple = (B, C)) -> tuple[Logs.Logs, Members.Members]:
    """A leader A elected in ``term`` with followers ``others`` (log: 1 committed entry + leader_elected)."""
    logs = Logs.new_for_lonely_leader((0, 1, "leader_elected", [A]))
    members = Members.Members(leader=A, all={A, *others})
    logs, _ = Logs.add_entry_on_elected_leader(logs, members, term, A)
    return logs, members


def cmd(logs: Logs.Logs, term: int, arg: object = "inc") -> tuple[Logs.Logs, tuple]:
    return Logs.add_entry(logs, lambda i: (term, i, "command", (("client", i), arg, i)))


def send(logs: Logs.Logs, f: str, heartbeat: bool = False, now: int = 0, **kw: int) -> tuple:
    return Logs.make_append_entries_req(logs, 1, f, now, A, heartbeat=heartbeat, snapshot_retry_ms=400, **kw)


# --- logs: leader side ---------------------------------------------------------------------------


def test_lonely_leader_commits_everything_at_once() -> None:
    logs = Logs.new_for_lonely_leader((0, 1, "leader_elected", [A]))
    assert (logs.i_min, logs.i_max, logs.i_committed) == (1, 1, 1)
    logs, e = cmd(logs, 0)
    assert e == (0, 2, "command", (("client", 2), "inc", 2))
    assert logs.i_committed == 1
    logs2, applied = Logs.commit_to_latest(logs)
    assert applied == [e] and logs2.i_committed == 2
    assert logs.i_committed == 1, "values are immutable"


def test_elected_leader_starts_followers_optimistically_and_lists_members_in_entry() -> None:
    logs, _ = leader_logs()
    assert logs.followers == {B: (2, 0), C: (2, 0)}
    assert logs.map[2] == (1, 2, "leader_elected", [A, B, C])


def test_a_burst_of_commands_is_appended_as_consecutive_entries_of_the_leaders_term() -> None:
    logs, _ = leader_logs(term=3)
    burst = [(("client", k), "inc", k) for k in range(4)]
    new = Logs.add_entries(logs, 3, "command", burst)
    assert new.i_max == logs.i_max + 4
    assert Logs.slice_entries(new.map, logs.i_max + 1, new.i_max) == [
        (3, logs.i_max + 1 + k, "command", p) for k, p in enumerate(burst)]
    assert logs.i_max == 2, "values are immutable"
    with pytest.raises(KeyError):
        logs.map[3]  # the earlier log does not see the burst (they share one store)
    # the next single entry follows the burst
    after, e = cmd(new, 3)
    assert e[1] == new.i_max + 1 and after.i_max == e[1]
    # and a follower is sent the whole burst in one request
    req = send(after, B)[1]
    assert [x[1] for x in req.entries] == list(range(logs.i_max, after.i_max + 1))


def test_append_entries_pipelines_and_heartbeats_carry_no_entries() -> None:
    logs, _ = leader_logs()
    kind, req, logs = send(logs, B, now=7)
    assert kind == "ok" and isinstance(req, AppendEntriesRequest)
    assert req.prev_log == (0, 1) and [e[1] for e in req.entries] == [2] and req.leader_timestamp == 7
    assert logs.followers[B] == (3, 0)  # advanced on send
    assert send(logs, B)[0] == "skip"  # nothing new, not a heartbeat
    kind, hb, _ = send(logs, B, heartbeat=True)
    assert kind == "ok" and hb.entries == [] and hb.prev_log == (1, 2)
    logs, _ = cmd(logs, 1)
    logs, _ = cmd(logs, 1)
    kind, req, logs = send(logs, B)
    assert [e[1] for e in req.entries] == [3, 4] and req.prev_log == (1, 2)


def test_in_flight_entries_are_bounded() -> None:
    logs, _ = leader_logs()
    for _ in range(10):
        logs, _ = cmd(logs, 1)
    kind, req, logs = send(logs, B, max_in_flight=4)
    assert [e[1] for e in req.entries] == [2, 3, 4]  # i_replicated 0 + 4
    assert send(logs, B, max_in_flight=4)[0] == "skip"
    assert not Logs.has_entries_to_send(logs, B, max_in_flight=4)
    members = Members.Members(leader=A, all={A, B, C})
    logs, _ = Logs.set_follower_index(logs, members, 1, B, 4, A)
    assert Logs.has_entries_to_send(logs, B, max_in_flight=4)
    kind, req, logs = send(logs, B, max_in_flight=4)
    assert [e[1] for e in req.entries] == [5, 6, 7, 8]


def test_commit_needs_majority_and_an_entry_of_the_current_term() -> None:
    logs, members = leader_logs(term=2)
    logs, c = cmd(logs, 2)
    logs, applied = Logs.set_follower_index(logs, members, 2, B, 2, A)
    assert logs.i_committed == 2 and [e[1] for e in applied] == [2]
    logs, applied = Logs.set_follower_index(logs, members, 2, C, 3, A)
    assert logs.i_committed == 3 and applied == [c]
    # entries of an older term are not committed by counting replicas (Raft figure 8)
    old = Logs.new_for_new_follower((1, 5, "command", None))
    old = dataclasses.replace(old, followers={B: (6, 0), C: (6, 0)})
    old, _ = Logs.add_entry(old, lambda i: (1, i, "command", None))
    old2, applied = Logs.set_follower_index(old, members, 2, B, 6, A)
    assert old2.i_committed == 5 and applied == []


def test_commit_counts_the_membership_as_of_each_entry() -> None:
    logs, members = leader_logs(term=1, others=(B,))
    logs, _ = Logs.set_follower_index(logs, members, 1, B, 2, A)
    assert logs.i_committed == 2
    logs, add = Logs.add_entry_on_add_follower(logs, 1, C)
    assert logs.followers[C] == (3, 0)  # the joiner gets a snapshot at i_committed
    ok, members = Members.start_adding_follower(members, add)
    assert ok == "ok" and members.all == {A, B, C}
    logs, _ = cmd(logs, 1)
    # {A, B, C} needs 2 of 3: B alone has both entries -> majority with A
    logs2, applied = Logs.set_follower_index(logs, members, 1, B, 4, A)
    assert logs2.i_committed == 4
    # only the new member has them: still a majority of the new configuration with A
    logs3, _ = Logs.set_follower_index(logs, members, 1, C, 4, A)
    assert logs3.i_committed == 4
    # a 4-member group after adding D needs 3 of 4
    m4 = Members.Members(leader=A, all={A, B, C})
    logs4, _ = leader_logs(term=1, others=(B, C))
    logs4, add_d = Logs.add_entry_on_add_follower(logs4, 1, D)
    _, m4 = Members.start_adding_follower(m4, add_d)
    logs4, _ = Logs.set_follower_index(logs4, m4, 1, D, 3, A)
    assert logs4.i_committed == 1  # A + D: 2 of 4
    logs4, applied = Logs.set_follower_index(logs4, m4, 1, B, 3, A)
    assert logs4.i_committed == 3 and [e[1] for e in applied] == [2, 3]


def test_answers_of_ex_members_are_ignored() -> None:
    logs, members = leader_logs()
    logs2, applied = Logs.set_follower_index(logs, members, 1, "X", 2, A)
    assert logs2 is logs and applied == []
    gone = Members.Members(leader=A, all={A, C})
    logs3, _ = Logs.set_follower_index(logs, gone, 1, B, 2, A)
    assert logs3 is logs


def test_rejection_jumps_back_to_the_followers_hint() -> None:
    logs, members = leader_logs()
    for _ in range(20):
        logs, _ = cmd(logs, 1)
    _, _, logs = send(logs, B)
    assert logs.followers[B] == (23, 0)
    logs = Logs.rewind_follower(logs, B, 1)
    assert logs.followers[B] == (2, 0)
    logs, _ = Logs.set_follower_index(logs, members, 1, B, 10, A)
    assert logs.followers[B] == (11, 10)
    # never below what is known to match, and a stale rejection cannot move it forward
    assert Logs.rewind_follower(logs, B, 3).followers[B] == (11, 10)
    assert Logs.rewind_follower(logs, B, 15).followers[B] == (11, 10)
    # no hint (the original's responses): one entry back
    _, _, logs = send(logs, B)
    assert Logs.rewind_follower(logs, B, None).followers[B] == (22, 10)


def b_behind_the_truncated_log() -> tuple[Logs.Logs, Members.Members]:
    """300 commands committed with C; B still at the start, behind what memory keeps."""
    logs, members = leader_logs()
    for _ in range(300):
        logs, _ = cmd(logs, 1)
    logs, _ = Logs.set_follower_index(logs, members, 1, C, logs.i_max, A)
    logs = Logs.truncate_old_logs(logs, logs.i_committed)
    assert logs.i_min > 2 and len(logs.map) == 100
    return Logs.rewind_follower(logs, B, 1), members


def test_lagging_follower_gets_one_snapshot_at_a_time() -> None:
    logs, members = b_behind_the_truncated_log()
    kind, logs = send(logs, B, now=100)
    assert kind == "snapshot"
    assert logs.followers[B] == (logs.i_committed + 1, 0)
    assert logs.snapshots_in_flight[B] == (logs.i_committed, 100)
    # the follower answers with an old rejection: no second snapshot while one is on its way
    logs = Logs.rewind_follower(logs, B, 1)
    assert send(logs, B, now=200)[0] == "skip"
    assert send(logs, B, now=600)[0] == "snapshot"  # lost? resend after snapshot_retry_ms
    logs, _ = Logs.set_follower_index(logs, members, 1, B, logs.i_committed, A)
    assert B not in logs.snapshots_in_flight


def test_a_follower_waiting_for_its_snapshot_still_gets_heartbeats_it_cannot_misread() -> None:
    logs, members = b_behind_the_truncated_log()
    kind, logs = send(logs, B, now=100)
    assert kind == "snapshot"
    i_snap = logs.i_committed
    logs = Logs.rewind_follower(logs, B, 1)  # its answer to an earlier request: a rejection
    # no entries while the snapshot is on its way, but a heartbeat: without it the follower's
    # election timer would run out before the retry and it would start an election
    kind, hb, after = send(logs, B, heartbeat=True, now=200)
    assert kind == "ok" and after is logs
    assert hb.entries == [] and hb.prev_log == (Logs.NO_TERM, i_snap) and hb.term == 1
    # a follower without the snapshot rejects it: nothing appended, it hints where it is
    lagging, _ = leader_logs()
    assert Logs.append_entries(lagging, members, hb.prev_log, hb.entries, hb.i_leader_commit)[0] == "reject"
    # one that has installed it (committed up to the snapshot) accepts it, matching up to there
    installed = dataclasses.replace(logs, i_committed=i_snap)
    r = Logs.append_entries(installed, members, hb.prev_log, hb.entries, hb.i_leader_commit)
    assert r[0] == "ok" and r[5] == i_snap and r[3] == [] and r[4] == []
    # a follower with different uncommitted entries there rejects it: no term matches NO_TERM
    diverged = dataclasses.replace(logs, i_committed=i_snap - 1)
    assert Logs.append_entries(diverged, members, hb.prev_log, hb.entries, hb.i_leader_commit)[0] == "reject"


def test_timeout_now_request_carries_every_unacknowledged_entry() -> None:
    logs, members = leader_logs()
    logs, _ = Logs.set_follower_index(logs, members, 1, B, 1, A)
    logs, _ = cmd(logs, 1)
    _, _, logs = send(logs, B)
    req = Logs.make_timeout_now_req(logs, 1, B, 5, A)
    assert req is not None and req.prev_log == (0, 1) and [e[1] for e in req.entries] == [2, 3]
    assert TimeoutNow(req).term == 1


def test_memory_stays_bounded_under_a_long_stream_of_commands() -> None:
    logs, members = leader_logs()
    for _ in range(3000):
        logs, _ = cmd(logs, 1)
        logs, _ = Logs.set_follower_index(logs, members, 1, B, logs.i_max, A)
        logs = Logs.truncate_old_logs(logs, logs.i_committed)
        assert len(logs.map) <= Logs.EXTRA_ENTRIES_KEPT_IN_MEMORY
    assert logs.i_committed == 3002 and logs.i_min == 3002 - 99
    assert sorted(logs.map) == list(range(logs.i_min, logs.i_max + 1))


# --- logs: follower side --------------------------------------------------------------------------


def follower_logs(entries: list) -> tuple[Logs.Logs, Members.Members]:
    logs = Logs.new_for_new_follower((1, 1, "leader_elected", [A]))
    members = Members.Members(leader=A, all={A, B, C})
    r = Logs.append_entries(logs, members, (1, 1), entries, 1)
    return r[1], r[2]


def test_follower_appends_matching_entries_and_commits_up_to_what_it_verified() -> None:
    logs, members = follower_logs([])
    es = [(1, 2, "command", None), (1, 3, "command", None)]
    kind, logs2, _, applied, persist, i_match = Logs.append_entries(logs, members, (1, 1), es, 10)
    assert kind == "ok" and logs2.i_max == 3 and persist == es and i_match == 3
    assert logs2.i_committed == 3 and applied == es  # min(leader commit, last new entry)
    # a heartbeat whose prev is the first entry must not commit entries it did not verify
    kind, logs3, _, applied, _, i_match = Logs.append_entries(logs2, members, (1, 1), [], 10)
    assert i_match == 1 and logs3.i_committed == 3


def test_follower_rejects_with_a_hint() -> None:
    logs, members = follower_logs([(1, 2, "command", None), (1, 3, "command", None)])
    assert Logs.append_entries(logs, members, (1, 7), [], 3) == ("reject", 3)  # lacking: its last index
    assert Logs.append_entries(logs, members, (2, 3), [], 1) == ("reject", 1)  # conflict: its commit index
    assert Logs.contain_given_prev_log(logs, (9, 1))  # committed entries always match


def test_follower_truncates_a_conflicting_suffix_and_undoes_its_membership_changes() -> None:
    es = [(1, 2, "command", None), (1, 3, "add_follower", D), (1, 4, "command", None)]
    logs, members = follower_logs(es)
    assert members.all == {A, B, C, D} and members.uncommitted_membership_change == es[1]
    new = [(2, 3, "leader_elected", [B, A, C]), (2, 4, "command", None)]
    kind, logs2, members2, _, persist, i_match = Logs.append_entries(logs, members, (1, 2), new, 1)
    assert kind == "ok" and i_match == 4 and persist == new
    assert logs2.map[3] == new[0] and logs2.i_max == 4
    assert members2.all == {A, B, C} and members2.uncommitted_membership_change is None


def test_duplicate_or_reordered_requests_never_truncate() -> None:
    es = [(1, 2, "command", None), (1, 3, "command", None), (1, 4, "command", None)]
    logs, members = follower_logs(es)
    kind, logs2, _, _, persist, i_match = Logs.append_entries(logs, members, (1, 1), es[:1], 1)
    assert logs2 is logs and persist == [] and i_match == 2 and logs2.i_max == 4


def test_candidate_log_up_to_date() -> None:
    logs, _ = follower_logs([(2, 2, "command", None)])
    assert Logs.candidate_log_up_to_date(logs, (2, 2))
    assert Logs.candidate_log_up_to_date(logs, (3, 1))
    assert not Logs.candidate_log_up_to_date(logs, (2, 1))
    assert not Logs.candidate_log_up_to_date(logs, (1, 9))


# --- members --------------------------------------------------------------------------------------


def test_one_membership_change_at_a_time() -> None:
    m = Members.Members(leader=A, all={A, B})
    ok, m2 = Members.start_adding_follower(m, (1, 5, "add_follower", C))
    assert ok == "ok" and m2.all == {A, B, C}
    assert Members.start_adding_follower(m2, (1, 6, "add_follower", D)) == (
        "error",
        "uncommitted_membership_change",
    )
    assert Members.start_removing_follower(m2, (1, 6, "remove_follower", B), A) == (
        "error",
        "uncommitted_membership_change",
    )
    assert Members.start_replacing_leader(m2, B, A) == ("error", "uncommitted_membership_change")
    assert Members.membership_change_committed(m2, 4) is m2
    m3 = Members.membership_change_committed(m2, 5)
    assert m3.uncommitted_membership_change is None


def test_membership_errors() -> None:
    m = Members.Members(leader=A, all={A, B})
    assert Members.start_adding_follower(m, (1, 5, "add_follower", B)) == ("error", "already_joined")
    assert Members.start_removing_follower(m, (1, 5, "remove_follower", A), A) == (
        "error",
        "cannot_remove_leader",
    )
    assert Members.start_removing_follower(m, (1, 5, "remove_follower", C), A) == ("error", "not_member")
    assert Members.start_replacing_leader(m, A, A) == ("error", "already_leader")
    assert Members.start_replacing_leader(m, C, A) == ("error", "not_member")
    ok, m2 = Members.start_replacing_leader(m, B, A)
    assert m2.pending_leader_change == B
    assert Members.start_adding_follower(m2, (1, 5, "add_follower", C)) == ("error", "pending_leader_change")
    assert Members.start_replacing_leader(m2, None, A)[1].pending_leader_change is None
    assert Members.put_leader(m2, None).pending_leader_change is None


def test_force_remove_member_forgets_everything_about_it() -> None:
    m = Members.Members(leader=A, all={A, B, C}, uncommitted_membership_change=(1, 5, "add_follower", C))
    m = dataclasses.replace(m, pending_leader_change=C)
    m2 = Members.force_remove_member(m, C)
    assert m2.all == {A, B} and m2.uncommitted_membership_change is None and m2.pending_leader_change is None


# --- election -------------------------------------------------------------------------------------


def test_votes_and_deadlines() -> None:
    e = Election.update_for_candidate(Election.Election(), A, 100, 250)
    assert e.voted_for == A and e.deadline == 350
    e, won = Election.gain_vote(e, {A, B, C, D}, B)
    assert not won
    e, won = Election.gain_vote(e, {A, B, C, D}, "X")  # not a member: does not count
    assert not won
    e, won = Election.gain_vote(e, {A, B, C, D}, C)
    assert won and e.deadline is None
    assert not Election.timed_out(Election.Election(deadline=10), 9)
    assert Election.timed_out(Election.Election(deadline=10), 10)
    assert 201 <= Election.random_timeout(200) <= 400


def test_a_follower_whose_leader_is_gone_elects_once_votes_can_be_granted_in_turns() -> None:
    lease_off = dataclasses.replace(CONF, election_timeout_clock_drift_margin=CONF.election_timeout)
    hb, refusal = CONF.heartbeat_timeout, CONF.vote_refusal_ms
    assert lease_off.lease_ms == 0 and lease_off.vote_refusal_ms == 0 and CONF.lease_ms > 0
    assert Election.early_deadline(lease_off, 1200, 0) == 1200  # at once
    assert Election.early_deadline(lease_off, 1200, 2) == 1200 + 2 * hb  # the third in turn
    # with a lease, not before every other member stops refusing votes for the old leader's
    # sake: its last message from the leader came before now, give or take one in flight
    assert refusal == CONF.election_timeout
    assert Election.early_deadline(CONF, 1010, 0) == 1010 + refusal + hb
    assert Election.early_deadline(CONF, 1010, 1) == 1010 + refusal + 2 * hb


def test_stepping_down_within_a_term_keeps_the_vote() -> None:
    e = Election.new_for_leader(A)
    assert Election.update_for_follower(e, 0, 300, new_term=False).voted_for == A
    assert Election.update_for_follower(e, 0, 300, new_term=True).voted_for is None


def test_trust_in_the_leader_outlasts_its_lease_by_the_margin() -> None:
    # the leader answers alone for election_timeout - margin after a majority answered (timed
    # from its sending); a follower refuses votes for the whole election_timeout after its last
    # message, so a follower's clock may run fast by the margin without a second leader being
    # elected while the first still answers from its lease (the original: both the same length)
    e = Election.reset_timer(Election.Election(), 1000, 300)
    assert CONF.lease_ms == ELECTION - MARGIN
    assert not Election.minimum_timeout_elapsed_since_last_leader_message(e, CONF, 1000 + ELECTION - 1)
    assert Election.minimum_timeout_elapsed_since_last_leader_message(e, CONF, 1000 + ELECTION)
    no_lease = dataclasses.replace(CONF, election_timeout_clock_drift_margin=CONF.election_timeout)
    assert Election.minimum_timeout_elapsed_since_last_leader_message(e, no_lease, 1000)
    assert Election.minimum_timeout_elapsed_since_last_leader_message(Election.Election(), CONF, 0)


def test_a_margin_above_the_election_timeout_is_accepted_and_leaves_the_lease_off() -> None:
    # as in the original, whose config only asks for a positive margin
    wide = rafted.make_config(JustAnInt, election_timeout=100, election_timeout_clock_drift_margin=250)
    assert wide.election_timeout_clock_drift_margin == 250
    e = Election.reset_timer(Election.Election(), 1000, 300)
    assert Election.minimum_timeout_elapsed_since_last_leader_message(e, wide, 1000)
    members = Members.Members(leader=A, all={A, B, C})
    l = Leadership.follower_responded(Leadership.new_for_leader(1000, wide), members, B, 1000, A)  # noqa: E741
    assert Leadership.quorum_last_reached_at(l, members, A) == 1000
    assert Leadership.lease_expired(l, members, A, 1000, wide)


# --- leadership -----------------------------------------------------------------------------------


def test_quorum_and_lease_use_the_leaders_send_times() -> None:
    members = Members.Members(leader=A, all={A, B, C})
    l = Leadership.new_for_leader(0, CONF)  # noqa: E741
    assert Leadership.quorum_last_reached_at(l, members, A) is None
    assert Leadership.lease_expired(l, members, A, 0, CONF)
    l = Leadership.follower_responded(l, members, B, 100, A)  # noqa: E741
    # one follower of two is a majority with the leader, even if the other never answered
    assert Leadership.quorum_last_reached_at(l, members, A) == 100
    assert l.quorum_timer_started_at == 100
    assert not Leadership.lease_expired(l, members, A, 100 + 149, CONF)  # 200 - 50
    assert Leadership.lease_expired(l, members, A, 100 + 150, CONF)
    l = Leadership.follower_responded(l, members, B, 50, A)  # noqa: E741 - an older answer changes nothing
    assert Leadership.quorum_last_reached_at(l, members, A) == 100
    assert Leadership.quorum_deadline(l, members, A, CONF) == 100 + 400
    assert not Leadership.cannot_reach_quorum(l, members, A, 499, CONF)
    assert Leadership.cannot_reach_quorum(l, members, A, 500, CONF)
    five = Members.Members(leader=A, all={A, B, C, D, E})
    l5 = Leadership.new_for_leader(0, CONF)
    for f, t in ((B, 10), (C, 30), (D, 20)):
        l5 = Leadership.follower_responded(l5, five, f, t, A)
    assert Leadership.quorum_last_reached_at(l5, five, A) == 20  # A + C + D answered at or after 20


def test_lonely_leader_always_has_its_lease_and_quorum() -> None:
    lonely = Members.new_for_lonely_leader(A)
    l = Leadership.new_for_leader(0, CONF)  # noqa: E741
    assert not Leadership.lease_expired(l, lonely, A, 10**9, CONF)
    assert Leadership.quorum_deadline(l, lonely, A, CONF) is None


def test_ex_members_do_not_count() -> None:
    members = Members.Members(leader=A, all={A, B, C})
    l = Leadership.follower_responded(Leadership.new_for_leader(0, CONF), members, "X", 100, A)  # noqa: E741
    assert l.follower_responded_times == {}


def test_will_break_quorum_and_unresponsive_followers() -> None:
    members = Members.Members(leader=A, all={A, B, C})
    l = Leadership.new_for_leader(0, CONF)  # noqa: E741
    l = Leadership.follower_responded(l, members, B, 1000, A)  # noqa: E741
    l = Leadership.follower_responded(l, members, C, 1000, A)  # noqa: E741
    assert Leadership.unresponsive_followers(l, members, A, 1200, CONF) == []
    assert Leadership.can_safely_remove(l, members, B, A, 1200, CONF)  # {A, C} healthy of 2
    # C stops answering
    assert Leadership.unresponsive_followers(l, members, A, 1401, CONF) == [B, C]
    l = Leadership.follower_responded(l, members, B, 1300, A)  # noqa: E741
    assert Leadership.unresponsive_followers(l, members, A, 1401, CONF) == [C]
    assert not Leadership.can_safely_remove(l, members, B, A, 1401, CONF)  # would leave A of {A, C}
    assert Leadership.can_safely_remove(l, members, C, A, 1401, CONF)  # an unresponsive one: always
    l2 = Leadership.remove_follower_response_time_entry(l, C)
    assert C not in l2.follower_responded_times and C in l.follower_responded_times


# --- command results ------------------------------------------------------------------------------


def test_command_results_are_a_bounded_immutable_cache() -> None:
    r0 = CommandResults()
    r1 = r0.put("a", 1, 2).put("b", 2, 2)
    assert len(r0) == 0 and len(r1) == 2 and r1.fetch("a") == (True, 1)
    r2 = r1.put("c", 3, 2)
    assert r2.fetch("a") == (False, None) and r2.fetch("c") == (True, 3) and len(r2) == 2
    assert r1.put_many([("c", 3)], 2) == r2
    assert pickle.loads(pickle.dumps(r2)) == r2


def test_batching_never_changes_which_ids_are_remembered() -> None:
    one_by_one = CommandResults()
    for i in range(25):
        one_by_one = one_by_one.put(i % 7 if i < 5 else i, i, 10)
    batched = CommandResults().put_many([(i % 7 if i < 5 else i, i) for i in range(25)], 10)
    assert batched == one_by_one


# --- config and modules ---------------------------------------------------------------------------


def test_make_config_defaults_and_replace() -> None:
    c = rafted.make_config(JustAnInt)
    assert (c.heartbeat_timeout, c.election_timeout, c.election_timeout_clock_drift_margin) == (
        200,
        1000,
        1000,
    )
    assert c.max_retained_command_results == 100
    assert c.leader_hook_module is rafted.NoOp and c.communication_module is rafted.RemoteMessageGateway
    c2 = dataclasses.replace(c, election_timeout=600)
    assert c2.election_timeout == 600 and c2 != c and c2 == dataclasses.replace(c, election_timeout=600)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.election_timeout = 5  # type: ignore[misc]
    assert rafted.RaftedValue.make_config is rafted.make_config


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"heartbeat_timeout": 0}, ValueError, "heartbeat_timeout"),
        ({"election_timeout": -5}, ValueError, "election_timeout"),
        ({"election_timeout": 1.5}, TypeError, "election_timeout"),
        ({"heartbeat_timeout": True}, TypeError, "heartbeat_timeout"),
        ({"max_retained_command_results": "10"}, TypeError, "max_retained_command_results"),
        ({"max_retained_command_results": 0}, ValueError, "results must be a positive int, got"),
        ({"election_timeout_clock_drift_margin": 0}, ValueError, "election_timeout_clock_drift_margin"),
        # no timer could wait that long: replicated by change_config, it left a group that could
        # never elect a leader again
        ({"election_timeout": 10**13}, ValueError, "election_timeout must be at most 4294967295"),
        ({"heartbeat_timeout": 2**32}, ValueError, "heartbeat_timeout must be at most"),
        ({"leader_hook_module": object()}, TypeError, "leader_hook_module"),
        ({"communication_module": object()}, TypeError, "communication_module"),
    ],
)
def test_make_config_rejects_bad_options(kwargs: dict, exc: type, words: str) -> None:
    with pytest.raises(exc, match=words):
        rafted.make_config(JustAnInt, **kwargs)


def test_make_config_rejects_incomplete_data_modules() -> None:
    class NoQuery(rafted.Data):
        def new():
            return 0

        def command(data, arg):
            return data, data

    with pytest.raises(TypeError, match="lacks query"):
        rafted.make_config(NoQuery)
    with pytest.raises(TypeError, match="data_module"):
        rafted.make_config(42)


def test_messages_are_compact_and_picklable() -> None:
    m = AppendEntriesResponse(from_=A, term=1, success=True, i_replicated=3, leader_timestamp=9)
    assert not hasattr(m, "__dict__")
    assert pickle.loads(pickle.dumps(m)) == m


def test_every_member_message_round_trips_through_pickle() -> None:
    from rafted import rpc

    req = AppendEntriesRequest(A, 3, (2, 7), [(3, 8, "command", ((B, None), "inc", "id"))], 7, 1234)
    messages = [
        req,
        AppendEntriesResponse(B, 3, False, 5, 1234),
        rpc.RequestVoteRequest(4, B, (3, 8), True),
        rpc.RequestVoteResponse(A, 4, True),
        rpc.InstallSnapshot({A, B}, 4, (4, 9, "leader_elected", [A]), CONF, 17, {"k": 1}),
        rpc.InstallSnapshotCompressed(b"\x00snapshot", 4, A),
        TimeoutNow(req),
    ]
    assert {type(m) for m in messages} == set(rpc.MEMBER_MESSAGES)
    for m in messages:
        copy = pickle.loads(pickle.dumps(m, protocol=5))
        assert type(copy) is type(m) and copy == m


def test_value_copies_leave_the_original_untouched() -> None:
    from rafted._values import replace

    m = Members.Members(leader=A, all={A, B})
    m2 = replace(m, leader=B)
    assert (m.leader, m2.leader, m2.all) == (A, B, {A, B}) and type(m2) is Members.Members
    assert replace(m) == m and replace(m) is not m
    with pytest.raises(TypeError, match="no field"):
        replace(m, leeder=B)

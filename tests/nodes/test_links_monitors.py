"""Links, exit signals and monitors, with Erlang's rules.

* an abnormal exit kills linked processes unless they trap exits; trapping turns the signal into
  ``("EXIT", pid, reason)``; ``"normal"`` never kills;
* ``exit(pid, "kill")`` cannot be trapped: the victim and its links see ``"killed"``;
* a process that raises exits with ``("exception", exc, traceback_text)``, one that raises
  ``nodes.Exit(reason)`` with ``reason``;
* a monitor reports ``("DOWN", ref, "process", pid_or_(name, node), reason)`` once, ``"noproc"``
  at once for a target that is already gone.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from dist_peer_helpers import wait_until_true
from process_helpers import WAIT, is_down, is_exit_from, wait_down, wait_gone

import nodes
from nodes import Exit, Pid, Ref

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("no_leaked_processes")]



# -- helpers -----------------------------------------------------------------------------------

def idle() -> None:
    """Wait for "stop", then return (exit ``normal``)."""
    nodes.receive(match=lambda m: m == "stop")


def exit_on_go(reason: object) -> None:
    nodes.receive(match=lambda m: m == "go")
    raise Exit(reason)


def raise_on_go() -> None:
    nodes.receive(match=lambda m: m == "go")
    raise ValueError("bad input")


def link_to(other: Pid, parent: Pid) -> None:
    """Link to ``other``, tell ``parent``, then idle."""
    nodes.link(other)
    nodes.send(parent, ("linked", nodes.self()))
    idle()


def spawn_linked_pair(parent: Pid) -> tuple[Pid, Pid]:
    """Two processes linked to each other (not to the caller): (idle one, one exiting "boom" on "go")."""
    crasher = nodes.spawn(exit_on_go, "boom")
    holder = nodes.spawn(link_to, crasher, parent)
    assert nodes.receive(WAIT, match=lambda m: m == ("linked", holder))
    return holder, crasher


def trapper(parent: Pid) -> None:
    """Trap exits and forward every message to ``parent`` until "stop"."""
    nodes.process_flag("trap_exit", True)
    nodes.send(parent, ("trapping", nodes.self()))
    while (msg := nodes.receive()) != "stop":
        nodes.send(parent, ("got", msg))


def spawn_trapper() -> Pid:
    pid = nodes.spawn(trapper, nodes.self())
    assert nodes.receive(WAIT, match=lambda m: m == ("trapping", pid))
    return pid


def stop(pid: Pid) -> None:
    ref = nodes.monitor(pid)
    nodes.send(pid, "stop")
    assert wait_down(ref) == "normal"


# -- links: exit signals that kill -------------------------------------------------------------

def test_an_abnormal_exit_kills_the_linked_process_with_the_same_reason() -> None:
    holder, crasher = spawn_linked_pair(nodes.self())
    holder_ref, crasher_ref = nodes.monitor(holder), nodes.monitor(crasher)
    nodes.send(crasher, "go")
    assert wait_down(crasher_ref) == "boom"
    assert wait_down(holder_ref) == "boom"


def test_links_are_bidirectional() -> None:
    holder, crasher = spawn_linked_pair(nodes.self())
    crasher_ref = nodes.monitor(crasher)
    nodes.exit(holder, "shutdown")  # the process that made the link dies: the other one goes too
    assert wait_down(crasher_ref) == "shutdown"
    assert not nodes.is_alive(holder)


def test_an_exit_cascades_along_a_chain_of_links() -> None:
    parent = nodes.self()
    tail = nodes.spawn(exit_on_go, ("shutdown", "chain"))
    middle = nodes.spawn(link_to, tail, parent)
    assert nodes.receive(WAIT, match=lambda m: m == ("linked", middle))
    head = nodes.spawn(link_to, middle, parent)
    assert nodes.receive(WAIT, match=lambda m: m == ("linked", head))
    refs = [nodes.monitor(pid) for pid in (tail, middle, head)]
    nodes.send(tail, "go")
    assert [wait_down(ref) for ref in refs] == [("shutdown", "chain")] * 3


def test_spawn_link_kills_the_spawning_process_when_the_child_crashes() -> None:
    parent = nodes.self()

    def supervisor_like() -> None:
        child = nodes.spawn_link(exit_on_go, "child failed")
        nodes.send(parent, ("child", child))
        idle()

    pid = nodes.spawn(supervisor_like)
    ref = nodes.monitor(pid)
    _, child = nodes.receive(WAIT, match=lambda m: m[0] == "child")
    nodes.send(child, "go")
    assert wait_down(ref) == "child failed"


def test_a_normal_exit_does_not_kill_linked_processes() -> None:
    me = nodes.self()
    child = nodes.spawn_link(idle)
    stop(child)
    assert nodes.self() == me  # still the same, living process
    assert nodes.flush() == []  # not trapping: no message either


def test_trapping_exits_turns_the_signal_into_an_exit_message() -> None:
    me = nodes.self()
    assert nodes.process_flag("trap_exit", True) is False  # returns the old value
    child = nodes.spawn_link(exit_on_go, "boom")
    nodes.send(child, "go")
    assert nodes.receive(WAIT, match=is_exit_from(child)) == ("EXIT", child, "boom")
    assert nodes.self() == me


def test_a_trapping_process_sees_normal_exits_of_its_links() -> None:
    nodes.process_flag("trap_exit", True)
    child = nodes.spawn_link(idle)
    nodes.send(child, "stop")
    assert nodes.receive(WAIT, match=is_exit_from(child)) == ("EXIT", child, "normal")


def test_turning_trap_exit_off_again_makes_signals_kill() -> None:
    nodes.process_flag("trap_exit", True)
    assert nodes.process_flag("trap_exit", False) is True
    child = nodes.spawn_link(exit_on_go, "boom")
    nodes.send(child, "go")
    with pytest.raises(Exit) as excinfo:
        nodes.receive(WAIT)
    assert excinfo.value.reason == "boom"


def test_a_process_that_raises_exits_with_the_exception_and_its_traceback() -> None:
    nodes.process_flag("trap_exit", True)
    child = nodes.spawn_link(raise_on_go)
    ref = nodes.monitor(child)
    nodes.send(child, "go")
    _, _, reason = nodes.receive(WAIT, match=is_exit_from(child))
    tag, exc, traceback_text = reason
    assert tag == "exception"
    assert type(exc) is ValueError and str(exc) == "bad input"
    assert isinstance(traceback_text, str)
    assert "ValueError: bad input" in traceback_text
    assert 'raise ValueError("bad input")' in traceback_text  # the offending source line
    assert wait_down(ref) is reason  # monitors see the same reason


def test_raising_exit_ends_the_process_with_that_reason() -> None:
    nodes.process_flag("trap_exit", True)
    child = nodes.spawn_link(exit_on_go, ("shutdown", {"why": "asked"}))
    nodes.send(child, "go")
    assert nodes.receive(WAIT, match=is_exit_from(child)) == ("EXIT", child, ("shutdown", {"why": "asked"}))


def test_raising_exit_normal_is_a_normal_exit() -> None:
    me = nodes.self()
    child = nodes.spawn_link(exit_on_go, "normal")
    ref = nodes.monitor(child)
    nodes.send(child, "go")
    assert wait_down(ref) == "normal"
    assert nodes.self() == me


def test_a_process_exiting_with_reason_kill_sends_an_ordinary_trappable_kill_to_its_links() -> None:
    """Only exit(pid, "kill") is untrappable; "kill" as a process's own exit reason travels like any other."""
    nodes.process_flag("trap_exit", True)
    child = nodes.spawn_link(exit_on_go, "kill")
    nodes.send(child, "go")
    assert nodes.receive(WAIT, match=is_exit_from(child)) == ("EXIT", child, "kill")


# -- exit/2 ----------------------------------------------------------------------------------------

def test_exit_kill_cannot_be_trapped_and_links_see_killed() -> None:
    nodes.process_flag("trap_exit", True)
    victim = nodes.spawn_link(trapper, nodes.self())
    assert nodes.receive(WAIT, match=lambda m: m == ("trapping", victim))
    ref = nodes.monitor(victim)
    assert nodes.exit(victim, "kill") is True
    assert not nodes.is_alive(victim)
    assert nodes.receive(WAIT, match=is_exit_from(victim)) == ("EXIT", victim, "killed")
    assert wait_down(ref) == "killed"
    assert nodes.flush() == []  # the victim never got to forward anything


def test_killed_travels_on_through_links_as_an_ordinary_reason() -> None:
    nodes.process_flag("trap_exit", True)
    parent = nodes.self()

    def middle_body() -> None:
        victim = nodes.spawn_link(idle)
        nodes.send(parent, ("victim", victim))
        idle()

    middle = nodes.spawn_link(middle_body)
    _, victim = nodes.receive(WAIT, match=lambda m: m[0] == "victim")
    nodes.exit(victim, "kill")
    # the middle process does not trap: the "killed" it gets from its link kills it, and we see that
    assert nodes.receive(WAIT, match=is_exit_from(middle)) == ("EXIT", middle, "killed")


def test_an_exit_signal_kills_a_process_that_does_not_trap() -> None:
    pid = nodes.spawn(idle)
    ref = nodes.monitor(pid)
    nodes.exit(pid, ("shutdown", 1))
    assert wait_down(ref) == ("shutdown", 1)


def test_an_exit_signal_to_a_trapping_process_is_a_message_naming_the_sender() -> None:
    pid = spawn_trapper()
    nodes.exit(pid, "please stop")
    assert nodes.receive(WAIT) == ("got", ("EXIT", nodes.self(), "please stop"))
    assert nodes.is_alive(pid)
    nodes.exit(pid, "normal")  # "normal" too, for a trapping process
    assert nodes.receive(WAIT) == ("got", ("EXIT", nodes.self(), "normal"))
    stop(pid)


def test_an_exit_signal_with_reason_normal_is_ignored_by_a_process_that_does_not_trap() -> None:
    parent = nodes.self()

    def echo_once() -> None:
        nodes.send(parent, ("echo", nodes.receive()))

    pid = nodes.spawn(echo_once)
    nodes.exit(pid, "normal")
    assert nodes.is_alive(pid)
    nodes.send(pid, "still here")
    assert nodes.receive(WAIT) == ("echo", "still here")
    wait_gone(pid)


def test_exit_self_normal_ends_the_calling_process() -> None:
    parent = nodes.self()

    def body() -> None:
        nodes.receive(match=lambda m: m == "go")
        nodes.exit(nodes.self(), "normal")
        nodes.send(parent, "still running after exit(self(), normal)")

    pid = nodes.spawn(body)
    ref = nodes.monitor(pid)
    nodes.send(pid, "go")
    assert wait_down(ref) == "normal"
    assert nodes.flush() == []


def test_exit_self_while_trapping_is_a_message() -> None:
    nodes.process_flag("trap_exit", True)
    me = nodes.self()
    nodes.exit(me, "note to self")
    assert nodes.receive(0) == ("EXIT", me, "note to self")
    assert nodes.self() == me


def test_exit_to_a_dead_process_is_a_no_op() -> None:
    pid = nodes.spawn(lambda: None)
    wait_gone(pid)
    assert nodes.exit(pid, "kill") is True
    assert nodes.exit(Pid("other@host", 1), "kill") is True  # not distributed: unreachable, no error


# -- link / unlink -------------------------------------------------------------------------------

def test_unlink_stops_an_exit_from_propagating() -> None:
    me = nodes.self()
    child = nodes.spawn_link(exit_on_go, "boom")
    assert nodes.unlink(child) is True
    ref = nodes.monitor(child)
    nodes.send(child, "go")
    assert wait_down(ref) == "boom"
    assert nodes.self() == me


def test_unlink_from_the_other_side_also_breaks_the_link() -> None:
    me = nodes.self()

    def body() -> None:
        nodes.receive(match=lambda m: m == "go")
        nodes.unlink(me)
        raise Exit("boom")

    child = nodes.spawn_link(body)
    ref = nodes.monitor(child)
    nodes.send(child, "go")
    assert wait_down(ref) == "boom"
    assert nodes.self() == me


def test_unlink_leaves_an_exit_message_already_queued_as_erlang_does() -> None:
    # erlang:unlink/1: "an {'EXIT', Id, _} message from the link can have been placed in the
    # caller's message queue before the call" -- it stays; the caller flushes it if it wants.
    nodes.process_flag("trap_exit", True)
    child = nodes.spawn_link(exit_on_go, "boom")
    ref = nodes.monitor(child)
    nodes.send(child, "go")
    assert wait_down(ref) == "boom"  # links are signalled before monitors: the EXIT is queued by now
    nodes.unlink(child)
    assert nodes.flush() == [("EXIT", child, "boom")]


def test_after_unlink_a_trapping_process_gets_no_exit_message() -> None:
    nodes.process_flag("trap_exit", True)
    child = nodes.spawn_link(exit_on_go, "boom")
    nodes.unlink(child)
    ref = nodes.monitor(child)
    nodes.send(child, "go")
    assert wait_down(ref) == "boom"
    assert nodes.flush() == []


def test_link_to_a_dead_process_raises_noproc_unless_trapping() -> None:
    dead = nodes.spawn(lambda: None)
    wait_gone(dead)
    me = nodes.self()
    with pytest.raises(Exit) as excinfo:
        nodes.link(dead)
    assert excinfo.value.reason == "noproc"
    assert nodes.self() == me  # the caller's process survives (the error is raised, not signalled)

    nodes.process_flag("trap_exit", True)
    assert nodes.link(dead) is True
    assert nodes.receive(0) == ("EXIT", dead, "noproc")


def test_linking_twice_and_linking_to_self_are_harmless() -> None:
    me = nodes.self()
    assert nodes.link(me) is True
    child = nodes.spawn(idle)
    nodes.link(child)
    nodes.link(child)
    nodes.unlink(child)  # one unlink removes the link however often it was made
    nodes.exit(child, "boom")
    assert wait_gone(child) in ("boom", "noproc")
    assert nodes.self() == me


@pytest.mark.parametrize("fn", [nodes.link, nodes.unlink, lambda x: nodes.exit(x, "kill")])
def test_link_unlink_and_exit_want_a_pid(fn) -> None:
    with pytest.raises(TypeError, match="Pid"):
        fn("not a pid")


def test_process_flag_rejects_unknown_flags() -> None:
    with pytest.raises(ValueError, match="trap_exit"):
        nodes.process_flag("priority", "high")



@pytest.mark.parametrize("value", ["no", 1, 0, None])
def test_process_flag_trap_exit_wants_a_bool(value: object) -> None:
    with pytest.raises(TypeError, match="bool"):
        nodes.process_flag("trap_exit", value)
    assert nodes.process_flag("trap_exit", False) is False  # the flag was left as it was

# -- monitors ------------------------------------------------------------------------------------

def test_a_monitor_reports_the_exit_reason_once() -> None:
    pid = nodes.spawn(exit_on_go, "boom")
    ref = nodes.monitor(pid)
    assert type(ref) is Ref
    nodes.send(pid, "go")
    assert nodes.receive(WAIT, match=is_down(ref)) == ("DOWN", ref, "process", pid, "boom")
    assert nodes.flush() == []


def test_a_monitor_reports_a_normal_exit() -> None:
    pid = nodes.spawn(idle)
    ref = nodes.monitor(pid)
    nodes.send(pid, "stop")
    assert nodes.receive(WAIT, match=is_down(ref)) == ("DOWN", ref, "process", pid, "normal")


def test_monitoring_a_dead_process_reports_noproc_at_once() -> None:
    pid = nodes.spawn(lambda: None)
    wait_gone(pid)
    ref = nodes.monitor(pid)
    assert nodes.receive(0) == ("DOWN", ref, "process", pid, "noproc")


def test_when_down_arrives_the_process_and_its_name_are_gone() -> None:
    pid = nodes.spawn(exit_on_go, "boom")
    nodes.register("down_check", pid)
    ref = nodes.monitor(pid)
    nodes.send(pid, "go")
    wait_down(ref)
    assert not nodes.is_alive(pid)
    assert nodes.whereis("down_check") is None


def test_a_monitor_is_one_way_and_each_monitor_reports_on_its_own() -> None:
    me = nodes.self()
    pid = nodes.spawn(exit_on_go, "boom")
    first, second = nodes.monitor(pid), nodes.monitor(pid)
    assert first != second
    nodes.send(pid, "go")
    assert wait_down(second) == "boom"
    assert wait_down(first) == "boom"
    assert nodes.self() == me  # a monitor is not a link: the watcher lives on


def test_a_dying_watcher_does_not_affect_the_process_it_monitors() -> None:
    target = nodes.spawn(idle)
    parent = nodes.self()

    def watcher() -> None:
        nodes.monitor(target)
        nodes.send(parent, "monitoring")
        raise Exit("watcher failed")

    nodes.spawn(watcher)
    assert nodes.receive(WAIT) == "monitoring"
    assert nodes.is_alive(target)
    stop(target)


def test_monitoring_a_registered_name_reports_name_and_node() -> None:
    pid = nodes.spawn(idle)
    nodes.register("monitored_by_name", pid)
    by_name = nodes.monitor("monitored_by_name")
    by_tuple = nodes.monitor(("monitored_by_name", nodes.node()))
    nodes.send("monitored_by_name", "stop")
    assert nodes.receive(WAIT, match=is_down(by_name)) == (
        "DOWN", by_name, "process", ("monitored_by_name", "nonode@nohost"), "normal")
    assert nodes.receive(WAIT, match=is_down(by_tuple)) == (
        "DOWN", by_tuple, "process", ("monitored_by_name", "nonode@nohost"), "normal")


def _move_name(name: str) -> Pid:
    """Give ``name`` to a new idle process; its pid."""
    nodes.unregister(name)
    pid = nodes.spawn(idle)
    nodes.register(name, pid)
    return pid


def test_a_monitor_by_name_stays_on_the_process_that_held_the_name() -> None:
    first = nodes.spawn(idle)
    nodes.register("moving_name", first)
    ref = nodes.monitor("moving_name")
    second = _move_name("moving_name")
    nodes.exit(second, "not_the_monitored_one")
    wait_gone(second)
    nodes.exit(first, "the_monitored_one")
    assert nodes.receive(WAIT, match=is_down(ref)) == (
        "DOWN", ref, "process", ("moving_name", "nonode@nohost"), "the_monitored_one")


@pytest.mark.parametrize("how", ["demonitor", "watcher exits"])
def test_a_monitor_by_name_is_released_though_the_name_moved(how: str) -> None:
    first = nodes.spawn(idle)
    nodes.register("moving_name", first)

    def watch() -> None:
        ref = nodes.monitor("moving_name")
        nodes.receive(match=lambda m: m == "name moved")
        if how == "demonitor":
            nodes.demonitor(ref)
            nodes.receive(match=lambda m: m == "stop")

    watcher = nodes.spawn(watch)
    wait_until_true(lambda: nodes.process_info(first, "monitored_by") == ("monitored_by", [watcher]),
                    WAIT / 1000, "the monitor")
    second = _move_name("moving_name")
    nodes.send(watcher, "name moved")
    if how == "demonitor":
        wait_until_true(lambda: nodes.process_info(watcher, "monitors") == ("monitors", []),
                        WAIT / 1000, "the demonitor")
        stop(watcher)
    wait_gone(watcher)
    assert nodes.process_info(first, "monitored_by") == ("monitored_by", [])
    assert nodes.process_info(second, "monitored_by") == ("monitored_by", [])
    stop(first)
    stop(second)


def test_monitoring_an_unregistered_name_reports_noproc_at_once() -> None:
    ref = nodes.monitor("nobody_has_this_name")
    assert nodes.receive(0) == ("DOWN", ref, "process", ("nobody_has_this_name", "nonode@nohost"), "noproc")


def test_monitoring_a_name_on_an_unreachable_node_reports_noconnection() -> None:
    ref = nodes.monitor(("rex", "other@host"))
    assert nodes.receive(WAIT, match=is_down(ref)) == ("DOWN", ref, "process", ("rex", "other@host"),
                                                       "noconnection")


def test_demonitor_before_the_exit_means_no_down() -> None:
    pid = nodes.spawn(idle)
    ref = nodes.monitor(pid)
    assert nodes.demonitor(ref) is True
    nodes.exit(pid, "kill")  # signals are applied synchronously: a DOWN would be queued by now
    assert nodes.flush() == []


def test_demonitor_drops_a_down_already_queued() -> None:
    pid = nodes.spawn(idle)
    ref = nodes.monitor(pid)
    nodes.send(nodes.self(), "before")
    nodes.exit(pid, "kill")  # signals are applied synchronously: the DOWN is queued now
    nodes.send(nodes.self(), "after")
    nodes.demonitor(ref)
    assert nodes.flush() == ["before", "after"]


def test_demonitor_of_a_spent_or_unknown_ref_is_harmless() -> None:
    pid = nodes.spawn(lambda: None)
    ref = nodes.monitor(pid)
    wait_down(ref)
    assert nodes.demonitor(ref) is True
    assert nodes.demonitor(nodes.make_ref()) is True
    with pytest.raises(TypeError, match="Ref"):
        nodes.demonitor("not a ref")
    # a truthy "no" must not be taken for yes
    with pytest.raises(TypeError, match="flush must be a bool"):
        nodes.demonitor(nodes.make_ref(), flush="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flag must be a bool"):
        nodes.monitor_node("a@b", "no")  # type: ignore[arg-type]


def test_monitor_wants_a_server_reference() -> None:
    with pytest.raises(TypeError, match="Pid"):
        nodes.monitor(42)


def test_spawn_monitor_reports_even_an_instant_death_with_its_own_reason() -> None:
    # the monitor is in place before the process runs: never "noproc", however fast it dies
    def die_at_once(reason: str) -> None:
        raise Exit(reason)

    for k in range(50):
        pid, ref = nodes.spawn_monitor(die_at_once, f"bye{k}")
        assert type(pid) is Pid and type(ref) is Ref
        assert nodes.receive(WAIT, match=is_down(ref)) == ("DOWN", ref, "process", pid, f"bye{k}")
    pid, ref = nodes.spawn_monitor(lambda: None)
    assert wait_down(ref) == "normal"
    with pytest.raises(TypeError, match="callable"):
        nodes.spawn_monitor(42)


# -- signal order between two processes ---------------------------------------------------------

def _stream(kind: str, to: Pid, threads: list[threading.Thread]) -> None:
    """Send to ``to`` as fast as possible, forever: messages, casts or exit signals."""
    threads.append(threading.current_thread())
    i = 0
    while True:
        if kind == "send":
            nodes.send(to, ("m", i))
        elif kind == "cast":
            nodes.gen_statem.cast(to, ("m", i))
        else:
            nodes.exit(to, ("m", i))  # to traps exits: ("EXIT", sender, ("m", i))
        i += 1


@pytest.mark.parametrize("kind", ["send", "cast", "exit"])
def test_nothing_a_killed_process_sent_arrives_after_its_exit_signal(kind: str) -> None:
    # Erlang orders the signals between two processes: what P sent before it was killed comes
    # before P's EXIT. P's thread may be half-way through a send when another thread kills it;
    # the send must then still come first, or not at all.
    nodes.process_flag("trap_exit", True)
    rng = random.Random(7)
    for _ in range(100):
        threads: list[threading.Thread] = []
        pid = nodes.spawn_link(_stream, kind, nodes.self(), threads)
        time.sleep(rng.random() * 0.0005)  # the kill lands at a different point of the stream each time
        nodes.exit(pid, "kill")
        while nodes.receive(WAIT) != ("EXIT", pid, "killed"):
            pass  # what it sent before it died
        wait_until_true(lambda threads=threads: threads, WAIT / 1000, "the sender's thread")
        threads[0].join(WAIT / 1000)  # it has unwound: all it will ever send has been queued
        assert not threads[0].is_alive()
        late = nodes.flush()
        assert late == [], f"{kind}: after ('EXIT', P, 'killed') came {late[:3]}"

"""Registered names (register / unregister / whereis, sending by name) and timers (send_after /
cancel_timer / read_timer, all on one scheduler thread for the whole node)."""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest
from process_helpers import WAIT, is_down, wait_gone

import nodes
from nodes import Exit, Pid, Ref

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leaked_processes")]



def forwarder(to: Pid) -> None:
    """Forward every message to ``to`` as ("fwd", msg) until "stop"."""
    while (msg := nodes.receive()) != "stop":
        nodes.send(to, ("fwd", msg))


def exit_on_go(reason: object) -> None:
    nodes.receive(match=lambda m: m == "go")
    raise Exit(reason)


def stop(pid: Pid) -> None:
    ref = nodes.monitor(pid)
    nodes.send(pid, "stop")
    assert nodes.receive(WAIT, match=is_down(ref))[4] == "normal"


# -- register / unregister / whereis ---------------------------------------------------------------

def test_register_whereis_send_by_name_and_unregister() -> None:
    pid = nodes.spawn(forwarder, nodes.self())
    assert nodes.whereis("reg_basic") is None
    assert nodes.register("reg_basic", pid) is True
    assert nodes.whereis("reg_basic") == pid
    nodes.send("reg_basic", "by name")
    nodes.send(("reg_basic", nodes.node()), "by name and node")
    nodes.send(("reg_basic", "nonode@nohost"), "by name and the non-distributed node name")
    assert [nodes.receive(WAIT) for _ in range(3)] == [
        ("fwd", "by name"), ("fwd", "by name and node"), ("fwd", "by name and the non-distributed node name")]
    assert nodes.unregister("reg_basic") is True
    assert nodes.whereis("reg_basic") is None
    nodes.send("reg_basic", "dropped")  # no longer a name: dropped without an error
    assert nodes.is_alive(pid)  # unregistering does not touch the process
    stop(pid)
    assert nodes.flush() == []


def test_registering_a_taken_name_raises_a_clear_error_and_keeps_the_holder() -> None:
    holder = nodes.spawn(forwarder, nodes.self())
    other = nodes.spawn(forwarder, nodes.self())
    nodes.register("reg_taken", holder)
    try:
        with pytest.raises(ValueError, match="reg_taken.*already registered"):
            nodes.register("reg_taken", other)
        assert nodes.whereis("reg_taken") == holder
    finally:
        stop(holder)
        stop(other)


def test_a_process_holds_at_most_one_name() -> None:
    pid = nodes.spawn(forwarder, nodes.self())
    nodes.register("reg_first", pid)
    with pytest.raises(ValueError, match="already registered"):
        nodes.register("reg_second", pid)
    assert nodes.whereis("reg_second") is None
    stop(pid)


def test_registering_a_dead_process_raises() -> None:
    pid = nodes.spawn(lambda: None)
    wait_gone(pid)
    with pytest.raises(ValueError, match="not a live"):
        nodes.register("reg_dead", pid)
    assert nodes.whereis("reg_dead") is None


@pytest.mark.parametrize("how", ["normal", "crash", "kill"])
def test_the_name_of_a_dead_process_is_freed(how: str) -> None:
    pid = nodes.spawn(exit_on_go, "normal" if how == "normal" else "crash")
    nodes.register("reg_freed", pid)
    ref = nodes.monitor(pid)
    if how == "kill":
        nodes.exit(pid, "kill")
    else:
        nodes.send("reg_freed", "go")
    nodes.receive(WAIT, match=is_down(ref))
    assert nodes.whereis("reg_freed") is None
    successor = nodes.spawn(forwarder, nodes.self())
    assert nodes.register("reg_freed", successor) is True  # the name can be taken again
    nodes.send("reg_freed", "to the successor")
    assert nodes.receive(WAIT) == ("fwd", "to the successor")
    stop(successor)
    assert nodes.whereis("reg_freed") is None


def test_the_test_threads_own_process_can_be_registered() -> None:
    me = nodes.self()
    nodes.register("reg_test_thread", me)
    try:
        assert nodes.whereis("reg_test_thread") == me
        nodes.send("reg_test_thread", "hello")
        assert nodes.receive(0) == "hello"
    finally:
        nodes.unregister("reg_test_thread")


def test_unregistering_an_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="not a registered name"):
        nodes.unregister("reg_never_registered")


def test_register_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="Pid"):
        nodes.register("reg_bad", "not a pid")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        nodes.register(42, nodes.self())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        nodes.register("", nodes.self())
    with pytest.raises(ValueError, match="not a live"):
        nodes.register("reg_remote", Pid("other@host", 1))


@pytest.mark.parametrize("fn", [nodes.whereis, nodes.unregister], ids=["whereis", "unregister"])
@pytest.mark.parametrize("name", [5, [], ("reg_name", "node@host"), None, b"reg_bytes"])
def test_whereis_and_unregister_want_a_name_str(fn, name: object) -> None:
    with pytest.raises(TypeError, match=r"registered name \(str\)"):
        fn(name)


def test_whereis_of_an_unknown_name_is_none() -> None:
    assert nodes.whereis("reg_nobody") is None


# -- send_after / cancel_timer / read_timer --------------------------------------------------------

def test_send_after_delivers_after_the_time_has_passed() -> None:
    started = time.monotonic()
    ref = nodes.send_after(100, nodes.self(), "tick")
    assert type(ref) is Ref
    assert nodes.receive(WAIT) == "tick"
    assert time.monotonic() - started >= 0.099


def test_send_after_zero_delivers_promptly() -> None:
    nodes.send_after(0, nodes.self(), "now")
    assert nodes.receive(WAIT) == "now"


def test_send_after_to_a_name_resolves_the_name_when_the_timer_fires() -> None:
    nodes.send_after(200, "reg_timer_target", "late")
    pid = nodes.spawn(forwarder, nodes.self())
    nodes.register("reg_timer_target", pid)  # registered after the timer was set
    assert nodes.receive(WAIT) == ("fwd", "late")
    stop(pid)


def test_timers_fire_in_deadline_order_whatever_the_order_they_were_set() -> None:
    me = nodes.self()
    nodes.send_after(300, me, "c")
    nodes.send_after(100, me, "a")
    nodes.send_after(200, me, "b")
    assert [nodes.receive(WAIT) for _ in range(3)] == ["a", "b", "c"]


def test_timers_with_the_same_delay_fire_in_the_order_they_were_set() -> None:
    me = nodes.self()
    for i in range(100):
        nodes.send_after(50, me, i)
    assert [nodes.receive(WAIT) for _ in range(100)] == list(range(100))


def test_cancel_timer_returns_the_remaining_ms_and_the_message_never_comes() -> None:
    me = nodes.self()
    ref = nodes.send_after(1000, me, "cancelled")
    left = nodes.cancel_timer(ref)
    assert type(left) is int and 0 < left <= 1000
    # a later timer on the same scheduler fires after the cancelled one would have
    nodes.send_after(1100, me, "marker")
    assert nodes.receive(WAIT, match=lambda m: m == "marker") == "marker"
    assert nodes.flush() == []


def test_cancel_timer_returns_false_once_the_timer_fired_or_was_cancelled() -> None:
    fired = nodes.send_after(0, nodes.self(), "fired")
    assert nodes.receive(WAIT) == "fired"
    assert nodes.cancel_timer(fired) is False
    pending = nodes.send_after(10_000, nodes.self(), "never")
    assert nodes.cancel_timer(pending) is not False
    assert nodes.cancel_timer(pending) is False  # cancelling twice
    assert nodes.cancel_timer(nodes.make_ref()) is False  # never a timer


def test_read_timer_tells_the_time_left() -> None:
    ref = nodes.send_after(10_000, nodes.self(), "never")
    left = nodes.read_timer(ref)
    assert type(left) is int and 5_000 < left <= 10_000
    nodes.cancel_timer(ref)
    assert nodes.read_timer(ref) is False


def test_a_timer_for_a_dead_process_is_dropped_and_later_timers_still_fire() -> None:
    dead = nodes.spawn(lambda: None)
    wait_gone(dead)
    nodes.send_after(0, dead, "lost")
    nodes.send_after(0, "reg_no_such_name", "lost")
    nodes.send_after(20, nodes.self(), "still working")
    assert nodes.receive(WAIT) == "still working"


def test_a_timer_to_a_process_is_cancelled_when_the_process_dies() -> None:
    # as Erlang's: read_timer and cancel_timer then say False, as for a timer that fired
    release = threading.Event()
    target = nodes.spawn(release.wait)
    read_ref = nodes.send_after(60_000, target, "never")
    cancel_ref = nodes.send_after(60_000, target, "never")
    assert 0 < nodes.read_timer(read_ref) <= 60_000  # alive: the time left
    release.set()
    wait_gone(target)
    assert nodes.read_timer(read_ref) is False
    assert nodes.cancel_timer(cancel_ref) is False
    assert nodes.cancel_timer(read_ref) is False


@pytest.mark.timeout(30)
def test_a_thousand_timers_share_one_scheduler_thread() -> None:
    me = nodes.self()
    nodes.send_after(0, me, "warm up")  # the scheduler thread exists from here on
    assert nodes.receive(WAIT) == "warm up"
    threads_before = threading.active_count()
    refs = [nodes.send_after(200, me, ("t", i)) for i in range(1000)]
    assert threading.active_count() <= threads_before
    assert len(set(refs)) == 1000
    received = [nodes.receive(WAIT) for _ in range(1000)]
    assert sorted(received) == [("t", i) for i in range(1000)]
    assert threading.active_count() <= threads_before


def test_cancelled_timers_do_not_pile_up_in_memory() -> None:
    # a process re-arming a long timer on every message (an idle time-out) cancels as often
    # as it sets: what it cancelled must not be kept until the hour is over
    me = nodes.self()
    nodes.cancel_timer(nodes.send_after(3_600_000, me, "warm up"))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50_000):
            assert nodes.cancel_timer(nodes.send_after(3_600_000, me, "idle")) is not False
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, f"50,000 cancelled timers left {grown:,} bytes behind"


def test_live_timers_fire_in_order_among_many_cancelled_ones() -> None:
    # the cancelled ones are cleared out while these wait: none of these may be lost or reordered
    me = nodes.self()
    order = [(k * 7919) % 200 for k in range(200)]  # every slot once, set in a scrambled order
    t0 = time.monotonic()
    for k in order:  # deadlines 2 ms apart, from one origin whatever the time each call takes
        ms = (t0 + 0.6 + 0.002 * k - time.monotonic()) * 1000
        nodes.send_after(max(0.0, ms), me, ("live", k))
    for i in range(10_000):  # each cancelled one due before, among or after the live ones
        nodes.cancel_timer(nodes.send_after(i % 1200, me, "cancelled"))
    assert [nodes.receive(WAIT) for _ in range(200)] == [("live", k) for k in range(200)]
    assert nodes.flush() == []


@pytest.mark.parametrize("how", ["returns", "killed"])
def test_the_timers_of_a_process_go_when_it_dies(how: str) -> None:
    # as Erlang's: not an hour later, when they would have fired, nor at some later clean-up
    release = threading.Event()
    target = nodes.spawn(release.wait)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        refs = [nodes.send_after(3_600_000, target, "never") for _ in range(20_000)]
        if how == "killed":
            nodes.exit(target, "kill")
        release.set()
        wait_gone(target)
        del refs
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, f"a dead process's 20,000 timers left {grown:,} bytes behind"


@pytest.mark.parametrize("ms", [-1, "10", None])
def test_send_after_rejects_a_bad_time(ms: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        nodes.send_after(ms, nodes.self(), "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("ms", [float("inf"), float("nan"), 10**13, nodes.MAX_TIMEOUT_MS + 1])
def test_send_after_refuses_a_time_no_timer_can_wait_and_the_timers_go_on(ms: object) -> None:
    # once accepted, such a time stopped the node's timer thread: no timer fired again
    with pytest.raises(ValueError, match="at most 4294967295"):
        nodes.send_after(ms, nodes.self(), "never")  # type: ignore[arg-type]
    far = nodes.send_after(nodes.MAX_TIMEOUT_MS, nodes.self(), "far")  # the bound itself is fine
    nodes.send_after(10, nodes.self(), "soon")
    assert nodes.receive(5_000) == "soon"
    assert nodes.cancel_timer(far) > nodes.MAX_TIMEOUT_MS - 60_000
    assert nodes.flush() == []


@pytest.mark.parametrize("ms", [True, False, "10", None, [10]])
def test_send_after_wants_a_number_of_ms_not_a_bool(ms: object) -> None:
    with pytest.raises(TypeError, match="number of ms"):
        nodes.send_after(ms, nodes.self(), "x")  # type: ignore[arg-type]
    assert nodes.flush() == []


@pytest.mark.parametrize("fn", [nodes.cancel_timer, nodes.read_timer], ids=["cancel_timer", "read_timer"])
@pytest.mark.parametrize("ref", [None, 42, "timer", Pid("nonode@nohost", 1)])
def test_cancel_timer_and_read_timer_want_a_timer_ref(fn, ref: object) -> None:
    with pytest.raises(TypeError, match="timer ref"):
        fn(ref)


def test_send_after_rejects_a_bad_destination_at_the_call_site() -> None:
    with pytest.raises(TypeError):
        nodes.send_after(10, 42, "x")  # type: ignore[arg-type]

"""Processes on the local node: Pid/Ref/Exit values, self(), spawn, send, selective receive, flush,
and the processes that plain threads (the REPL, a test) get on first use."""

from __future__ import annotations

import gc
import pickle
import re
import sys
import threading
import time

import pytest
from process_helpers import WAIT, check_malformed_node_names_are_wrong_arguments, is_down, wait_gone

import nodes
from nodes import Exit, Pid, Ref
from nodes.terms import _pid_from_key, _SeenPids

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("no_leaked_processes")]



# -- helpers -----------------------------------------------------------------------------------

def echo() -> None:
    """Answer ``(sender, payload)`` with ``payload``; return on ``"stop"``."""
    while True:
        msg = nodes.receive()
        if msg == "stop":
            return
        sender, payload = msg
        nodes.send(sender, payload)


def stop(pid: Pid) -> None:
    ref = nodes.monitor(pid)
    nodes.send(pid, "stop")
    assert nodes.receive(WAIT, match=is_down(ref))[4] == "normal"


# -- Pid, Ref, Exit ------------------------------------------------------------------------------

def test_pid_prints_like_erlang_and_names_its_node() -> None:
    me = nodes.self()
    assert re.fullmatch(r"<nonode@nohost\.\d+\.0>", repr(me))
    assert str(me) == repr(me)
    assert me.node == "nonode@nohost" == nodes.node()
    assert repr(Pid("nonode@nohost", 42)) == "<nonode@nohost.42.0>"
    assert repr(Pid("1@host", 7)) == "<1@host.7.0>"


def test_pids_are_hashable_comparable_and_picklable() -> None:
    first = nodes.spawn(echo)
    second = nodes.spawn(echo)
    try:
        assert first != second
        assert first < second and second > first and first <= second and second >= first
        assert sorted([second, first]) == [first, second]
        assert {first: "a", second: "b"}[first] == "a"
        assert len({first, second, first}) == 2

        copy = pickle.loads(pickle.dumps(first))
        assert copy == first and hash(copy) == hash(first) and copy.node == first.node
        # an unpickled pid is as good as the original: it addresses the same process
        nodes.send(copy, (nodes.self(), "via a copy"))
        assert nodes.receive(WAIT) == "via a copy"
    finally:
        stop(first)
        stop(second)


def test_pid_equality_is_by_value_and_never_matches_other_types() -> None:
    me = nodes.self()
    assert me == Pid(me.node, me.id, me.creation)
    assert me != repr(me)
    assert me != (me.node, me.id, me.creation)
    assert Pid("a@h", 1) != Pid("b@h", 1)
    assert Pid("a@h", 1, 1) != Pid("a@h", 1, 2)  # a pid of an earlier incarnation is another pid


def test_pids_are_immutable() -> None:
    me = nodes.self()
    with pytest.raises(AttributeError):
        me.id = 99  # type: ignore[misc]


def test_ordering_a_pid_against_another_type_raises_type_error() -> None:
    with pytest.raises(TypeError):
        _ = nodes.self() < 3  # type: ignore[operator]


def test_refs_are_unique_hashable_picklable_and_ordered() -> None:
    refs = [nodes.make_ref() for _ in range(1000)]
    assert len(set(refs)) == 1000
    assert all(type(r) is Ref for r in refs)
    copy = pickle.loads(pickle.dumps(refs[0]))
    assert copy == refs[0] and hash(copy) == hash(refs[0])
    assert copy != refs[1]
    assert sorted(reversed(refs)) == refs  # made in order, sorted in order
    assert refs[0] < refs[1]


def test_refs_support_every_ordering_operator() -> None:
    a, b = nodes.make_ref(), nodes.make_ref()
    assert a <= b and b > a and b >= a  # type: ignore[operator]


def test_ref_equality_never_matches_other_types() -> None:
    ref = nodes.make_ref()
    assert ref != (ref.prefix, ref.n) and (ref.prefix, ref.n) != ref
    assert ref != tuple(ref)
    assert len({ref, (ref.prefix, ref.n)}) == 2
    with pytest.raises(TypeError):
        _ = ref < 3  # type: ignore[operator]


def python_calls_during(fn, *args) -> list[str]:
    """The Python functions (not C ones) that ``fn(*args)``, a C function, entered."""
    calls: list[str] = []

    def profile(frame, event, arg) -> None:
        if event == "call":
            calls.append(frame.f_code.co_qualname)

    gc.disable()  # a collection meanwhile could run weakref callbacks written in Python
    sys.setprofile(profile)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
        gc.enable()
    return calls


def test_pickling_pids_and_refs_runs_no_python_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # a batch of log entries names a pid and two refs per command: picking them apart in
    # Python was most of a follower's time spent on a batch
    monkeypatch.setattr(_SeenPids, "LIMIT", 10**9)  # other threads' loads cannot empty the table
    batch = [((Pid("1@h", 100 + i, 3), nodes.make_ref()), ("inc", i), nodes.make_ref()) for i in range(4)]
    blob = pickle.dumps(batch, protocol=5)
    assert pickle.loads(blob) == batch  # the first load meets the pids
    assert python_calls_during(pickle.dumps, batch, 5) == []
    assert python_calls_during(pickle.loads, blob) == []
    copy = pickle.loads(blob)
    assert copy == batch and [type(x) for x in copy[0][0]] == [Pid, Ref]


def test_the_table_unpickled_pids_are_looked_up_in_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_SeenPids, "LIMIT", 8)
    pids = [Pid("1@h", 1000 + i, 5) for i in range(50)]
    for pid in pids:
        copy = pickle.loads(pickle.dumps(pid))
        assert copy == pid and copy.node == "1@h" and copy.creation == 5
        assert len(_pid_from_key) <= 8


def test_exit_carries_an_erlang_reason_and_pickles() -> None:
    exc = Exit(("badrpc", "timeout"))
    assert isinstance(exc, Exception)
    assert exc.reason == ("badrpc", "timeout")
    assert "badrpc" in repr(exc) and "badrpc" in str(exc)
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is Exit and copy.reason == ("badrpc", "timeout")


# -- self() ------------------------------------------------------------------------------------

def test_the_test_thread_has_a_process_with_a_real_mailbox() -> None:
    me = nodes.self()
    assert nodes.self() == me  # stable within the thread
    assert nodes.is_alive(me)
    nodes.send(me, "to myself")
    assert nodes.receive(timeout=0) == "to myself"


def test_self_in_a_spawned_process_is_the_pid_spawn_returned() -> None:
    parent = nodes.self()
    pid = nodes.spawn(lambda: nodes.send(parent, ("i am", nodes.self())))
    assert nodes.receive(WAIT) == ("i am", pid)
    assert pid != parent
    wait_gone(pid)


def test_another_thread_gets_a_process_of_its_own() -> None:
    ready = threading.Event()
    seen: dict[str, object] = {}

    def thread_body() -> None:
        seen["pid"] = nodes.self()
        seen["again"] = nodes.self()
        ready.set()
        seen["got"] = nodes.receive(WAIT)

    thread = threading.Thread(target=thread_body)
    thread.start()
    assert ready.wait(WAIT / 1000)
    nodes.send(seen["pid"], "for the thread")
    thread.join(WAIT / 1000)
    assert not thread.is_alive()
    assert seen["got"] == "for the thread"
    assert seen["pid"] == seen["again"]
    assert seen["pid"] != nodes.self()


def test_a_thread_that_ends_ends_its_process_normally() -> None:
    """Like a process whose function returns: links and monitors on it see ``normal``."""
    box: dict[str, Pid] = {}
    ready = threading.Event()

    def thread_body() -> None:
        box["pid"] = nodes.self()
        ready.set()
        nodes.receive(WAIT)  # "bye"

    nodes.process_flag("trap_exit", True)
    thread = threading.Thread(target=thread_body)
    thread.start()
    assert ready.wait(WAIT / 1000)
    pid = box["pid"]
    nodes.link(pid)
    ref = nodes.monitor(pid)
    nodes.send(pid, "bye")
    thread.join(WAIT / 1000)
    assert nodes.receive(WAIT, match=is_down(ref)) == ("DOWN", ref, "process", pid, "normal")
    assert nodes.receive(WAIT, match=lambda m: m[0] == "EXIT") == ("EXIT", pid, "normal")
    assert not nodes.is_alive(pid)


# -- spawn ---------------------------------------------------------------------------------------

def test_spawn_runs_fn_with_its_args_in_a_new_thread() -> None:
    parent = nodes.self()

    def body(a: int, b: int, *, _parent: Pid = parent) -> None:
        nodes.send(_parent, (a + b, threading.get_ident()))

    pid = nodes.spawn(body, 2, 3)
    total, ident = nodes.receive(WAIT)
    assert total == 5
    assert ident != threading.get_ident()
    wait_gone(pid)


def test_spawn_rejects_a_non_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        nodes.spawn("not a function")  # type: ignore[arg-type]


def test_a_process_whose_function_returns_exits_normally_and_is_gone() -> None:
    pid = nodes.spawn(nodes.receive)
    assert nodes.is_alive(pid)
    ref = nodes.monitor(pid)
    nodes.send(pid, "anything")
    assert nodes.receive(WAIT, match=is_down(ref)) == ("DOWN", ref, "process", pid, "normal")
    assert not nodes.is_alive(pid)


def test_a_killed_process_blocked_in_receive_ends_its_thread() -> None:
    parent = nodes.self()

    def body() -> None:
        nodes.send(parent, threading.current_thread())
        nodes.receive()  # nothing will come: only the kill ends this

    pid = nodes.spawn(body)
    thread = nodes.receive(WAIT)
    nodes.exit(pid, "kill")
    assert not nodes.is_alive(pid)  # gone for the rest of the node at once
    thread.join(WAIT / 1000)
    assert not thread.is_alive()


def test_finished_processes_leave_no_threads_behind() -> None:
    parent = nodes.self()
    pids = [nodes.spawn(lambda: nodes.send(parent, threading.current_thread())) for _ in range(50)]
    threads = [nodes.receive(WAIT) for _ in pids]
    for thread in threads:
        thread.join(WAIT / 1000)
        assert not thread.is_alive()
    assert not any(nodes.is_alive(pid) for pid in pids)


def test_a_spawn_whose_thread_cannot_start_raises_and_leaves_nothing_behind(monkeypatch) -> None:
    import pykka

    def refuse(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    me = nodes.self()
    actors_before = len(pykka.ActorRegistry.get_all())
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", refuse)
        for spawn in (nodes.spawn_link, nodes.spawn_monitor):
            with pytest.raises(RuntimeError, match="can't start new thread"):
                spawn(nodes.receive)
    # no link or monitor to a pid that never ran, nothing in pykka's registry
    assert nodes.process_info(me, "links") == ("links", [])
    assert nodes.process_info(me, "monitors") == ("monitors", [])
    assert len(pykka.ActorRegistry.get_all()) == actors_before
    pid = nodes.spawn(echo)  # and spawning works again
    nodes.send(pid, (me, "back"))
    assert nodes.receive(WAIT) == "back"
    stop(pid)


# -- send ----------------------------------------------------------------------------------------

def test_send_never_raises_for_a_dead_or_unknown_destination() -> None:
    dead = nodes.spawn(lambda: None)
    wait_gone(dead)
    assert nodes.send(dead, "lost") == "lost"  # returns the message, like Erlang's `!`
    nodes.send("no_such_registered_name", "lost")
    nodes.send(("no_such_registered_name", nodes.node()), "lost")
    nodes.send(("some_name", "other@host"), "lost")  # not distributed: dropped
    nodes.send(Pid("other@host", 1), "lost")
    assert nodes.flush() == []


def test_a_malformed_node_name_is_dropped_by_send_and_refused_by_call(caplog) -> None:
    check_malformed_node_names_are_wrong_arguments(caplog)


def test_split_node_name_is_the_one_check_of_the_name_at_host_form() -> None:
    assert nodes.split_node_name("1@host") == ("1", "host")
    assert nodes.split_node_name("n1@10.0.0.1") == ("n1", "10.0.0.1")
    for bad in ("nohost", "@host", "a@", "a@b@c", "a b@host"):
        with pytest.raises(nodes.BadNodeName, match="name@host"):
            nodes.split_node_name(bad)
    assert issubclass(nodes.BadNodeName, ValueError)  # a wrong argument
    with pytest.raises(TypeError, match="name@host"):
        nodes.split_node_name(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a b", "a b@127.0.0.1", "@127.0.0.1", "a@", "a@b@c"])
def test_start_refuses_a_malformed_node_name_and_stays_local(name: str) -> None:
    with pytest.raises(ValueError, match="NAME@HOST"):
        nodes.start(name, cookie="unused")
    assert nodes.node() == "nonode@nohost"


@pytest.mark.parametrize("tick_ms, exc", [(0, ValueError), (-1000, ValueError), (2**32, ValueError),
                                          ("x", TypeError), (1.5, TypeError), (True, TypeError)])
def test_start_refuses_a_bad_tick_and_stays_local(tick_ms: object, exc: type) -> None:
    # a zero or negative tick once made the transport's thread spin without a pause
    with pytest.raises(exc, match="tick_ms|at most"):
        nodes.start("ticker", cookie="unused", tick_ms=tick_ms)
    assert nodes.node() == "nonode@nohost"


def test_start_on_an_address_not_of_this_host_raises_an_os_error_and_stays_local() -> None:
    # a long name's host part is the address to bind: 192.0.2.1 is nobody's (TEST-NET-1);
    # the bind fails before any port-mapper is asked or started
    with pytest.raises(OSError, match="cannot listen on '192.0.2.1'"):
        nodes.start("zz@192.0.2.1", cookie="unused")
    assert nodes.node() == "nonode@nohost"


def test_send_rejects_something_that_is_not_a_destination() -> None:
    with pytest.raises(TypeError, match="Pid"):
        nodes.send(42, "x")


def test_messages_between_two_processes_arrive_in_the_order_sent() -> None:
    parent = nodes.self()

    def sender() -> None:
        for i in range(1000):
            nodes.send(parent, i)

    pid = nodes.spawn(sender)
    assert [nodes.receive(WAIT) for _ in range(1000)] == list(range(1000))
    wait_gone(pid)


def test_messages_of_any_type_are_delivered_as_is() -> None:
    payload = {"from": nodes.self(), "ref": nodes.make_ref(), "list": [1, (2, None)], "obj": object()}
    nodes.send(nodes.self(), payload)
    assert nodes.receive(0) is payload  # local delivery does not copy


# -- receive and flush -------------------------------------------------------------------------

def test_selective_receive_leaves_non_matching_messages_queued_in_order() -> None:
    me = nodes.self()
    for i in range(1, 7):
        nodes.send(me, i)
    even = lambda m: m % 2 == 0  # noqa: E731
    assert nodes.receive(0, match=even) == 2
    assert nodes.receive(0, match=even) == 4
    assert nodes.receive(0) == 1  # an unconditional receive takes the oldest
    assert nodes.flush() == [3, 5, 6]


def test_a_raising_match_leaves_every_message_queued_in_arrival_order() -> None:
    me = nodes.self()
    nodes.send(me, 42)
    nodes.send(me, ("DOWN", 1))
    with pytest.raises(TypeError):
        nodes.receive(timeout=100, match=lambda m: m[0] == "DOWN")  # 42[0] raises
    assert nodes.flush() == [42, ("DOWN", 1)]
    # a message already looked at (saved) stays before the one the match raised on
    nodes.send(me, "a")
    with pytest.raises(TimeoutError):
        nodes.receive(0, match=lambda m: m == "nothing")
    for msg in (42, ("DOWN", 2), "b"):
        nodes.send(me, msg)
    with pytest.raises(TypeError):
        nodes.receive(timeout=100, match=lambda m: m[0] == "DOWN")
    assert nodes.flush() == ["a", 42, ("DOWN", 2), "b"]


def test_receive_waits_for_a_match_while_non_matching_messages_arrive() -> None:
    parent = nodes.self()

    def sender() -> None:
        nodes.receive()  # "go"
        for msg in ("a", "b", "wanted", "c"):
            nodes.send(parent, msg)

    pid = nodes.spawn(sender)
    nodes.send(pid, "go")
    assert nodes.receive(WAIT, match=lambda m: m == "wanted") == "wanted"
    assert nodes.receive(WAIT, match=lambda m: m == "c") == "c"
    assert nodes.flush() == ["a", "b"]
    wait_gone(pid)


def test_receive_timeout_is_in_milliseconds_and_raises_a_timeout_error() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError) as excinfo:
        nodes.receive(timeout=100)
    elapsed = time.monotonic() - started
    assert 0.099 <= elapsed < 5
    assert not isinstance(excinfo.value, Exit)


def test_receive_timeout_with_match_keeps_non_matching_messages() -> None:
    nodes.send(nodes.self(), "not this one")
    with pytest.raises(TimeoutError):
        nodes.receive(timeout=50, match=lambda m: m == "this one")
    assert nodes.flush() == ["not this one"]


def test_receive_timeout_zero_only_looks_at_what_is_queued() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        nodes.receive(timeout=0)
    nodes.send(nodes.self(), "queued")
    with pytest.raises(TimeoutError):
        nodes.receive(timeout=0, match=lambda m: m == "other")
    assert nodes.receive(timeout=0) == "queued"
    assert time.monotonic() - started < 1


def test_receive_timeout_accepts_fractions_of_a_millisecond() -> None:
    with pytest.raises(TimeoutError):
        nodes.receive(timeout=0.5)


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 10**13])
def test_receive_refuses_a_time_out_no_wait_can_take(timeout: float) -> None:
    nodes.send(nodes.self(), "queued")
    with pytest.raises(ValueError, match="at most 4294967295"):
        nodes.receive(timeout=timeout)
    assert nodes.flush() == ["queued"]


@pytest.mark.parametrize("kwargs", [{"timeout": -1}, {"timeout": "10"}, {"timeout": True}, {"match": 5}])
def test_receive_rejects_bad_arguments_at_the_call_site(kwargs: dict) -> None:
    with pytest.raises((TypeError, ValueError)):
        nodes.receive(**kwargs)


def test_flush_returns_every_pending_message_in_order_and_empties_the_mailbox() -> None:
    assert nodes.flush() == []
    for msg in ("a", ("b", 1), None):
        nodes.send(nodes.self(), msg)
    assert nodes.flush() == ["a", ("b", 1), None]
    assert nodes.flush() == []
    with pytest.raises(TimeoutError):
        nodes.receive(0)


def test_flush_in_a_spawned_process_empties_its_own_mailbox() -> None:
    parent = nodes.self()

    def body() -> None:
        nodes.receive(match=lambda m: m == "go")
        nodes.send(parent, nodes.flush())

    pid = nodes.spawn(body)
    for msg in (1, 2, "go"):
        nodes.send(pid, msg)
    assert nodes.receive(WAIT) == [1, 2]
    wait_gone(pid)
    assert nodes.flush() == []  # the test thread's mailbox was not touched


# -- thread processes that get killed ------------------------------------------------------------
#
# Python cannot kill a thread.  When the process of a plain thread (the REPL, a test) is killed,
# the process is gone for everyone at once; the thread itself sees nodes.Exit(reason) from its
# next runtime call, exactly once, and after that it has a brand-new process (like the Erlang
# shell restarting its evaluator).

def _watch(target: Pid, seen: threading.Event) -> None:
    """Process body: set ``seen`` once ``target`` is dead."""
    nodes.receive(match=is_down(nodes.monitor(target)))
    seen.set()


def _crash_on_go(reason: object) -> None:
    nodes.receive(match=lambda m: m == "go")
    raise Exit(reason)


def test_a_killed_thread_process_raises_exit_once_then_the_thread_gets_a_new_process() -> None:
    old = nodes.self()
    died = threading.Event()
    watcher = nodes.spawn(_watch, old, died)
    nodes.send(old, "left in the old mailbox")
    crasher = nodes.spawn_link(_crash_on_go, "boom")
    nodes.send(crasher, "go")
    assert died.wait(WAIT / 1000)  # wait without touching the runtime

    with pytest.raises(Exit) as excinfo:
        nodes.self()
    assert excinfo.value.reason == "boom"

    new = nodes.self()  # once only: from now on the thread has a fresh process
    assert new != old
    assert nodes.is_alive(new) and not nodes.is_alive(old)
    assert nodes.flush() == []  # the old mailbox died with the old process
    nodes.send(new, "works")
    assert nodes.receive(0) == "works"
    wait_gone(watcher)


def test_a_thread_blocked_in_receive_is_woken_by_its_death() -> None:
    ready = threading.Event()
    box: dict[str, object] = {}

    def thread_body() -> None:
        box["pid"] = nodes.self()
        ready.set()
        try:
            nodes.receive()  # no timeout: only the kill ends this wait
        except Exit as exc:
            box["reason"] = exc.reason
        box["after"] = nodes.self()

    thread = threading.Thread(target=thread_body)
    thread.start()
    assert ready.wait(WAIT / 1000)
    nodes.exit(box["pid"], "kill")
    thread.join(WAIT / 1000)
    assert not thread.is_alive()
    assert box["reason"] == "killed"
    assert box["after"] != box["pid"]


def test_a_killed_thread_process_sees_exit_from_receive_as_its_next_call() -> None:
    old = nodes.self()
    crasher = nodes.spawn_link(_crash_on_go, ("shutdown", "by link"))
    nodes.send(crasher, "go")
    with pytest.raises(Exit) as excinfo:
        nodes.receive(WAIT)  # blocks until the link kills us, or finds us dead already
    assert excinfo.value.reason == ("shutdown", "by link")
    assert nodes.self() != old


def test_exit_kill_on_the_test_threads_own_process() -> None:
    old = nodes.self()
    with pytest.raises(Exit) as excinfo:
        nodes.exit(old, "kill")
    assert excinfo.value.reason == "killed"
    assert nodes.self() != old


def test_a_killed_thread_process_sees_exit_from_send_as_its_next_call() -> None:
    old = nodes.self()
    died = threading.Event()
    watcher = nodes.spawn(_watch, old, died)
    crasher = nodes.spawn_link(_crash_on_go, "boom")
    nodes.send(crasher, "go")
    assert died.wait(WAIT / 1000)
    try:
        with pytest.raises(Exit):
            nodes.send(watcher, "a dead process must not send")
    finally:
        try:
            nodes.self()  # consume the Exit if send did not, so the thread has a live process again
        except Exit:
            pass
        wait_gone(watcher)


# -- process_info --------------------------------------------------------------------------------

def test_process_info_counts_the_messages_waiting_in_a_mailbox() -> None:
    def wait_for_go() -> None:
        nodes.receive(match=lambda m: m == "go")  # leaves every other message queued
        nodes.receive(match=lambda m: m == "exit")

    pid = nodes.spawn(wait_for_go)
    for i in range(3):
        nodes.send(pid, ("other", i))
    nodes.send(pid, "go")
    # a local send is queued at once; the process takes "go" and leaves the three others
    deadline = time.monotonic() + WAIT / 1000
    while nodes.process_info(pid, "message_queue_len") != ("message_queue_len", 3):
        assert time.monotonic() < deadline, nodes.process_info(pid, "message_queue_len")
        time.sleep(0.001)
    ref = nodes.monitor(pid)
    nodes.send(pid, "exit")
    assert nodes.receive(WAIT, match=is_down(ref))[4] == "normal"
    assert nodes.process_info(pid, "message_queue_len") is None  # not alive


def test_process_info_lists_links_monitors_and_watchers() -> None:
    me = nodes.self()
    pid = nodes.spawn(nodes.receive)
    nodes.register("info_target", pid)
    try:
        nodes.link(pid)
        by_pid, by_name = nodes.monitor(pid), nodes.monitor("info_target")
        assert nodes.process_info(pid, "links") == ("links", [me])
        assert nodes.process_info(me, "links") == ("links", [pid])
        assert nodes.process_info(pid, "monitored_by") == ("monitored_by", [me, me])  # one per monitor
        assert sorted(nodes.process_info(me, "monitors")[1], key=repr) == sorted(
            [("process", pid), ("process", ("info_target", nodes.node()))], key=repr)
        nodes.demonitor(by_name)
        nodes.unlink(pid)
        assert nodes.process_info(pid, "links") == ("links", [])
        assert nodes.process_info(pid, "monitored_by") == ("monitored_by", [me])
        assert nodes.process_info(me, "monitors") == ("monitors", [("process", pid)])
        assert nodes.process_info(pid, "monitors") == ("monitors", [])
    finally:
        nodes.exit(pid, "kill")
    assert nodes.receive(WAIT, match=is_down(by_pid))[4] == "killed"
    assert nodes.process_info(me, "monitors") == ("monitors", [])
    assert nodes.process_info(pid, "links") is None  # not alive


def test_process_info_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="expected a Pid"):
        nodes.process_info("someone", "message_queue_len")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported item"):
        nodes.process_info(nodes.self(), "memory")
    with pytest.raises(ValueError, match="not a process of this node"):
        nodes.process_info(Pid("other@host", 1), "message_queue_len")


def test_the_process_dictionary_is_private_to_each_process() -> None:
    # Erlang's put/get/erase: put returns the previous value (None for undefined)
    assert nodes.get("k") is None and nodes.get("k", "dflt") == "dflt"
    assert nodes.put("k", 1) is None
    assert nodes.put("k", 2) == 1
    assert nodes.get("k") == 2
    parent = nodes.self()

    def child() -> None:
        seen = nodes.get("k", "unset")  # another process's dictionary is its own
        nodes.put("k", "child's")
        nodes.send(parent, ("child", seen, nodes.get("k")))

    nodes.spawn(child)
    assert nodes.receive(WAIT, match=lambda m: m[0] == "child") == ("child", "unset", "child's")
    assert nodes.get("k") == 2  # untouched by the child
    assert nodes.erase("k") == 2
    assert nodes.erase("k") is None and nodes.get("k") is None
    with pytest.raises(TypeError):
        nodes.put(["not", "hashable"], 1)

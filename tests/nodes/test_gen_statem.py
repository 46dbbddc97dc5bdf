"""gen_statem in state-functions mode, and sys.get_state.

Starting (init runs in the new process before start/start_link return; failures come back as
``("error", reason)`` and leave nothing behind), calls (replies, deferred replies, time-outs, a
server that is gone or dies), casts, stop, state transitions, actions, and the three shapes a
callback module can take (a module, a class that is never instantiated, an instance).
"""

from __future__ import annotations

import logging
import threading
import time
import tracemalloc
import types
from typing import Any

import pytest
from dist_peer_helpers import stays
from process_helpers import WAIT, is_exit_from, wait_down

import nodes
from nodes import Exit, Pid, gen_statem

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leaked_processes")]



# -- helpers -------------------------------------------------------------------------------------

def tagged(tag: str):
    return lambda m: type(m) is tuple and m and m[0] == tag


def notify(data: dict, msg: Any) -> None:
    if data.get("notify") is not None:
        nodes.send(data["notify"], msg)


class Server:
    """The machine most tests drive; a class used as a callback module (never instantiated).

    idle:    calls "ping", "ping_by_function", "whoami", ("echo", x), "log", "hold", ("stop", r),
             "crash", ("raise_exit", r), "bad_return", "call_self" (or ("call_self", server));
             casts and infos are logged; cast ("block", event) blocks the process until the event is set.
    holding: a call that was answered later; cast "release" answers it and goes back to idle.
    """

    def init(args: dict) -> tuple:
        data = {"notify": args.get("notify"), "log": [], "held": None}
        notify(data, ("init", nodes.self(), threading.get_ident()))
        return ("ok", "idle", data)

    def idle(event_type: Any, content: Any, data: dict) -> Any:
        if event_type in ("cast", "info"):
            if type(content) is tuple and content[0] == "block":
                content[1].wait(WAIT / 1000)
                return ("keep_state_and_data",)
            return ("keep_state", {**data, "log": [*data["log"], (event_type, content)]})
        call, from_ = event_type
        assert call == "call"
        if content == "ping":
            return ("keep_state_and_data", [("reply", from_, "pong")])
        if content == "ping_by_function":
            assert gen_statem.reply(from_, "pong by function") == "ok"
            return ("keep_state", data)
        if content == "whoami":
            return ("keep_state_and_data", [("reply", from_, {"from": from_, "server": nodes.self()})])
        if type(content) is tuple and content[0] == "echo":
            return ("keep_state_and_data", [("reply", from_, content[1])])
        if content == "log":
            return ("keep_state_and_data", [("reply", from_, data["log"])])
        if content == "hold":  # answered later, from the holding state
            notify(data, ("holding", nodes.self()))
            return ("next_state", "holding", {**data, "held": from_})
        if type(content) is tuple and content[0] == "stop":
            return ("stop", content[1], {**data, "stopped_by": "call"})
        if content == "crash":
            raise RuntimeError("crash in a state function")
        if type(content) is tuple and content[0] == "raise_exit":
            raise Exit(content[1])
        if content == "bad_return":
            return ("no_such_return", 42)
        if content == "call_self" or (type(content) is tuple and content[0] == "call_self"):
            myself = nodes.self() if content == "call_self" else content[1]  # or a name of mine
            try:
                gen_statem.call(myself, "ping", 100)
            except Exit as exc:
                return ("keep_state_and_data", [("reply", from_, ("raised", exc.reason))])
            return ("keep_state_and_data", [("reply", from_, "no exception")])
        raise AssertionError(f"unexpected call {content!r}")

    def holding(event_type: Any, content: Any, data: dict) -> Any:
        if event_type == "cast" and content == "release":
            gen_statem.reply(data["held"], "released")
            return ("next_state", "idle", {**data, "held": None})
        return ("keep_state", {**data, "log": [*data["log"], (event_type, content)]})

    def terminate(reason: Any, state: Any, data: dict) -> None:
        notify(data, ("terminate", reason, state, data))


def start_server(name: str | None = None, notify_me: bool = False, link: bool = False) -> Pid:
    args = {"notify": nodes.self() if notify_me else None}
    starter = gen_statem.start_link if link else gen_statem.start
    result = starter(Server, args, name=name)
    assert result[0] == "ok", result
    if notify_me:
        assert nodes.receive(0, match=tagged("init"))[1] == result[1]
    return result[1]


def stop_server(pid: Pid) -> None:
    assert gen_statem.stop(pid) == "ok"


# -- start / start_link ------------------------------------------------------------------------

@pytest.mark.parametrize("link", [False, True], ids=["start", "start_link"])
def test_init_runs_in_the_new_process_before_start_returns(link: bool) -> None:
    starter = gen_statem.start_link if link else gen_statem.start
    result = starter(Server, {"notify": nodes.self()})
    assert result[0] == "ok" and type(result[1]) is Pid
    pid = result[1]
    # init has already run, in the server's own process and thread: its message is queued now
    _, init_pid, init_thread = nodes.receive(0, match=tagged("init"))
    assert init_pid == pid != nodes.self()
    assert init_thread != threading.get_ident()
    assert nodes.is_alive(pid)
    stop_server(pid)


def test_start_link_links_the_server_to_the_caller() -> None:
    nodes.process_flag("trap_exit", True)
    pid = start_server(link=True)
    with pytest.raises(Exit):
        gen_statem.call(pid, ("stop", "shutdown"))
    assert nodes.receive(WAIT, match=is_exit_from(pid)) == ("EXIT", pid, "shutdown")


def test_a_crashing_server_started_with_start_leaves_the_caller_alone() -> None:
    me = nodes.self()
    pid = start_server()
    with pytest.raises(Exit):
        gen_statem.call(pid, ("stop", "crashed"))
    assert nodes.self() == me
    assert nodes.flush() == []


def test_a_linked_caller_that_does_not_trap_dies_with_its_server() -> None:
    me = nodes.self()
    pid = start_server(link=True)
    with pytest.raises(Exit) as excinfo:
        gen_statem.call(pid, ("stop", "boom"))
    assert excinfo.value.reason == "boom"
    # the link has killed the test thread's process too: it sees that once, then has a new process
    try:
        nodes.self()
    except Exit as exc:
        assert exc.reason == "boom"
    assert nodes.self() != me


class FailingInit:
    """init tells the caller its pid, then fails the way args say."""

    def init(args: tuple) -> Any:
        how, parent = args
        nodes.send(parent, ("init", nodes.self()))
        if how == "stop":
            return ("stop", "no_config")
        if how == "raise":
            raise KeyError("config")
        if how == "raise_exit":
            raise Exit(("shutdown", "from init"))
        return 42  # not a valid init result


@pytest.mark.parametrize("trap", [True, False], ids=["trapping", "not_trapping"])
@pytest.mark.parametrize("link", [True, False], ids=["start_link", "start"])
def test_init_returning_stop_is_an_error_and_leaves_nothing_behind(link: bool, trap: bool) -> None:
    me = nodes.self()
    nodes.process_flag("trap_exit", trap)
    starter = gen_statem.start_link if link else gen_statem.start
    assert starter(FailingInit, ("stop", me)) == ("error", "no_config")
    _, server = nodes.receive(0, match=tagged("init"))
    assert not nodes.is_alive(server)  # gone by the time start returns
    assert nodes.flush() == []  # in particular no ("EXIT", server, "no_config") for a trapping caller
    assert nodes.self() == me  # and the caller was not killed through the link


def test_init_raising_is_an_error_carrying_the_exception() -> None:
    nodes.process_flag("trap_exit", True)
    status, (tag, exc, traceback_text) = gen_statem.start_link(FailingInit, ("raise", nodes.self()))
    assert (status, tag) == ("error", "exception")
    assert type(exc) is KeyError and "KeyError" in traceback_text
    _, server = nodes.receive(0, match=tagged("init"))
    assert not nodes.is_alive(server)
    assert nodes.flush() == []


def test_init_with_a_bad_return_value_is_an_error() -> None:
    assert gen_statem.start(FailingInit, ("bad", nodes.self())) == ("error", ("bad_return_from_init", 42))
    _, server = nodes.receive(0, match=tagged("init"))
    assert not nodes.is_alive(server)


def test_init_raising_exit_is_an_error_with_that_reason() -> None:
    assert gen_statem.start(FailingInit, ("raise_exit", nodes.self())) == ("error", ("shutdown", "from init"))


class Ignoring:
    def init(watcher: Pid) -> Any:
        nodes.send(watcher, ("init", nodes.self()))
        return "ignore"


def test_init_returning_ignore_makes_start_return_ignore_and_the_process_end_normally() -> None:
    me = nodes.self()
    nodes.process_flag("trap_exit", True)
    assert gen_statem.start_link(Ignoring, me) == "ignore"  # as OTP's, not an error tuple
    _, server = nodes.receive(0, match=tagged("init"))
    assert not nodes.is_alive(server)
    assert nodes.flush() == []  # no EXIT for a trapping caller
    ref = nodes.monitor(server)
    assert nodes.receive(WAIT, match=lambda m: m[0] == "DOWN" and m[1] == ref)[4] == "noproc"


class WantsEnterCalls:
    @staticmethod
    def callback_mode() -> list:
        return ["state_functions", "state_enter"]

    def init(_: Any) -> tuple:
        return ("ok", "a", None)


class WantsHandleEvent:
    callback_mode = "handle_event_function"

    def init(_: Any) -> tuple:
        return ("ok", "a", None)


class SaysStateFunctions:
    @staticmethod
    def callback_mode() -> str:
        return "state_functions"

    def init(_: Any) -> tuple:
        return ("ok", "a", None)


def test_a_callback_mode_other_than_state_functions_fails_the_start() -> None:
    # enter calls and handle_event_function are not run: saying so beats ignoring the module's wish
    assert gen_statem.start(WantsEnterCalls, None) == (
        "error", ("bad_callback_mode", ["state_functions", "state_enter"]))
    assert gen_statem.start(WantsHandleEvent, None) == (
        "error", ("bad_callback_mode", "handle_event_function"))
    ok, pid = gen_statem.start(SaysStateFunctions, None)
    assert ok == "ok"
    stop_server(pid)


def test_start_needs_a_callback_module_with_init() -> None:
    with pytest.raises(TypeError, match="init"):
        gen_statem.start(object(), None)
    with pytest.raises(TypeError, match="name"):
        gen_statem.start(Server, {}, name=42)


# -- registered names ----------------------------------------------------------------------------

def test_a_named_server_is_registered_and_reachable_by_name() -> None:
    pid = start_server(name="statem_named")
    assert nodes.whereis("statem_named") == pid
    assert gen_statem.call("statem_named", "ping") == "pong"
    assert gen_statem.call(("statem_named", nodes.node()), "ping") == "pong"
    assert gen_statem.stop("statem_named") == "ok"
    assert nodes.whereis("statem_named") is None


def test_starting_under_a_taken_name_returns_already_started() -> None:
    pid = start_server(name="statem_taken")
    try:
        for starter in (gen_statem.start, gen_statem.start_link):
            assert starter(Server, {"notify": nodes.self()}, name="statem_taken") == (
                "error", ("already_started", pid))
        with pytest.raises(TimeoutError):
            nodes.receive(0, match=tagged("init"))  # init never ran for the losers
        assert nodes.whereis("statem_taken") == pid
        assert nodes.flush() == []
    finally:
        stop_server(pid)


def test_a_machine_killed_before_it_takes_its_name_leaves_the_name_free(monkeypatch) -> None:
    # the race of a starter killed just after spawning a linked machine: the link kills the
    # machine before its thread has registered the name (made certain here by a kill from
    # another thread just before the registry sees the name)
    from nodes import registry

    real_add = registry.add
    machine_threads: list[threading.Thread] = []

    def add_after_a_kill(name: str, pid: Pid) -> None:
        machine_threads.append(threading.current_thread())
        killer = threading.Thread(target=nodes.exit, args=(pid, "kill"))
        killer.start()
        killer.join()
        real_add(name, pid)

    monkeypatch.setattr(registry, "add", add_after_a_kill)
    assert gen_statem.start(Server, {"notify": nodes.self()}, name="statem_orphan") == ("error", "killed")
    monkeypatch.undo()
    machine_threads[0].join(WAIT / 1000)  # the start saw the death before that thread went on
    assert not machine_threads[0].is_alive()
    assert nodes.whereis("statem_orphan") is None
    pid = start_server(name="statem_orphan")  # the name is free for the next one
    assert nodes.whereis("statem_orphan") == pid
    stop_server(pid)


def test_a_name_is_free_again_after_the_server_stops_or_fails_to_start() -> None:
    start_server(name="statem_reused")
    gen_statem.stop("statem_reused")
    assert gen_statem.start(FailingInit, ("stop", nodes.self()), name="statem_reused") == (
        "error", "no_config")
    assert nodes.whereis("statem_reused") is None
    pid = start_server(name="statem_reused")
    assert nodes.whereis("statem_reused") == pid
    stop_server(pid)


# -- call ------------------------------------------------------------------------------------------

def test_call_replies_through_a_reply_action_or_the_reply_function() -> None:
    pid = start_server()
    assert gen_statem.call(pid, "ping") == "pong"
    assert gen_statem.call(pid, "ping_by_function") == "pong by function"
    assert nodes.flush() == []  # no stray reply or DOWN left behind
    stop_server(pid)
    assert nodes.flush() == []  # and the calls' monitors are gone: no DOWN when the server stops


def test_a_call_event_carries_the_callers_pid_and_a_reference() -> None:
    pid = start_server()
    answer = gen_statem.call(pid, "whoami")
    caller, tag = answer["from"]
    assert caller == nodes.self()
    assert answer["server"] == pid
    assert tag is not None
    stop_server(pid)


@pytest.mark.parametrize("from_", [None, (1, 2), ("pid", "ref"), "from"])
def test_reply_wants_the_pid_and_ref_pair_a_callback_was_handed(from_: Any) -> None:
    with pytest.raises(TypeError, match="from_ must be the"):
        gen_statem.reply(from_, "x")
    with pytest.raises(TypeError, match="from_ must be the"):  # a pid with anything but its ref
        gen_statem.reply((nodes.self(), "not-a-ref"), "x")
    assert nodes.flush() == []


def test_a_local_reply_that_happens_to_be_a_pickled_value_comes_back_as_it_is() -> None:
    # (only a reply from another node is pickled apart, and only such a one is loaded)
    from nodes.terms import Pickled

    pid = start_server()
    odd = Pickled(b"not a pickle", "text")
    assert gen_statem.call(pid, ("echo", odd)) == odd
    assert nodes.rpc.call(nodes.node(), lambda: odd) == odd
    stop_server(pid)


def test_a_tagged_call_carries_the_reference_its_caller_made() -> None:
    pid = start_server()
    ref = nodes.make_ref()
    answer = gen_statem.call_tagged(pid, "whoami", ref, timeout=WAIT)
    assert answer["from"] == (nodes.self(), ref)
    assert gen_statem.call_tagged(pid, "ping", nodes.make_ref()) == "pong"
    assert nodes.flush() == []
    stop_server(pid)
    assert nodes.flush() == []  # its monitor went with the reply: no DOWN


def test_call_times_out_with_exit_timeout_and_a_late_reply_never_shows_up() -> None:
    pid = start_server()
    with pytest.raises(Exit) as excinfo:
        gen_statem.call(pid, "hold", timeout=100)
    assert excinfo.value.reason == "timeout"
    gen_statem.cast(pid, "release")  # the server now answers the call we gave up on
    assert gen_statem.call(pid, "ping") == "pong"  # handled after the release, so the late reply was sent
    assert nodes.flush() == []
    stop_server(pid)


def _release_when_holding() -> None:
    """Helper process: wait until a server says it holds a call, then make it answer."""
    _, server = nodes.receive(match=tagged("holding"))
    gen_statem.cast(server, "release")


def test_a_deferred_reply_comes_from_another_state() -> None:
    helper = nodes.spawn(_release_when_holding)
    ok, pid = gen_statem.start(Server, {"notify": helper})
    assert gen_statem.call(pid, "hold", timeout=WAIT) == "released"
    state, data = nodes.sys.get_state(pid)
    assert state == "idle" and data["held"] is None
    assert nodes.flush() == []
    stop_server(pid)


def test_call_to_a_server_that_is_not_running_raises_noproc() -> None:
    pid = start_server()
    stop_server(pid)
    for server in (pid, "no_statem_has_this_name", ("no_statem_has_this_name", nodes.node())):
        with pytest.raises(Exit) as excinfo:
            gen_statem.call(server, "ping")
        assert excinfo.value.reason == "noproc"
    assert nodes.flush() == []


def test_call_raises_the_exit_reason_of_a_server_that_stops_while_it_waits() -> None:
    pid = start_server()
    with pytest.raises(Exit) as excinfo:
        gen_statem.call(pid, ("stop", ("shutdown", "mid-call")))
    assert excinfo.value.reason == ("shutdown", "mid-call")
    assert not nodes.is_alive(pid)
    assert nodes.flush() == []


def test_call_raises_the_crash_reason_of_a_server_whose_callback_raises() -> None:
    pid = start_server(notify_me=True)
    with pytest.raises(Exit) as excinfo:
        gen_statem.call(pid, "crash")
    tag, exc, traceback_text = excinfo.value.reason
    assert tag == "exception" and type(exc) is RuntimeError
    assert "crash in a state function" in traceback_text
    # terminate ran with the same reason, in the state the machine was in
    _, reason, state, _data = nodes.receive(0, match=tagged("terminate"))
    assert reason is excinfo.value.reason and state == "idle"


def _kill_when_holding() -> None:
    _, server = nodes.receive(match=tagged("holding"))
    nodes.exit(server, "kill")


def test_call_raises_killed_when_the_server_is_killed_while_it_waits() -> None:
    helper = nodes.spawn(_kill_when_holding)
    ok, pid = gen_statem.start(Server, {"notify": helper})
    with pytest.raises(Exit) as excinfo:
        gen_statem.call(pid, "hold", timeout=WAIT)
    assert excinfo.value.reason == "killed"
    assert nodes.flush() == []


def test_calling_itself_raises_instead_of_deadlocking() -> None:
    pid = start_server()
    assert gen_statem.call(pid, "call_self") == ("raised", "calling_self")
    stop_server(pid)


def test_calling_itself_by_its_name_raises_too() -> None:
    pid = start_server(name="calls_itself")
    for myself in ("calls_itself", ("calls_itself", nodes.node())):
        assert gen_statem.call(pid, ("call_self", myself)) == ("raised", "calling_self")
    stop_server(pid)


def test_a_call_by_local_name_goes_to_the_process_that_has_the_name_then() -> None:
    first = start_server(name="named_statem")
    assert gen_statem.call("named_statem", "whoami")["server"] == first
    assert gen_statem.call(("named_statem", nodes.node()), "whoami")["server"] == first
    stop_server(first)
    with pytest.raises(Exit) as excinfo:
        gen_statem.call(("named_statem", nodes.node()), "ping", timeout=None)  # no wait: nobody has it
    assert excinfo.value.reason == "noproc"
    second = start_server(name="named_statem")
    assert gen_statem.call("named_statem", "whoami")["server"] == second != first
    stop_server(second)
    assert nodes.flush() == []


@pytest.mark.parametrize("timeout", [-1, "100", True])
def test_call_rejects_a_bad_timeout(timeout: Any) -> None:
    pid = start_server()
    with pytest.raises(TypeError, match="timeout"):
        gen_statem.call(pid, "ping", timeout=timeout)
    stop_server(pid)


def test_call_refuses_a_time_out_no_wait_can_take_before_the_request_leaves() -> None:
    # it once overflowed only while waiting for the reply: the request had been served
    pid = start_server(notify_me=True)
    with pytest.raises(ValueError, match="at most 4294967295"):
        gen_statem.call(pid, "hold", timeout=10**13)  # served, it would say ("holding", pid)
    assert gen_statem.call(pid, "ping") == "pong"
    assert nodes.flush() == []
    with pytest.raises(ValueError, match="at most 4294967295"):
        nodes.rpc.call(nodes.node(), nodes.node, timeout=2**32)
    stop_server(pid)


def test_concurrent_callers_each_get_their_own_replies() -> None:
    pid = start_server()
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            results[n] = [gen_statem.call(pid, ("echo", (n, i))) for i in range(100)]
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT / 1000 * 4)
    assert errors == []
    assert results == {n: [(n, i) for i in range(100)] for n in range(4)}
    stop_server(pid)


# -- cast and info ---------------------------------------------------------------------------------

def test_casts_are_handled_in_the_order_sent() -> None:
    pid = start_server()
    for i in range(100):
        assert gen_statem.cast(pid, i) == "ok"
    assert gen_statem.call(pid, "log") == [("cast", i) for i in range(100)]
    stop_server(pid)


def test_cast_never_raises_for_a_server_that_is_not_running() -> None:
    pid = start_server()
    stop_server(pid)
    assert gen_statem.cast(pid, "lost") == "ok"
    assert gen_statem.cast("no_statem_has_this_name", "lost") == "ok"
    assert gen_statem.cast(("no_statem_has_this_name", "other@host"), "lost") == "ok"


def test_cast_to_something_that_is_not_a_server_raises_naming_cast() -> None:
    for not_a_server in (42, ("name",), ("name", 1), None):
        with pytest.raises(TypeError, match=r"^cast: destination must be a Pid, a registered name str"):
            gen_statem.cast(not_a_server, "x")


def test_plain_messages_are_info_events() -> None:
    pid = start_server()
    nodes.send(pid, ("hello", 1))
    gen_statem.cast(pid, "a cast")
    assert gen_statem.call(pid, "log") == [("info", ("hello", 1)), ("cast", "a cast")]
    stop_server(pid)


# -- stop --------------------------------------------------------------------------------------------

def test_stop_is_synchronous_and_runs_terminate() -> None:
    pid = start_server(name="statem_stopped", notify_me=True)
    gen_statem.cast(pid, "last cast")
    assert gen_statem.stop(pid) == "ok"
    # by the time stop returns, terminate has run and the process and its name are gone
    _, reason, state, data = nodes.receive(0, match=tagged("terminate"))
    assert (reason, state, data["log"]) == ("normal", "idle", [("cast", "last cast")])
    assert not nodes.is_alive(pid)
    assert nodes.whereis("statem_stopped") is None
    assert nodes.flush() == []


def test_stop_with_a_reason_passes_it_to_terminate() -> None:
    start_server(name="statem_shutdown", notify_me=True)
    assert gen_statem.stop("statem_shutdown", "shutdown") == "ok"
    assert nodes.receive(0, match=tagged("terminate"))[1] == "shutdown"


@pytest.mark.parametrize("reason, reported", [("normal", False), ("shutdown", False),
                                              (("shutdown", "maintenance"), False), ("boom", True),
                                              (("boom", "x"), True)])
def test_only_an_abnormal_stop_is_reported_as_an_error(reason: Any, reported: bool,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    pid = start_server()
    with caplog.at_level(logging.ERROR, logger="nodes.gen_statem"):
        assert gen_statem.stop(pid, reason) == "ok"
    errors = [r for r in caplog.records if r.name == "nodes.gen_statem" and r.levelno >= logging.ERROR]
    assert bool(errors) is reported, errors


def test_stop_of_a_linked_server_gives_a_trapping_caller_a_normal_exit() -> None:
    nodes.process_flag("trap_exit", True)
    pid = start_server(link=True)
    assert gen_statem.stop(pid) == "ok"
    assert nodes.receive(WAIT, match=is_exit_from(pid)) == ("EXIT", pid, "normal")
    assert nodes.flush() == []


class FailingTerminate:
    """terminate fails the way init's argument says: "raise" (an exception) or "exit" (Exit)."""

    def init(how: str) -> tuple:
        return ("ok", "s", how)

    def s(event_type: Any, content: Any, data: Any) -> tuple:
        return ("keep_state", data)

    def terminate(reason: Any, state: str, how: str) -> None:
        if how == "raise":
            raise RuntimeError("cleanup failed")
        raise Exit("from_terminate")


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_terminate_that_fails_is_the_reason_the_machine_exits_with(how: str) -> None:
    # as OTP: the failure is reported and re-raised, so monitors and stop() see it, not "normal"
    _ok, pid = gen_statem.start(FailingTerminate, how)
    ref = nodes.monitor(pid)
    with pytest.raises(Exit) as excinfo:
        gen_statem.stop(pid)
    reason = wait_down(ref)
    assert excinfo.value.reason == reason
    if how == "raise":
        assert reason[0] == "exception" and isinstance(reason[1], RuntimeError)
        assert "cleanup failed" in reason[2]
    else:
        assert reason == "from_terminate"


class StopsWhenReleased:
    """A cast makes the callback wait for a release, then stop; terminate records that it ran."""

    def init(args: tuple) -> tuple:
        return ("ok", "s", args)

    def s(event_type: Any, content: Any, data: tuple) -> tuple:
        entered, release, returning, _ran = data
        entered.set()
        release.wait(10)
        returning.set()
        return ("stop", "done", data)

    def terminate(reason: Any, state: str, data: tuple) -> None:
        data[3].append(reason)  # no runtime call: it would unwind a killed process by itself


def test_a_machine_killed_during_a_callback_never_runs_terminate() -> None:
    entered, release, returning = threading.Event(), threading.Event(), threading.Event()
    ran: list[Any] = []
    _ok, pid = gen_statem.start(StopsWhenReleased, (entered, release, returning, ran))
    ref = nodes.monitor(pid)
    gen_statem.cast(pid, "go")
    assert entered.wait(10)
    nodes.exit(pid, "kill")
    assert wait_down(ref) == "killed"
    release.set()  # the callback now returns ("stop", ...) in a process that is dead
    assert returning.wait(10)
    assert stays(lambda: ran == [], 0.5), ran  # as in OTP: a killed process never runs terminate


class Returns:
    """A call's content is a function of (from_, data) giving the state function's result."""

    def init(data: Any) -> tuple:
        return ("ok", "s", data)

    def s(event_type: Any, content: Any, data: Any) -> Any:
        if event_type == "cast":
            return ("keep_state", data)
        return content(event_type[1], data)


def test_otps_repeat_state_results_and_a_bare_stop() -> None:
    _ok, pid = gen_statem.start(Returns, 0)
    ref = nodes.monitor(pid)
    # repeat_state* are keep_state* (this gen_statem makes no state enter calls)
    assert gen_statem.call(pid, lambda f, d: ("repeat_state", d + 1, [("reply", f, "r1")])) == "r1"
    assert gen_statem.call(pid, lambda f, d: ("repeat_state_and_data", [("reply", f, d)])) == 1
    # the forms without actions (answered before returning)
    assert gen_statem.call(pid, lambda f, d: (gen_statem.reply(f, "a"), "repeat_state_and_data")[1]) == "a"
    assert gen_statem.call(pid, lambda f, d: (gen_statem.reply(f, "b"), ("repeat_state", d + 1))[1]) == "b"
    assert nodes.sys.get_state(pid) == ("s", 2)
    with pytest.raises(Exit) as excinfo:
        gen_statem.call(pid, lambda f, d: "stop")  # a bare "stop" is ("stop", "normal")
    assert excinfo.value.reason == "normal"
    assert wait_down(ref) == "normal"


def test_stop_of_a_server_that_is_not_running_raises_noproc() -> None:
    pid = start_server()
    stop_server(pid)
    for server in (pid, "no_statem_has_this_name"):
        with pytest.raises(Exit) as excinfo:
            gen_statem.stop(server)
        assert excinfo.value.reason == "noproc"
    assert nodes.flush() == []


def test_stop_times_out_on_a_busy_server_which_stops_later() -> None:
    pid = start_server(notify_me=True)
    gate = threading.Event()
    gen_statem.cast(pid, ("block", gate))  # the server is stuck in a callback until the gate opens
    try:
        with pytest.raises(Exit) as excinfo:
            gen_statem.stop(pid, timeout=100)
        assert excinfo.value.reason == "timeout"
        assert nodes.is_alive(pid)
    finally:
        gate.set()
    ref = nodes.monitor(pid)
    assert wait_down(ref) == "normal"  # the stop request was still queued and takes effect now
    assert nodes.receive(0, match=tagged("terminate"))[1] == "normal"
    assert nodes.flush() == []



@pytest.mark.parametrize("timeout", ["5000", -1, True, 2.5])
def test_stop_rejects_a_bad_timeout_before_stopping_anything(timeout: Any) -> None:
    pid = start_server()
    with pytest.raises(TypeError, match="timeout"):
        gen_statem.stop(pid, timeout=timeout)
    # no stop request went out: a call made after it is still answered (it would queue behind it)
    assert gen_statem.call(pid, "ping") == "pong"
    assert nodes.flush() == []  # and no monitor was left to deliver a DOWN
    stop_server(pid)

# -- state functions, return values and actions --------------------------------------------------

def _door_init(code: str) -> tuple:
    return ("ok", "locked", {"code": code, "tries": 0})


def _door_locked(event_type: Any, content: Any, data: dict) -> Any:
    if event_type == "cast" and type(content) is tuple and content[0] == "enter":
        if content[1] == data["code"]:
            return ("next_state", "open", {**data, "tries": 0})
        return ("keep_state", {**data, "tries": data["tries"] + 1})
    if type(event_type) is tuple:  # a call
        return ("keep_state_and_data", [("reply", event_type[1], "locked")])
    return "keep_state_and_data"


def _door_open(event_type: Any, content: Any, data: dict) -> Any:
    if event_type == "cast" and content == "close":
        return ("next_state", "locked", data)
    if type(event_type) is tuple:
        return ("next_state", "open", data, [("reply", event_type[1], "open")])
    return "keep_state_and_data"


def make_door_module() -> types.ModuleType:
    door = types.ModuleType("door", "a callback module that is a real module object")
    door.init = _door_init  # type: ignore[attr-defined]
    door.locked = _door_locked  # type: ignore[attr-defined]
    door.open = _door_open  # type: ignore[attr-defined]
    return door


def test_a_module_as_callback_module_and_next_state_keep_state() -> None:
    ok, pid = gen_statem.start(make_door_module(), "1234")
    assert gen_statem.call(pid, "state?") == "locked"
    gen_statem.cast(pid, ("enter", "0000"))
    assert nodes.sys.get_state(pid) == ("locked", {"code": "1234", "tries": 1})  # keep_state
    gen_statem.cast(pid, ("enter", "1234"))
    assert gen_statem.call(pid, "state?") == "open"  # next_state: now the open function handles events
    assert nodes.sys.get_state(pid) == ("open", {"code": "1234", "tries": 0})
    gen_statem.cast(pid, "close")
    assert gen_statem.call(pid, "state?") == "locked"
    stop_server(pid)


class NeverInstantiated:
    """A class as callback module: plain functions as attributes; creating an instance is an error."""

    def __init__(self) -> None:
        raise AssertionError("the runtime must not instantiate a callback class")

    def init(args: Any) -> tuple:
        return ("ok", "only", args)

    def only(event_type: Any, content: Any, data: Any) -> Any:
        return ("keep_state_and_data", [("reply", event_type[1], ("data", data))])


def test_a_class_as_callback_module_is_never_instantiated() -> None:
    ok, pid = gen_statem.start(NeverInstantiated, "class data")
    assert ok == "ok"
    assert gen_statem.call(pid, "anything") == ("data", "class data")
    stop_server(pid)


class Counter:
    """An instance as callback module: bound methods, instance attributes as configuration."""

    def __init__(self, step: int) -> None:
        self.step = step

    def init(self, start: int) -> tuple:
        return ("ok", "counting", start)

    def counting(self, event_type: Any, content: Any, data: int) -> Any:
        if event_type == "cast" and content == "inc":
            return ("keep_state", data + self.step)
        return ("keep_state_and_data", [("reply", event_type[1], data)])


def test_an_instance_as_callback_module() -> None:
    ok, pid = gen_statem.start(Counter(step=10), 1)
    gen_statem.cast(pid, "inc")
    gen_statem.cast(pid, "inc")
    assert gen_statem.call(pid, "get") == 21
    stop_server(pid)


class Sequencer:
    """Records the events it handles; "go" inserts two events, "first" inserts one more."""

    def init(args: Any) -> tuple:
        return ("ok", "ready", {"gate": args, "seen": []}, [("next_event", "cast", "from_init")])

    def ready(event_type: Any, content: Any, data: dict) -> Any:
        if type(event_type) is tuple:
            return ("keep_state_and_data", [("reply", event_type[1], data["seen"])])
        if content == "wait_at_gate":
            data["gate"].wait(WAIT / 1000)
            return ("keep_state_and_data",)
        seen = {**data, "seen": [*data["seen"], content]}
        if content == "go":
            return ("keep_state", seen, [("next_event", "cast", "first"), ("next_event", "cast", "second")])
        if content == "first":
            return ("next_state", "ready", seen, [("next_event", "cast", "first.1")])
        return ("keep_state", seen)


def test_next_events_are_handled_in_order_before_any_queued_message() -> None:
    gate = threading.Event()
    ok, pid = gen_statem.start(Sequencer, gate)
    gen_statem.cast(pid, "wait_at_gate")  # hold the server so that the next casts are queued together
    gen_statem.cast(pid, "go")
    gen_statem.cast(pid, "queued")
    gate.set()
    # events inserted while handling "first" still go before the "second" inserted earlier
    assert gen_statem.call(pid, "seen") == ["from_init", "go", "first", "first.1", "second", "queued"]
    stop_server(pid)


def test_stop_from_a_state_function_runs_terminate_with_the_new_data() -> None:
    pid = start_server(notify_me=True)
    ref = nodes.monitor(pid)
    with pytest.raises(Exit):
        gen_statem.call(pid, ("stop", "done"))
    assert wait_down(ref) == "done"
    _, reason, state, data = nodes.receive(0, match=tagged("terminate"))
    assert (reason, state, data["stopped_by"]) == ("done", "idle", "call")


class Replier:
    def init(args: Any) -> tuple:
        return ("ok", "s", None)

    def s(event_type: Any, content: Any, data: Any) -> Any:
        return ("stop_and_reply", "normal", [("reply", event_type[1], "goodbye")])


def test_stop_and_reply_answers_before_stopping() -> None:
    ok, pid = gen_statem.start(Replier, None)
    ref = nodes.monitor(pid)
    assert gen_statem.call(pid, "bye") == "goodbye"
    assert wait_down(ref) == "normal"


def test_a_bad_return_value_stops_the_server() -> None:
    pid = start_server()
    with pytest.raises(Exit) as excinfo:
        gen_statem.call(pid, "bad_return")
    assert excinfo.value.reason == ("bad_return_from_state_function", ("no_such_return", 42))


def test_a_callback_raising_exit_stops_the_server_with_that_reason() -> None:
    pid = start_server(notify_me=True)
    ref = nodes.monitor(pid)
    with pytest.raises(Exit):
        gen_statem.call(pid, ("raise_exit", "shutdown"))
    assert wait_down(ref) == "shutdown"
    assert nodes.receive(0, match=tagged("terminate"))[1] == "shutdown"


class TrapsExits:
    """init traps exits: an exit signal from the parent stops the server, others are info events."""

    def init(notify_to: Pid) -> tuple:
        nodes.process_flag("trap_exit", True)
        return ("ok", "running", {"notify": notify_to})

    def running(event_type: Any, content: Any, data: dict) -> Any:
        notify(data, (event_type, content))
        return "keep_state_and_data"

    def terminate(reason: Any, state: Any, data: dict) -> None:
        notify(data, ("terminate", reason, state))


def _parent_of_a_trapping_server(test_pid: Pid) -> None:
    ok, pid = gen_statem.start_link(TrapsExits, test_pid)
    nodes.send(test_pid, ("server", pid))
    nodes.receive(match=lambda m: m == "die")
    raise Exit("shutdown")


def test_a_trapping_server_stops_when_its_parent_exits_and_runs_terminate() -> None:
    parent = nodes.spawn(_parent_of_a_trapping_server, nodes.self())
    _, pid = nodes.receive(WAIT, match=tagged("server"))
    ref = nodes.monitor(pid)
    nodes.exit(pid, "not from the parent")  # an exit signal from anyone else is just an info event
    assert nodes.receive(WAIT, match=tagged("info")) == (
        "info", ("EXIT", nodes.self(), "not from the parent"))
    nodes.send(parent, "die")
    assert wait_down(ref) == "shutdown"
    assert nodes.receive(0, match=tagged("terminate")) == ("terminate", "shutdown", "running")


# -- sys.get_state -----------------------------------------------------------------------------------

def test_get_state_returns_state_name_and_data() -> None:
    pid = start_server(name="statem_inspected")
    gen_statem.cast(pid, "x")
    state, data = nodes.sys.get_state(pid)
    assert state == "idle" and data["log"] == [("cast", "x")]
    assert nodes.sys.get_state("statem_inspected") == (state, data)
    assert nodes.flush() == []
    stop_server(pid)
    with pytest.raises(Exit) as excinfo:
        nodes.sys.get_state(pid)
    assert excinfo.value.reason == "noproc"


# -- time-outs and postpone (OTP's transition actions) --------------------------------------------

class Lock:
    """OTP's code-lock shape: "unlock" opens for ``ms`` (a state time-out); the test hears every
    time-out that fires, with the state it fired in.

    locked: cast ("unlock", ms) -> open with a state time-out; call "state" -> its name
    open:   cast "hold" -> held (another state: the time-out is cancelled);
            cast ("again", ms) -> keep_state, restarting the time-out
    any:    cast ("idle_after", ms) -> an event time-out; cast ("generic", name, ms | "cancel")
    """

    def init(notify_to: Pid) -> tuple:
        return ("ok", "locked", {"notify": notify_to})

    def _common(event_type: Any, content: Any, data: dict, state: str) -> Any:
        if type(event_type) is tuple and event_type[0] == "call":
            return ("keep_state_and_data", [("reply", event_type[1], state)])
        if event_type in ("timeout", "state_timeout") or type(event_type) is tuple:
            notify(data, ("fired", event_type, content, state))
            return ("next_state", "locked", data) if event_type == "state_timeout" else "keep_state_and_data"
        if type(content) is tuple and content[0] == "idle_after":
            return ("keep_state_and_data", [("timeout", content[1], "idle")])
        if type(content) is tuple and content[0] == "generic":
            _, name, ms = content
            action = (("timeout", name), "cancel") if ms == "cancel" else (("timeout", name), ms, name)
            return ("keep_state_and_data", [action])
        return None

    def locked(event_type: Any, content: Any, data: dict) -> Any:
        if type(content) is tuple and content[0] == "unlock":
            return ("next_state", "open", data, [("state_timeout", content[1], "lock")])
        return Lock._common(event_type, content, data, "locked") or "keep_state_and_data"

    def open(event_type: Any, content: Any, data: dict) -> Any:
        if content == "hold":
            return ("next_state", "held", data)
        if type(content) is tuple and content[0] == "again":
            return ("keep_state_and_data", ("state_timeout", content[1], "lock"))  # one action on its own
        return Lock._common(event_type, content, data, "open") or "keep_state_and_data"

    def held(event_type: Any, content: Any, data: dict) -> Any:
        return Lock._common(event_type, content, data, "held") or "keep_state_and_data"


def fired(timeout_ms: int = WAIT) -> tuple:
    return nodes.receive(timeout_ms, match=tagged("fired"))


def test_a_state_timeout_fires_in_its_state_and_a_state_change_cancels_it() -> None:
    ok, pid = gen_statem.start(Lock, nodes.self())
    gen_statem.cast(pid, ("unlock", 30))
    assert fired() == ("fired", "state_timeout", "lock", "open")
    assert gen_statem.call(pid, "state") == "locked"
    gen_statem.cast(pid, ("unlock", 100))
    gen_statem.cast(pid, "hold")  # another state before it fires
    assert gen_statem.call(pid, "state") == "held"
    with pytest.raises(TimeoutError):
        fired(400)  # time passing is the point: 4x the time-out, and nothing
    stop_server(pid)


def test_setting_a_running_state_timeout_again_restarts_it() -> None:
    ok, pid = gen_statem.start(Lock, nodes.self())
    gen_statem.cast(pid, ("unlock", 10_000))
    gen_statem.cast(pid, ("again", 20))  # replaces the 10 s one
    assert fired() == ("fired", "state_timeout", "lock", "open")
    stop_server(pid)


def test_an_event_timeout_is_cancelled_by_any_event_and_fires_when_none_comes() -> None:
    ok, pid = gen_statem.start(Lock, nodes.self())
    gen_statem.cast(pid, ("idle_after", 300))
    nodes.send(pid, "anything")  # an info event: cancels it
    with pytest.raises(TimeoutError):
        fired(600)
    gen_statem.cast(pid, ("idle_after", 20))
    assert fired() == ("fired", "timeout", "idle", "locked")
    stop_server(pid)


def test_an_event_timeout_rearmed_by_every_event_keeps_memory_flat() -> None:
    # a server that sets a one-hour idle time-out on each event cancels one timer per event
    ok, pid = gen_statem.start(Lock, nodes.self())
    gen_statem.cast(pid, ("idle_after", 3_600_000))
    assert gen_statem.call(pid, "state") == "locked"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):
            gen_statem.cast(pid, ("idle_after", 3_600_000))
        assert gen_statem.call(pid, "state", timeout=WAIT) == "locked"  # every cast handled
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        stop_server(pid)
    assert grown < 1_000_000, f"20,000 re-armed time-outs left {grown:,} bytes behind"


def test_a_generic_timeout_survives_other_events_and_can_be_cancelled() -> None:
    ok, pid = gen_statem.start(Lock, nodes.self())
    gen_statem.cast(pid, ("generic", "a", 100))
    gen_statem.cast(pid, ("generic", "b", 10_000))
    for _ in range(5):
        nodes.send(pid, "noise")  # other events do not cancel a generic time-out
    gen_statem.cast(pid, ("generic", "b", "cancel"))
    assert fired() == ("fired", ("timeout", "a"), "a", "locked")
    assert gen_statem.call(pid, "state") == "locked"
    stop_server(pid)


class TakenBackZeroTimeouts:
    """Records every event; "go" sets a 0 ms time-out behind an inserted event whose handling
    takes it back, in one of three ways."""

    def init(notify_to: Pid) -> tuple:
        return ("ok", "a", notify_to)

    def a(event_type: Any, content: Any, data: Pid) -> Any:
        nodes.send(data, ("event", "a", event_type, content))
        if type(content) is tuple and content[0] == "go":
            key = content[1]
            return ("keep_state_and_data", [("next_event", "internal", content[2]), (key, 0, "zero")])
        if content == "replace":
            return ("keep_state_and_data", [("state_timeout", 50, "later")])
        if content == "cancel":
            return ("keep_state_and_data", [(("timeout", "g"), "cancel")])
        if content == "move":
            return ("next_state", "b", data)
        return "keep_state_and_data"

    def b(event_type: Any, content: Any, data: Pid) -> Any:
        nodes.send(data, ("event", "b", event_type, content))
        return "keep_state_and_data"


def test_a_zero_timeout_is_still_a_timeout_until_it_is_handled() -> None:
    """As OTP: a 0 ms time-out waits behind the events queued before it, and until then a state
    change, setting it again or "cancel" takes it back."""
    def events_until(last: Any) -> list:
        seen = []
        while True:
            _, state, event_type, content = nodes.receive(WAIT, match=tagged("event"))
            seen.append((state, event_type, content))
            if content == last:
                return seen

    ok, pid = gen_statem.start(TakenBackZeroTimeouts, nodes.self())
    gen_statem.cast(pid, ("go", "state_timeout", "replace"))
    assert events_until("later") == [("a", "cast", ("go", "state_timeout", "replace")),
                                     ("a", "internal", "replace"), ("a", "state_timeout", "later")]
    gen_statem.cast(pid, ("go", ("timeout", "g"), "cancel"))
    gen_statem.cast(pid, "marker")
    assert events_until("marker") == [("a", "cast", ("go", ("timeout", "g"), "cancel")),
                                      ("a", "internal", "cancel"), ("a", "cast", "marker")]
    gen_statem.cast(pid, ("go", "state_timeout", "move"))
    gen_statem.cast(pid, "marker")
    assert events_until("marker") == [("a", "cast", ("go", "state_timeout", "move")),
                                      ("a", "internal", "move"), ("b", "cast", "marker")]
    # not taken back, it comes after the inserted event and before what was sent meanwhile
    ok, pid2 = gen_statem.start(TakenBackZeroTimeouts, nodes.self())
    gen_statem.cast(pid2, ("go", ("timeout", "g"), "plain"))
    gen_statem.cast(pid2, "marker")
    assert events_until("marker") == [("a", "cast", ("go", ("timeout", "g"), "plain")),
                                      ("a", "internal", "plain"), ("a", ("timeout", "g"), "zero"),
                                      ("a", "cast", "marker")]
    stop_server(pid)
    stop_server(pid2)


class Gate:
    """closed: every event is postponed (the test is told); cast "open" -> opened, which
    records what it handles and answers calls with the record."""

    def init(notify_to: Pid) -> tuple:
        return ("ok", "closed", {"notify": notify_to, "seen": []})

    def closed(event_type: Any, content: Any, data: dict) -> Any:
        if content == "open":
            return ("next_state", "opened", data, [("next_event", "cast", "inserted")])
        notify(data, ("postponed", content))
        return ("keep_state_and_data", "postpone")

    def opened(event_type: Any, content: Any, data: dict) -> Any:
        seen = {**data, "seen": [*data["seen"], content]}
        if type(event_type) is tuple:
            return ("keep_state", seen, [("reply", event_type[1], seen["seen"])])
        return ("keep_state", seen)


def test_postponed_events_come_back_after_a_state_change_in_their_order() -> None:
    ok, pid = gen_statem.start(Gate, nodes.self())
    answer: list = []
    caller = threading.Thread(target=lambda: answer.append(gen_statem.call(pid, "a call")))
    caller.start()
    assert nodes.receive(WAIT, match=tagged("postponed")) == ("postponed", "a call")
    for k in range(3):
        gen_statem.cast(pid, k)
        assert nodes.receive(WAIT, match=tagged("postponed")) == ("postponed", k)
    gen_statem.cast(pid, "open")
    caller.join(WAIT / 1000)
    # the event the transition inserted first, then the postponed ones in the order postponed
    assert answer == [["inserted", "a call"]]
    assert gen_statem.call(pid, "seen") == ["inserted", "a call", 0, 1, 2, "seen"]
    stop_server(pid)


def test_postpone_and_timeouts_reject_malformed_actions() -> None:
    class Bad:
        def init(args: Any) -> tuple:
            return ("ok", "s", None)

        def s(event_type: Any, content: Any, data: Any) -> Any:
            return ("keep_state_and_data", [content])

    for action in [("state_timeout", -1, "x"), ("timeout", "soon", "x"), ("state_timeout", "later"),
                   ("postpone", "yes"), ("state_timeout", nodes.MAX_TIMEOUT_MS + 1, "x")]:
        ok, pid = gen_statem.start(Bad, None)
        ref = nodes.monitor(pid)
        nodes.send(pid, action)
        assert wait_down(ref) == ("bad_action", action)


class KilledInInit:
    def init(args: Any) -> tuple:
        nodes.exit(nodes.self(), "kill")
        return ("ok", "never", None)


@pytest.mark.parametrize("link", [True, False], ids=["start_link", "start"])
def test_an_init_killed_at_once_is_reported_as_killed(link: bool) -> None:
    nodes.process_flag("trap_exit", True)
    starter = gen_statem.start_link if link else gen_statem.start
    for _ in range(20):
        assert starter(KilledInInit, None) == ("error", "killed")
    assert nodes.flush() == []  # no EXIT left behind, as the contract says of a failed init


class SlowInitKilledMeanwhile:
    """init has its pid killed by a helper process, then goes on (not touching the runtime) to
    return "ok": the acknowledgement it then sends must not reach the starter's mailbox."""

    def init(args: Any) -> tuple:
        killer, done = args
        nodes.send(killer, nodes.self())
        time.sleep(0.2)  # killed meanwhile; Python's thread only notices at its next runtime call
        done.set()
        return ("ok", "never", None)


def test_a_late_acknowledgement_from_a_killed_init_is_dropped() -> None:
    done = threading.Event()

    def killer() -> None:
        victim = nodes.receive(WAIT)
        nodes.exit(victim, "kill")

    k = nodes.spawn(killer)
    assert gen_statem.start(SlowInitKilledMeanwhile, (k, done)) == ("error", "killed")
    assert done.wait(WAIT / 1000)  # init returned; its thread sends the acknowledgement next
    time.sleep(0.1)  # time passing is the point: by now the late acknowledgement has been routed
    assert nodes.flush() == []


class ZeroTimeouts:
    """a --"go"--> b with a state time-out and an event time-out of 0 ms; b records its events."""

    def init(gate: threading.Event) -> tuple:
        return ("ok", "a", {"gate": gate, "seen": []})

    def a(event_type: Any, content: Any, data: dict) -> Any:
        if content == "hold":
            data["gate"].wait(WAIT / 1000)
            return "keep_state_and_data"
        if content == "go":
            return ("next_state", "b", data, [("state_timeout", 0, "st0"), ("timeout", 0, "ev0")])
        return ("keep_state", {**data, "seen": [*data["seen"], ("a", event_type, content)]})

    def b(event_type: Any, content: Any, data: dict) -> Any:
        if type(event_type) is tuple and event_type[0] == "call":
            return ("keep_state_and_data", [("reply", event_type[1], data["seen"])])
        return ("keep_state", {**data, "seen": [*data["seen"], (event_type, content)]})


def test_zero_timeouts_come_before_messages_already_queued_as_in_otp() -> None:
    gate = threading.Event()
    ok, pid = gen_statem.start(ZeroTimeouts, gate)
    gen_statem.cast(pid, "hold")  # so that "go" and "later" are both queued when "go" is handled
    gen_statem.cast(pid, "go")
    gen_statem.cast(pid, "later")
    gate.set()
    # the state time-out of 0 is handled before "later"; it is an event, so it cancels the event
    # time-out of 0 set in the same transition
    assert gen_statem.call(pid, "seen") == [("state_timeout", "st0"), ("cast", "later")]
    stop_server(pid)


def test_a_stopped_machine_leaves_no_timer_running() -> None:
    ok, pid = gen_statem.start(Lock, nodes.self())
    gen_statem.cast(pid, ("generic", "g", 60_000))
    assert gen_statem.call(pid, "state") == "locked"  # the cast was handled: the timer runs
    before = len(nodes._scheduler._timers)
    stop_server(pid)
    assert len(nodes._scheduler._timers) == before - 1


class InsertedTimeoutEvent:
    def init(notify_to: Pid) -> tuple:
        return ("ok", "s", {"notify": notify_to})

    def s(event_type: Any, content: Any, data: dict) -> Any:
        if content == "arm":
            # an inserted event is an event: it cancels the event time-out set beside it
            return ("keep_state_and_data", [("timeout", 100, "real"), ("next_event", "timeout", "inserted")])
        notify(data, ("fired", event_type, content, "s"))
        return "keep_state_and_data"


def test_an_inserted_event_cancels_the_event_timeout_whatever_its_type() -> None:
    ok, pid = gen_statem.start(InsertedTimeoutEvent, nodes.self())
    gen_statem.cast(pid, "arm")
    assert fired() == ("fired", "timeout", "inserted", "s")
    with pytest.raises(TimeoutError):
        fired(400)  # time passing is the point: 4x the time-out, and the real one never comes
    stop_server(pid)


def test_take_queued_calls_takes_the_run_at_the_head_of_the_mailbox_and_nothing_behind() -> None:
    def call(i: int) -> tuple:
        return ("$gen_call", (nodes.self(), nodes.make_ref()), ("command", i))

    def is_command(req: Any) -> bool:
        return type(req) is tuple and req[0] == "command"

    def in_a_process(parent: Any) -> None:
        me = nodes.self()
        a, b, c = call(1), call(2), call(3)
        status = ("$gen_call", (me, nodes.make_ref()), "status")
        for m in (a, b, status, c):
            nodes.send(me, m)
        first = gen_statem.take_queued_calls(is_command, 100)
        rest = nodes.flush()
        burst = [call(i) for i in range(25)]
        for m in burst:
            nodes.send(me, m)
        bounded = gen_statem.take_queued_calls(is_command, 20)
        left = nodes.flush()
        nodes.send(parent, (first == [a[1:], b[1:]], rest == [status, c],
                            bounded == [m[1:] for m in burst[:20]], left == burst[20:]))

    nodes.spawn(in_a_process, nodes.self())
    got = nodes.receive(WAIT, lambda m: type(m) is tuple and len(m) == 4)
    # the two calls in front are taken; the call behind them and the command after it stay
    # queued, in order; a longer run is taken at most `limit` at a time
    assert got == (True, True, True, True)

"""``./scripts/demo`` end to end: the seed example's results, a clean exit, nothing left running.

Each test runs the demo as a user would (``./scripts/demo`` from the repository root), in
a session of its own, through ``script_run.ScriptRun``, which finds every process of the run
(the node processes, the demo's private port-mapper).  After the demo exits none of them may
remain; whatever does is killed by PID.

The demo picks its own port-mapper port and cookie, so these tests do not make the
pytest process a node and are not ``distributed``.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from script_run import ROOT, ScriptRun

DEMO = ROOT / "scripts" / "demo"

pytestmark = pytest.mark.timeout(180)

PID = r"<[^<>\s]+@[^<>\s]+\.\d+\.\d+>"
OK_PID = rf"\('ok', {PID}\)"

#: (node, call pattern, result pattern) of every ``  (node) call -> result`` line, in order
SEED_RESULTS: list[tuple[str, str, str]] = [
    ("1", r'RaftedValue\.start_link\(\("create_new_consensus_group", config\), name="foo"\)', OK_PID),
    ("2", r'RaftedValue\.start_link\(\("join_existing_consensus_group", .*name="bar"\)', OK_PID),
    ("3", r'RaftedValue\.start_link\(\("join_existing_consensus_group", .*name="baz"\)', OK_PID),
    *[("1", rf'RaftedValue\.command\("foo", \("enqueue", "{v}"\)\)', rf"\('ok', {i}\)")
      for i, v in enumerate("abcde")],
    ("2", r'RaftedValue\.command\(\("foo", n1\), "dequeue"\)', r"\('ok', 'a'\)"),
    ("2", r'RaftedValue\.command\(\("foo", n1\), "dequeue"\)', r"\('ok', 'b'\)"),
    ("2", r'RaftedValue\.command\(\("foo", n1\), \("enqueue", "f"\)\)', r"\('ok', 3\)"),
    ("2", r'RaftedValue\.query\(\("foo", n1\), "length"\)', r"\('ok', 4\)"),
    ("3", r'nodes\.gen_statem\.stop\("baz"\)', r"'ok'"),
    ("1", r'RaftedValue\.command\("foo", "dequeue"\)', r"\('ok', 'c'\)"),
    ("1", r'RaftedValue\.remove_follower\("foo", baz\)', r"'ok'"),
    # node 1 is stopped; the new leader (bar on 2 or baz on 3) answers
    ("[23]", r'RaftedValue\.command\(leader, "dequeue"\)', r"\('ok', 'd'\)"),
    ("[23]", r'RaftedValue\.query\(leader, "length"\)', r"\('ok', 2\)"),
]

#: after the seed example, ``--persist`` restarts bar on a fresh node 4 from its directory
RESTART_RESULTS: list[tuple[str, str, str]] = [
    ("4", r'RaftedValue\.start_link\(\.\.\., name="bar", persistence_dir=".*"\)', OK_PID),
    ("4", r'RaftedValue\.query\("bar", "length"\)', r"\('ok', 2\)"),
]

RESULT_LINE = re.compile(r"^  \((?P<node>\S+)\) (?P<call>.*?)\s+-> (?P<result>.*)$")
NEW_LEADER_LINE = re.compile(rf"^   new leader (?P<pid>{PID}) elected after \d+\.\d+ s$")


def start_demo(runs: list[ScriptRun], *args: str) -> ScriptRun:
    run = ScriptRun([str(DEMO)], *args, what="the demo")
    runs.append(run)
    return run


# -- checks -------------------------------------------------------------------------------------

def check_results(output: str, expected: list[tuple[str, str, str]]) -> list[re.Match[str]]:
    """Every ``  (node) call -> result`` line, in order, against ``expected``."""
    shown = [m for m in map(RESULT_LINE.match, output.splitlines()) if m]
    assert len(shown) == len(expected), f"expected {len(expected)} results, got {len(shown)}:\n{output}"
    for m, (node, call, result) in zip(shown, expected, strict=True):
        line = m.group(0)
        assert re.fullmatch(rf"{node}x\w+", m["node"]), f"on the wrong node: {line!r}\n{output}"
        assert re.fullmatch(call, m["call"]), f"unexpected call {line!r} (wanted {call!r})\n{output}"
        assert re.fullmatch(result, m["result"]), f"unexpected result {line!r} (wanted {result!r})\n{output}"
    return shown


def check_new_leader(output: str, shown: list[re.Match[str]]) -> None:
    """One ``new leader <pid> elected`` line, the pid on the node that answers after it."""
    leaders = [m for m in map(NEW_LEADER_LINE.match, output.splitlines()) if m]
    assert len(leaders) == 1, f"expected one new-leader line:\n{output}"
    pid = leaders[0]["pid"]
    leader_node = pid[1:].split("@")[0]
    assert re.fullmatch(r"[23]x\w+", leader_node), f"the new leader is not on node 2 or 3: {pid}\n{output}"
    answers = [m for m in shown if "(leader, " in m["call"]]
    assert answers and all(m["node"] == leader_node for m in answers), output


def check_nothing_left(run: ScriptRun, seen_while_running: dict[int, str] | None = None) -> None:
    left = run.leftovers()
    assert not left, (f"processes of the demo still running after it exited: {left}\n"
                      f"(seen while it ran: {seen_while_running})\n{run.output()}")


def processes_while_running(run: ScriptRun, check: bool = True) -> dict[int, str]:
    """The run's processes once its three nodes are up: proves ``processes()`` finds them all.

    ``check=False`` for a run that may end right after its nodes are up (then they may be gone).
    """
    run.wait_for_line(r"^   nodes up: ")
    procs = run.processes()
    if not check:
        return procs
    assert run.popen.pid in procs, procs
    nodes = [cmd for cmd in procs.values() if "-m nodes" in cmd and "--noshell" in cmd]
    epmds = [cmd for cmd in procs.values() if "epmd" in cmd]
    assert len(nodes) == 3, f"expected the 3 node processes of the demo among {procs}"
    assert len(epmds) == 1, f"expected the demo's port-mapper among {procs}"
    return procs


# -- tests --------------------------------------------------------------------------------------

def test_script_runs_the_seed_example(script_runs: list[ScriptRun]) -> None:
    run = start_demo(script_runs)
    seen = processes_while_running(run)
    status = run.wait()
    output = run.output()
    assert status == 0, f"the demo exited with {status}:\n{output}"
    assert "Traceback" not in output, output
    shown = check_results(output, SEED_RESULTS)
    check_new_leader(output, shown)
    assert output.splitlines()[-1].startswith("== done"), output
    check_nothing_left(run, seen)


def test_demo_persist_restarts_from_disk(script_runs: list[ScriptRun], tmp_path: Path) -> None:
    persist = tmp_path / "persist"
    run = start_demo(script_runs, "--persist", str(persist))
    seen = processes_while_running(run, check=False)  # while persistence is missing it fails at once
    status = run.wait()
    output = run.output()
    check_nothing_left(run, seen)  # also after a failure
    if status != 0 and re.search(r"NotImplementedError: .*persistence_dir is not supported", output):
        pytest.xfail("persistence not implemented yet")
    assert status == 0, f"the demo exited with {status}:\n{output}"
    check_persist_output(output, persist)


def check_persist_output(output: str, persist: Path) -> None:
    assert "Traceback" not in output, output
    shown = check_results(output, SEED_RESULTS + RESTART_RESULTS)
    check_new_leader(output, shown[:len(SEED_RESULTS)])
    # the value recovered from bar's directory alone is the one the group answered before
    recovered = shown[-1]["result"]
    assert f"   (the group answered {recovered} before the restart)" in output.splitlines(), output
    bar_dir = Path(re.search(r'persistence_dir="([^"]+)"', shown[-2]["call"])[1])  # type: ignore[index]
    assert bar_dir.parent == persist.resolve(), f"bar's directory {bar_dir} is not in {persist}"
    assert bar_dir.is_dir() and any(bar_dir.iterdir()), f"nothing persisted in {bar_dir}\n{output}"
    assert output.splitlines()[-1].startswith("== done"), output


@pytest.mark.parametrize("after", [
    r"^   nodes up: ",                          # three idle nodes
    r"^   waiting for foo to elect itself",     # inside the rpc that starts the first member
    r"^== commands on the replicated value",    # a running group, commands in flight
])
def test_demo_ctrl_c_stops_everything(script_runs: list[ScriptRun], after: str) -> None:
    run = start_demo(script_runs)
    seen = processes_while_running(run)
    run.wait_for_line(after)
    os.killpg(run.popen.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
    status = run.wait(60)
    output = run.output()
    assert status in (130, 0), f"the demo exited with {status} on Ctrl-C:\n{output}"
    if status == 130:
        assert "interrupted; stopping every node this demo started" in output, output
    check_nothing_left(run, seen)

"""The ``pynode`` shell under a pseudo-terminal, ``pynode --help``, and ``--noshell`` signals.

The shell node inherits the test session's private epmd port and cookie; every OS process
is killed by PID at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

import nodes

try:
    from . import dist_peer_helpers as h
except ImportError:
    import dist_peer_helpers as h  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(90)

ROOT = h.HERE.parent.parent
PYNODE = Path(sys.executable).with_name("pynode")


@pytest.fixture
def shell(this_node: str, tmp_path: Path) -> Iterator[Any]:
    short = f"sh{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYNODE_HISTORY": str(tmp_path / "history"),
           "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "nodes", "--sname", short], env=env, cwd=str(ROOT),
                          encoding="utf-8", timeout=20, dimensions=(50, 200))
    child.logfile_read = open(tmp_path / "shell.log", "w")  # noqa: SIM115 - closed below
    child.node_name = f"{short}@{nodes.node().partition('@')[2]}"
    try:
        yield child
    finally:
        if child.isalive():
            os.kill(child.pid, signal.SIGKILL)
        child.close(force=True)
        child.logfile_read.close()
        if child.node_name in nodes.list_nodes():
            nodes.disconnect(child.node_name)


def prompt(name: str) -> str:
    return re.escape(f"({name})") + r"\d+> "


def run(child: Any, line: str) -> str:
    """Type a line at the prompt and return what it printed before the next prompt."""
    child.sendline(line)
    child.expect(prompt(child.node_name))
    return str(child.before)


@pytest.mark.distributed
def test_shell_is_a_process_of_the_node(shell: Any) -> None:
    name = shell.node_name
    shell.expect(prompt(name))
    assert "nodes, rafted and RaftedValue" in shell.before
    assert "True" in run(shell, f"nodes.connect({nodes.node()!r})")
    assert name in nodes.list_nodes()
    assert re.search(r"<" + re.escape(name) + r"\.\d+\.0>", run(shell, "nodes.self()"))
    assert "True" in run(shell, 'nodes.register("sh", nodes.self())')
    assert "rafted" in run(shell, "rafted.__name__")
    assert "start_link" in run(shell, "RaftedValue.start_link.__name__")
    assert repr(name) in run(shell, "nodes.node()")

    nodes.send(("sh", name), ("hello from", nodes.node(), 42))
    expected = repr([("hello from", nodes.node(), 42)])
    # the message may still be on its way: flush until it is there
    seen = h.wait_until_true(lambda: expected in run(shell, "nodes.flush()"), 10.0, "the message")
    assert seen
    assert "[]" in run(shell, "nodes.flush()")

    # a class typed at the prompt travels to another node by value
    run(shell, "class Pt:\n    def __init__(self, x): self.x = x\n")
    out = run(shell, f"nodes.rpc.call({nodes.node()!r}, lambda p: (p.x, type(p).__module__), Pt(3))")
    assert "(3, '__main__')" in out

    shell.sendeof()
    shell.expect(pexpect.EOF, timeout=20)
    shell.close()
    assert shell.exitstatus == 0, shell.before
    h.wait_gone(name)


@pytest.mark.distributed
def _console_cut_short_by_ctrl_c(report_to: nodes.Pid) -> None:
    """(a process) run a shell line that Ctrl-C interrupts half-way through a send, then idle."""
    from nodes import shell

    console = shell._Console(shell.shell_namespace(), shell._Prompt("> "))
    # begin_signal is where nodes.send starts; the interrupt lands before the send's end
    console.push("from nodes import process; process.begin_signal(); raise KeyboardInterrupt")
    nodes.send(report_to, "prompt back")
    nodes.receive()


def test_a_ctrl_c_half_way_through_a_send_does_not_swallow_the_shells_death() -> None:
    # the shell's process killed later must still be reported to its monitors
    pid, ref = nodes.spawn_monitor(_console_cut_short_by_ctrl_c, nodes.self())
    assert nodes.receive(10_000, lambda m: m == "prompt back")
    nodes.exit(pid, "kill")
    assert nodes.receive(10_000, lambda m: h.is_tuple(m, "DOWN", 5) and m[1] == ref)[4] == "killed"


def test_shell_stops_its_node_and_exits_0_on_sigterm(shell: Any) -> None:
    name = shell.node_name
    shell.expect(prompt(name))
    assert "True" in run(shell, f"nodes.connect({nodes.node()!r})")
    run(shell, 'nodes.register("sh", nodes.spawn(nodes.receive))')
    ref = nodes.monitor(("sh", name))
    nodes.rpc.call(name, nodes.node, timeout=10_000)  # after the monitor request on the same connection
    shell.kill(signal.SIGTERM)  # while it waits at the prompt
    shell.expect(pexpect.EOF, timeout=20)
    shell.close()
    assert (shell.exitstatus, shell.signalstatus) == (0, None), shell.before
    # its processes were stopped (as init:stop() does), not left to a lost connection
    down = nodes.receive(10_000, lambda m: type(m) is tuple and m[:2] == ("DOWN", ref))
    assert down[4] == "shutdown"
    h.wait_gone(name)


def test_pynode_help_explains_every_flag() -> None:
    assert PYNODE.exists(), f"no console script at {PYNODE}"
    done = subprocess.run([str(PYNODE), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for flag in ("--sname", "--name", "--cookie", "--noshell"):
        assert flag in done.stdout
    assert "NODES_COOKIE" in done.stdout and "SIGTERM" in done.stdout


@pytest.mark.distributed
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_noshell_exits_0_on_signal(node_cluster: Any, signum: int) -> None:
    peer = h.start_peer(node_cluster)
    assert nodes.rpc.call(peer.name, nodes.node, timeout=10_000) == peer.name
    peer.signal(signum)
    assert peer.popen.wait(20) == 0, peer.log()
    assert "Traceback" not in peer.log()
    h.wait_gone(peer.name, timeout=5.0)  # it said goodbye: no waiting for ticks


@pytest.mark.parametrize("args, says", [(["--name", "bad name"], "NAME@HOST"),
                                        (["--name", "noat"], "--name needs NAME@HOST"),
                                        (["--sname", ""], "node name"),
                                        (["--sname", "x", "--log-level", "NOPE"], "--log-level"),
                                        (["--sname", "x", "--cookie", ""], "--cookie must not be empty")])
def test_pynode_refuses_a_malformed_name_or_cookie_with_a_usage_error(args: list[str], says: str) -> None:
    done = subprocess.run([str(PYNODE), *args, "--noshell"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "usage:" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.distributed
def test_pynode_says_an_address_not_of_this_host_cannot_be_bound(node_cluster: Any) -> None:
    # a long name's host part is the address the node binds: 192.0.2.1 is nobody's (TEST-NET-1)
    done = subprocess.run([str(PYNODE), "--name", "n1@192.0.2.1", "--noshell"], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot start node n1@192.0.2.1" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.distributed
@pytest.mark.parametrize("shell_too", [False, True])
def test_pynode_says_a_taken_name_is_in_use_and_exits_1(node_cluster: Any, shell_too: bool) -> None:
    peer = h.start_peer(node_cluster)
    short = peer.name.partition("@")[0]
    args = [str(PYNODE), "--sname", short] + ([] if shell_too else ["--noshell"])
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot start node {short}" in done.stderr and "in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert nodes.rpc.call(peer.name, nodes.node, timeout=10_000) == peer.name  # the peer is untouched

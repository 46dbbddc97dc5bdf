"""The bounded fault-injection campaign of every CI run (about 75 s).

It runs ``scripts/torture.py --seconds 60`` as a separate process: the harness there is a
node of its own with ``NODES_TICK_MS=2000`` for itself and its nodes, so that a leader
paused for 2.5-4 s is not declared down by the harness and clients that wait long enough
see what the old leader answers when it wakes up (the pytest node ticks every 500 ms).
5 nodes, 3 clients, every kind of fault (kill + replace, pause leader, pause a minority,
partition through the transport switch).  ``JEPSEN_SEED`` / ``JEPSEN_SECONDS`` override
the defaults.  On failure the assertion shows the run's output and the saved history,
which ``python -m lincheck FILE`` replays.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import nodecluster
import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def run_torture(tmp_path: Path, *args: str, timeout: float) -> tuple[int, str]:
    """Run scripts/torture.py in a session of its own; everything it started dies at the end."""
    port = nodecluster.free_port()
    cmd = [sys.executable, str(ROOT / "scripts" / "torture.py"), "--epmd-port", str(port),
           "--out", str(tmp_path / "histories"), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODES_")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the script kills its nodes on the way out
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        out += f"\n[timed out after {timeout} s]"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of its session, if it died abruptly
        except (ProcessLookupError, PermissionError):
            pass
        nodecluster.kill_epmd(port)
    return proc.returncode, out


def test_bounded_campaign_is_linearizable(tmp_path: Path) -> None:
    seed = os.environ.get("JEPSEN_SEED", "7")
    seconds = float(os.environ.get("JEPSEN_SECONDS", "60"))
    rc, out = run_torture(tmp_path, "--seconds", str(seconds), "--seed", seed, "--clients", "3",
                          "--think-ms", "20", timeout=seconds + 180)
    lines = [line for line in out.splitlines() if line.startswith("run 1:")]
    assert rc == 0 and lines, f"torture run failed (rc {rc}):\n{out}"
    line = lines[0]
    assert "verdict=linearizable" in line, out
    m = re.search(r"ops=(\d+) \(ok (\d+), failed (\d+), unknown (\d+)\) faults=(\d+)", line)
    assert m, line
    ops, ok, _failed, _unknown, faults = map(int, m.groups())
    assert ok >= 200, f"too few operations succeeded: {line}"
    assert faults >= 4, f"too few faults: {line}"
    print(line)


def test_bounded_campaign_over_network_namespaces(tmp_path: Path) -> None:
    """The same with real network faults: a node per namespace, blackhole routes, links down."""
    from jepsen import netns

    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    seed = os.environ.get("JEPSEN_SEED", "11")
    seconds = float(os.environ.get("JEPSEN_NETNS_SECONDS", "35"))
    tag = uuid.uuid4().hex[:5]
    try:
        rc, out = run_torture(tmp_path, "--net", "netns", "--netns-tag", tag, "--seconds", str(seconds),
                              "--seed", seed, "--clients", "3", "--think-ms", "20",
                              "--kinds", "partition,isolate,pause_leader_cut", timeout=seconds + 180)
    finally:
        leftover = netns.cleanup_tag(tag)  # nothing, unless the script was killed
    assert not leftover, f"the run left namespaces behind: {leftover}"
    lines = [line for line in out.splitlines() if line.startswith("run 1:")]
    assert rc == 0 and lines, f"torture run failed (rc {rc}):\n{out}"
    assert "verdict=linearizable" in lines[0], out
    m = re.search(r"ops=\d+ \(ok (\d+),.* faults=(\d+)", lines[0])
    assert m and int(m.group(1)) >= 100 and int(m.group(2)) >= 2, lines[0]
    print(lines[0])

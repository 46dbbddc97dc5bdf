"""A script run as a user runs it (``./scripts/demo``, ``scripts/bench.py``), and every process
it starts found and killed.

The script runs from the repository root in a session of its own, its output read line by
line.  Every process of the run is found through ``/proc``: the script's session (the script
and the node processes it starts) and a marker variable in the environment, which every
descendant inherits, including a private port-mapper (a detached process in a session of its
own).  After the script exits none of them may remain; whatever does is killed by PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK_VAR = "RAFTED_SCRIPT_TEST_RUN"
#: seconds for one run unless the caller says otherwise
RUN_TIMEOUT = 150.0
#: seconds for the run's processes to disappear once the script has exited
GONE_TIMEOUT = 10.0


def _proc_info(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return fields[0], int(fields[3])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class ScriptRun:
    """``COMMAND ARGS`` in its own session, its output collected by a reader thread.

    ``what`` names the run in failure messages.
    """

    def __init__(self, command: list[str], *args: str, what: str) -> None:
        self.what = what
        self.mark = f"{MARK_VAR}={uuid.uuid4().hex}".encode()
        env = {**os.environ, MARK_VAR: self.mark.split(b"=", 1)[1].decode()}
        # the script chooses its own port-mapper port and cookie, and runs with the default
        # failure detection as a user's would: with the tests' faster tick (NODES_TICK_MS=500),
        # 1.5 s of starvation on a loaded machine makes a node count as down (a benchmark run
        # beside a second test suite once lost its leader's node under 128 clients so)
        for var in ("NODES_EPMD_PORT", "NODES_COOKIE", "NODES_TICK_MS"):
            env.pop(var, None)
        self.lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            [*command, *args], cwd=ROOT, env=env, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, name="script-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = RUN_TIMEOUT) -> str:
        """The first output line matching ``pattern`` (re.search); fails at EOF or after ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        pytest.fail(f"{self.what} never printed a line matching {pattern!r}; its output:\n{self.output()}")

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.what} did not exit within {timeout} s; its output:\n{self.output()}")
        self._reader.join(10)
        return status

    def processes(self) -> dict[int, str]:
        """Live (non-zombie) processes of this run: its session or the marker in the environment."""
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            info = _proc_info(pid)
            if info is None or info[0] in ("Z", "X"):
                continue
            mine = info[1] == self.popen.pid
            if not mine:
                try:
                    mine = self.mark in (entry / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue  # gone, or not ours to read
            if mine:
                found[pid] = _cmdline(pid)
        return found

    def leftovers(self, timeout: float = GONE_TIMEOUT) -> dict[int, str]:
        """Processes of the run still alive ``timeout`` seconds after the script exited."""
        deadline = time.monotonic() + timeout
        left = self.processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = self.processes()
        return left

    def kill_all(self) -> None:
        """Kill, by PID, the script and every process of the run that is still there."""
        if self.popen.poll() is None:
            self.popen.kill()
        # nodes before port-mappers (a node that outlives its port-mapper starts a new one),
        # and again until none is left
        deadline = time.monotonic() + GONE_TIMEOUT
        while (left := self.processes()) and time.monotonic() < deadline:
            for pid in sorted(left, key=lambda pid: "epmd" in left[pid]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait
            pass
        if self.popen.stdout is not None:
            self._reader.join(10)
            self.popen.stdout.close()

"""Real node OS processes for tests: start ``python -m nodes --noshell`` nodes and clean up.

The pytest process itself becomes a node once per session (``this_node``), on an epmd
port of its own (a free port, never the default 4370) with a cookie of its own; every
node it starts inherits both through the environment.  Each started node is killed by
PID when its test ends, and the session's epmd is killed by PID at the end.

Tests that need distribution are marked ``distributed`` (conftest orders them after the
local ones, since a process cannot go back to ``nonode@nohost``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nodes
from nodes import epmd

ROOT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname().split(".")[0]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, outside the ephemeral range (see the benchmarks'
    ``bench_stats.free_ports``, the one picker for scripts and tests)."""
    return int(_bench_stats().free_ports(1)[0])


def _bench_stats() -> Any:
    """``scripts/bench_stats.py`` (standard library only), loaded by path: ``scripts`` is not a
    package, and putting it on ``sys.path`` would let its script names shadow modules."""
    module = sys.modules.get("bench_stats")
    if module is None:
        spec = importlib.util.spec_from_file_location("bench_stats", ROOT / "scripts" / "bench_stats.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_stats"] = module
        spec.loader.exec_module(module)
    return module


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def node_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A node OS process's environment: ours updated with ``env``, the project and ``tests`` importable."""
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"),
                                                            child_env.get("PYTHONPATH", "")]))
    return child_env


class NodeProcess:
    """One ``python -m nodes --noshell`` OS process."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait
            pass

    def alive(self) -> bool:
        return self.popen.poll() is None

    def connect(self, timeout: float, error: type[Exception] = AssertionError) -> None:
        """Connect to the node, retrying until it is up; ``error`` if it exits or ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        while not nodes.connect(self.name):
            if self.popen.poll() is not None:
                raise error(f"node {self.name} exited with {self.popen.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise error(f"could not connect to {self.name} within {timeout} s:\n{self.log()}")
            time.sleep(0.05)


class NodeCluster:
    """Starts nodes on this host for one test; ``close`` kills every one of them by PID."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[NodeProcess] = []

    def start_node(self, short: str | None = None, *, connect: bool = True, env: dict[str, str] | None = None,
                   args: list[str] | None = None, timeout: float = 20.0) -> NodeProcess:
        """Start a node (short name; a unique one if None), wait until it is connected to us."""
        short = short or f"n{uuid.uuid4().hex[:8]}"
        name = f"{short}@{HOST}"
        log_path = self.tmp_path / f"{short}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "nodes", "--sname", short, "--noshell", *(args or [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=node_env(env), cwd=ROOT,
            )
        proc = NodeProcess(name, popen, log_path)
        self.procs.append(proc)
        if connect:
            proc.connect(timeout)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            if proc.name in nodes.list_nodes():
                nodes.disconnect(proc.name)


def start_this_node() -> tuple[str, int]:
    """Make the pytest process a node on a private epmd port; returns (node name, epmd port)."""
    if nodes.node() != "nonode@nohost":
        return nodes.node(), int(os.environ["NODES_EPMD_PORT"])
    port = free_port()
    os.environ["NODES_EPMD_PORT"] = str(port)
    os.environ["NODES_COOKIE"] = f"test-cookie-{uuid.uuid4().hex}"
    os.environ.setdefault("NODES_TICK_MS", "500")  # detect dead nodes in ~1-2 s in tests
    name = nodes.start(f"pytest{os.getpid()}")
    return name, port


def kill_epmd(port: int) -> None:
    epmd.kill(port)

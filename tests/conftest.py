"""Fixtures shared by every test.

The test thread is itself a ``nodes`` process (a plain thread gets one on first
use), and it lives as long as the pytest run.  So that one test cannot leave
work for the next, each test starts and ends with that process's mailbox empty
and ``trap_exit`` off.  A test that got the test thread's process killed is no
problem: the thread sees ``nodes.Exit`` once and then has a fresh process.

``no_leaked_processes`` is opt-in (``pytestmark =
pytest.mark.usefixtures("no_leaked_processes")``): it fails a test that leaves
spawned processes running, and kills them so they cannot disturb later tests.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import script_run

import nodes

if TYPE_CHECKING:
    import nodecluster as nodecluster_t

# the module, not the nodes.node() function that shadows it as an attribute of the package
_node = importlib.import_module("nodes.this_node")

#: how long a test's processes get to finish after the test body returned
LEAK_GRACE_S = 5.0


def _reset_test_process() -> None:
    for _attempt in range(3):
        try:
            nodes.process_flag("trap_exit", False)
            nodes.flush()
            return
        except nodes.Exit:
            continue  # the test thread's process was killed: the next call gives it a new one


@pytest.fixture(autouse=True)
def _clean_test_process() -> Iterator[None]:
    """An empty mailbox and ``trap_exit`` off for the test thread, before and after each test."""
    _reset_test_process()
    yield
    _reset_test_process()


def _live_spawned_pids() -> set[nodes.Pid]:
    """Pids of live spawned (actor) processes; plain threads' processes are left out."""
    return {proc.pid for proc in list(_node.procs.values()) if proc.alive and proc.actor is not None}


@pytest.fixture
def no_leaked_processes() -> Iterator[None]:
    """Fail the test if processes it spawned are still running shortly after it ends."""
    before = _live_spawned_pids()
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    leaked = _live_spawned_pids() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.01)
        leaked = _live_spawned_pids() - before
    if not leaked:
        return
    for pid in leaked:
        for signal in (nodes.unlink, lambda pid: nodes.exit(pid, "kill")):
            try:
                signal(pid)
            except nodes.Exit:
                pass  # the test thread's process was killed: it gets a new one on the next call
    _reset_test_process()
    pytest.fail(f"the test left {len(leaked)} process(es) running: {sorted(leaked)}")


# -- distribution ------------------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "distributed: the test makes the pytest process a node (runs after local tests)")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # once the pytest process is a node it cannot be nonode@nohost again: local tests go first
    items.sort(key=lambda item: item.get_closest_marker("distributed") is not None)


@pytest.fixture(scope="session")
def this_node() -> Iterator[str]:
    """The pytest process as a node on a private epmd port; the epmd is killed at the end."""
    import nodecluster

    name, port = nodecluster.start_this_node()
    yield name
    from nodes import dist

    dist.stop()
    nodecluster.kill_epmd(port)


@pytest.fixture
def node_cluster(this_node: str, tmp_path: Path) -> Iterator[nodecluster_t.NodeCluster]:
    """Start node OS processes with ``node_cluster.start_node()``; all are killed after the test."""
    import nodecluster

    cluster = nodecluster.NodeCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def script_runs() -> Iterator[list[script_run.ScriptRun]]:
    """Scripts a test starts (``script_runs.append(ScriptRun(...))``); each is killed with every
    process it started when the test ends."""
    runs: list[script_run.ScriptRun] = []
    yield runs
    for run in runs:
        run.kill_all()

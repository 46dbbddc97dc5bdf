"""Waiting for a node OS process that a script started (``python -m nodes --noshell``) to answer.

Shared by ``demo.py`` and ``bench_rafted.py``: both start headless nodes and must not go on
before this node is connected to them, nor wait forever for one that died at start-up.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import nodes


def wait_until_connected(name: str, popen: subprocess.Popen, timeout_s: float = 30,
                         log: Callable[[], str] = lambda: "") -> None:
    """Poll ``nodes.connect(name)``; ``RuntimeError`` (with ``log()``) if the process exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while not nodes.connect(name):
        if popen.poll() is not None:
            raise RuntimeError(f"node {name} exited with status {popen.returncode}{_tail(log())}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not connect to {name} within {timeout_s:g} s{_tail(log())}")
        time.sleep(0.05)


def _tail(text: str) -> str:
    return f": {text}" if text else ""

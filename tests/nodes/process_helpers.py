"""Shared by the local process tests: matchers for DOWN and EXIT messages, waiting for a process to end."""

from __future__ import annotations

import nodes
from nodes import Pid, Ref

#: ms to wait for something that should happen promptly (generous: the machine may be busy)
WAIT = 5000


def is_down(ref: Ref):
    return lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == ref


def is_exit_from(pid: Pid):
    return lambda m: type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == pid


def wait_down(ref: Ref) -> object:
    """The reason of the DOWN message for ``ref``."""
    return nodes.receive(WAIT, match=is_down(ref))[4]


def wait_gone(pid: Pid) -> object:
    """Block until ``pid`` is gone; its exit reason (``"noproc"`` if it was gone already)."""
    return wait_down(nodes.monitor(pid))

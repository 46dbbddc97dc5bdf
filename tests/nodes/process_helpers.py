"""Shared by the local process tests: matchers for DOWN and EXIT messages, waiting for a process to end."""

from __future__ import annotations

import logging
import time

import pytest

import nodes
from nodes import Pid, Ref, process

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


def check_malformed_node_names_are_wrong_arguments(caplog) -> None:
    """A node name without ``name@host`` form: send and cast (which never raise) drop the message
    and log why, and so does a send_after timer; call, monitor, link, unlink, exit, connect,
    disconnect and monitor_node raise ValueError naming the expected form, and leave no message or monitor
    behind.  The same distributed or not."""
    caplog.set_level(logging.WARNING, logger="nodes")
    me = process.current()
    monitors, links = dict(me.monitors), set(me.links)
    for dest in (("some_name", "nohostpart"), ("some_name", "@host"), Pid("a@", 1)):
        caplog.clear()
        assert nodes.send(dest, "lost") == "lost"
        assert nodes.gen_statem.cast(dest, "lost") == "ok"
        assert len(_dropped_for_a_bad_name(caplog)) == 2, caplog.records
        with pytest.raises(ValueError, match="name@host"):
            nodes.gen_statem.call(dest, "request", 1000)
        with pytest.raises(ValueError, match="name@host"):
            nodes.monitor(dest)
    for fn in (nodes.link, nodes.unlink, lambda pid: nodes.exit(pid, "kill")):
        with pytest.raises(ValueError, match="name@host"):
            fn(Pid("a@", 1))
    caplog.clear()
    nodes.send_after(0, ("some_name", "nohostpart"), "lost")  # delivered as send does: dropped
    deadline = time.monotonic() + WAIT / 1000
    while not _dropped_for_a_bad_name(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_dropped_for_a_bad_name(caplog)) == 1, caplog.records
    with pytest.raises(ValueError, match="name@host"):
        nodes.connect("nohostpart")
    with pytest.raises(TypeError, match="node name"):
        nodes.connect(42)  # type: ignore[arg-type]
    for fn in (nodes.disconnect, nodes.monitor_node):
        with pytest.raises(ValueError, match="name@host"):
            fn("nohostpart")
    assert nodes.flush() == []
    assert me.monitors == monitors and me.links == links


def _dropped_for_a_bad_name(caplog) -> list[str]:
    # only these warnings: other tests' sends to unreachable nodes may still be logging drops
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "dropped: bad node name" in r.getMessage()
            and "expected 'name@host'" in r.getMessage()]

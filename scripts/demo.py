#!/usr/bin/env python3
"""The seed example of rafted_value, run for real on three node OS processes.

    ./scripts/demo                  in memory
    ./scripts/demo --persist DIR    each member persists under DIR/<node>; at the end one
                                    member is restarted from its directory

This script is itself a node (``demo@host``); it starts three headless nodes
(``python -m nodes --noshell``) on a private port-mapper port, builds a 3-member
group of ``QueueWithLength`` (defined here, in ``__main__``: it travels to the other
nodes inside the config, by value), runs the seed example's commands printing each
call and its result, stops the leader's node and shows a new leader answering, and
finally stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_stats import free_port  # noqa: E402  (standard library only, shared with the benchmarks)
from node_proc import wait_until_connected  # noqa: E402

import nodes  # noqa: E402
import rafted  # noqa: E402
from nodes import epmd  # noqa: E402
from rafted import RaftedValue  # noqa: E402


class QueueWithLength(rafted.Data):
    """The seed's data module: a FIFO queue and its length."""

    def new():  # type: ignore[misc]
        return ((), 0)

    def command(state, arg):  # type: ignore[no-untyped-def]
        queue, length = state
        if type(arg) is tuple and arg[0] == "enqueue":
            return length, (queue + (arg[1],), length + 1)
        if arg == "dequeue":
            return queue[0], (queue[1:], length - 1)
        raise ValueError(f"unknown command {arg!r}")

    def query(state, arg):  # type: ignore[no-untyped-def]
        if arg == "length":
            return state[1]
        raise ValueError(f"unknown query {arg!r}")


HOST = socket.gethostname().split(".")[0]


def say(text: str) -> None:
    print(text, flush=True)


def shown(node_name: str, call: str, result: Any) -> Any:
    short = node_name.split("@")[0]
    say(f"  ({short}) {call:<58} -> {result!r}")
    return result


class Demo:
    def __init__(self, persist: Path | None) -> None:
        self.persist = persist
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.epmd_port = free_port()
        self.run_id = uuid.uuid4().hex[:6]
        os.environ["NODES_EPMD_PORT"] = str(self.epmd_port)
        os.environ["NODES_COOKIE"] = f"demo-{uuid.uuid4().hex}"

    # -- nodes -------------------------------------------------------------------------
    def start_node(self, short: str) -> str:
        name = f"{short}@{HOST}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "nodes", "--sname", short, "--noshell"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            wait_until_connected(name, self.children[name], 30)
        except RuntimeError as e:
            raise SystemExit(str(e)) from None
        return name

    def stop_node(self, name: str) -> None:
        child = self.children.get(name)
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def cleanup(self) -> None:
        # This node leaves first (saying bye), so it does not watch its children die: nothing
        # it still had on its way to them (a demonitor after the last call) meets a dead node.
        try:
            from nodes import dist

            dist.stop()
        except Exception:  # noqa: BLE001 - leaving anyway
            pass
        for child in self.children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
        epmd.kill(self.epmd_port)

    def member_dir(self, node_name: str) -> str | None:
        if self.persist is None:
            return None
        return str(self.persist / node_name.split("@")[0])

    # -- the example ---------------------------------------------------------------------
    def run(self) -> None:
        say(f"== starting node demo{self.run_id} (this script) and three headless nodes")
        nodes.start(f"demo{self.run_id}")
        n1, n2, n3 = (self.start_node(f"{i}x{self.run_id}") for i in (1, 2, 3))
        say(f"   nodes up: {', '.join(nodes.list_nodes())}")

        config = RaftedValue.make_config(QueueWithLength)
        say("== (1) creates the group: foo; (2) and (3) join it as bar and baz")
        say("   waiting for foo to elect itself ...")
        result = nodes.rpc.call(n1, start_member, ("create_new_consensus_group", config), "foo",
                                self.member_dir(n1), timeout=30000)
        shown(n1, 'RaftedValue.start_link(("create_new_consensus_group", config), name="foo")', result)
        for node_name, name in ((n2, "bar"), (n3, "baz")):
            say(f"   {name} joins (receives a snapshot from the leader) ...")
            result = nodes.rpc.call(
                node_name, start_member, ("join_existing_consensus_group", [("foo", n1)]), name,
                self.member_dir(node_name), timeout=30000)
            shown(node_name, f'RaftedValue.start_link(("join_existing_consensus_group", '
                             f'[("foo", "{n1.split("@")[0]}@..")]), name="{name}")', result)

        say("== commands on the replicated value")
        for v in "abcde":
            shown(n1, f'RaftedValue.command("foo", ("enqueue", "{v}"))',
                  nodes.rpc.call(n1, RaftedValue.command, "foo", ("enqueue", v)))
        foo = ("foo", n1)
        for _ in range(2):
            shown(n2, 'RaftedValue.command(("foo", n1), "dequeue")',
                  nodes.rpc.call(n2, RaftedValue.command, foo, "dequeue"))
        shown(n2, 'RaftedValue.command(("foo", n1), ("enqueue", "f"))',
              nodes.rpc.call(n2, RaftedValue.command, foo, ("enqueue", "f")))
        shown(n2, 'RaftedValue.query(("foo", n1), "length")',
              nodes.rpc.call(n2, RaftedValue.query, foo, "length"))

        say("== the group keeps working when one member dies")
        baz = nodes.rpc.call(n3, nodes.whereis, "baz")
        shown(n3, 'nodes.gen_statem.stop("baz")', nodes.rpc.call(n3, nodes.gen_statem.stop, "baz"))
        shown(n1, 'RaftedValue.command("foo", "dequeue")',
              nodes.rpc.call(n1, RaftedValue.command, "foo", "dequeue"))

        say("== the dead member is removed and a fresh baz joins; then the leader's node (1) is stopped")
        shown(n1, 'RaftedValue.remove_follower("foo", baz)',
              nodes.rpc.call(n1, RaftedValue.remove_follower, "foo", baz))
        nodes.rpc.call(n3, start_member, ("join_existing_consensus_group", [("foo", n1)]), "baz",
                       self.member_dir(n3) and self.member_dir(n3) + "-2", timeout=30000)
        self.stop_node(n1)
        say(f"   stopped {n1}; waiting for a new leader among bar and baz ...")
        t0 = time.monotonic()
        leader = wait_for_leader([("bar", n2), ("baz", n3)], deadline=t0 + 30)
        say(f"   new leader {leader!r} elected after {time.monotonic() - t0:.2f} s")
        shown(leader.node, "RaftedValue.command(leader, \"dequeue\")",
              nodes.rpc.call(leader.node, RaftedValue.command, leader, "dequeue"))
        shown(leader.node, "RaftedValue.query(leader, \"length\")",
              nodes.rpc.call(leader.node, RaftedValue.query, leader, "length"))

        if self.persist is not None:
            self.restart_from_disk(n2, leader)
        say("== done; stopping every node this demo started")

    def restart_from_disk(self, n2: str, leader: nodes.Pid) -> None:
        say("== restart: stop every node, then start bar again from its directory alone")
        expected = nodes.rpc.call(leader.node, RaftedValue.query, leader, "length")
        for name in list(self.children):
            self.stop_node(name)
        n4 = self.start_node(f"4x{self.run_id}")
        config = RaftedValue.make_config(QueueWithLength)
        result = nodes.rpc.call(n4, start_member, ("create_new_consensus_group", config), "bar",
                                self.member_dir(n2), timeout=30000)
        shown(n4, f'RaftedValue.start_link(..., name="bar", persistence_dir="{self.member_dir(n2)}")', result)
        shown(n4, 'RaftedValue.query("bar", "length")',
              nodes.rpc.call(n4, RaftedValue.query, "bar", "length"))
        say(f"   (the group answered {expected!r} before the restart)")


def start_member(group_info: Any, name: str, persistence_dir: str | None) -> Any:
    """Runs on the member's node (through rpc): start a member that outlives the rpc worker."""
    return RaftedValue.start_link(group_info, name=name, persistence_dir=persistence_dir)


def wait_for_leader(members: list[tuple[str, str]], deadline: float) -> nodes.Pid:
    while time.monotonic() < deadline:
        for member in members:
            try:
                status = RaftedValue.status(member, timeout=1000)
            except nodes.Exit:
                continue
            if status["state_name"] == "leader":
                return status["from"]  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise SystemExit("no new leader was elected within 30 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persist", metavar="DIR", type=Path,
                        help="persist each member under DIR/<node> and finish with a restart from disk")
    args = parser.parse_args()
    demo = Demo(args.persist.resolve() if args.persist else None)
    try:
        demo.run()
    except KeyboardInterrupt:
        say("interrupted; stopping every node this demo started")
        return 130
    finally:
        demo.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real network faults: every node in a Linux network namespace of its own.

Topology (all created here, all removed by :meth:`Netns.close`)::

    root namespace: the harness node, torture<pid>@10.213.B.1, on veth "jh<tag>"
         |
    bridge namespace "jb<tag>": bridge br0, one port per host
         |
    "jn<tag>-<i>": one node per namespace, <name>@10.213.B.<10+i> on its eth0

``B`` is random (a private /24 nobody else on the machine uses).  Each namespace's first
node starts that host's port-mapper, as on separate machines.

Faults (:class:`NetnsNetwork`):

* ``cut(a, b)``: blackhole routes in every node of each side for the addresses of the
  other side -- the kernel silently drops the packets (established TCP connections stall,
  new ones fail), the harness still reaches both sides;
* ``isolate(n)``: ``ip link set eth0 down`` in that node's namespace: nobody reaches it.

``tc netem`` (lossy, delayed links) needs the kernel's ``sch_netem``; :func:`netem_unavailable`
says why it is missing where it is.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import netns_hosts
import nodecluster
from netns_hosts import ip

import nodes

ROOT = Path(__file__).resolve().parents[2]


def unavailable() -> str | None:
    """Why namespaces (with veths, bridges and blackhole routes) cannot be used here, or None."""
    return netns_hosts.unavailable("jprobe", [*netns_hosts.VETH_AND_BRIDGE,
                                              ["route", "add", "blackhole", "198.51.100.7/32"]])


def netem_unavailable() -> str | None:
    """Why ``tc qdisc ... netem`` cannot be used here, or None."""
    if shutil.which("tc") is None:
        return "the tc command is not installed"
    probe = f"jprobe{uuid.uuid4().hex[:6]}"
    if ip("netns", "add", probe, check=False).returncode != 0:
        return "no network namespaces"
    try:
        done = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root",
                               "netem", "loss", "10%"], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            return f"tc netem: {done.stderr.strip() or done.returncode}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> str:
    used = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show").stdout
    for _ in range(100):
        prefix = f"10.213.{random.randrange(256)}"
        if f"{prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.213.x.0/24 subnet")


class Netns:
    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or uuid.uuid4().hex[:5]
        self.prefix = _free_subnet()
        self.bridge_ns = f"jb{self.tag}"
        self.root_veth = f"jh{self.tag}"
        self.namespaces: list[str] = []  # created, to delete
        self.node_ns: dict[str, str] = {}  # node name -> its namespace
        self.node_addr: dict[str, str] = {}
        self.procs: list[Any] = []
        self.index = 0

    @property
    def harness_address(self) -> str:
        return f"{self.prefix}.1"

    def setup(self) -> None:
        ipaddress.ip_address(self.harness_address)
        netns_hosts.add_bridge(self.bridge_ns)
        self.namespaces.append(self.bridge_ns)
        ip("link", "add", self.root_veth, "type", "veth", "peer", "name", "up0", "netns", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", "up0", "master", "br0", "up")
        ip("addr", "add", f"{self.harness_address}/24", "dev", self.root_veth)
        ip("link", "set", self.root_veth, "up")

    def start_harness_node(self) -> str:
        """Make this process the harness node, reachable from every namespace."""
        return nodes.start(f"torture{os.getpid()}@{self.harness_address}")

    def add_host(self) -> tuple[str, str]:
        self.index += 1
        if self.index > 240:
            raise RuntimeError("out of addresses")
        ns = f"jn{self.tag}-{self.index}"
        address = f"{self.prefix}.{10 + self.index}"
        netns_hosts.add_host(ns, address, self.bridge_ns, self.index)
        self.namespaces.append(ns)
        return ns, address

    def launcher(self, workdir: Path) -> NetnsLauncher:
        return NetnsLauncher(self, workdir)

    def network(self) -> NetnsNetwork:
        return NetnsNetwork(self)

    def close(self) -> None:
        for proc in self.procs:  # our nodes, by PID
            proc.kill()
        # whatever else runs there is ours too: the port-mapper its first node started
        netns_hosts.remove(self.namespaces)  # each takes its veth ends (and the root's peer) along
        ip("link", "del", self.root_veth, check=False)


def cleanup_tag(tag: str) -> list[str]:
    """Remove whatever a run with this tag left behind (if it was killed); returns the namespaces."""
    mine = [ns for ns in ip("netns", "list", check=False).stdout.split()
            if ns.startswith((f"jb{tag}", f"jn{tag}-"))]
    netns_hosts.remove(mine)
    ip("link", "del", f"jh{tag}", check=False)
    return mine


class NetnsLauncher:
    """Starts each node in a new namespace of its own (a new host)."""

    def __init__(self, env: Netns, workdir: Path) -> None:
        self.env = env
        self.workdir = workdir

    def start_node(self, timeout: float = 30.0) -> Any:
        ns, address = self.env.add_host()
        short = f"j{self.env.index}"
        name = f"{short}@{address}"
        log_path = self.workdir / f"{short}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "nodes", "--name", name, "--noshell"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=nodecluster.node_env(),
                cwd=ROOT)
        proc = nodecluster.NodeProcess(name, popen, log_path)
        self.env.procs.append(proc)
        self.env.node_ns[name] = ns
        self.env.node_addr[name] = address
        proc.connect(timeout, error=RuntimeError)
        return proc

    def close(self) -> None:
        for proc in self.env.procs:
            proc.kill()


class NetnsNetwork:
    kind = "netns"

    def __init__(self, env: Netns) -> None:
        self.env = env
        self.routes: list[tuple[str, str]] = []  # (namespace, blackholed address)
        self.down: list[str] = []  # namespaces whose link is down

    def cut(self, side_a: list[str], side_b: list[str]) -> None:
        for x, ys in ((a, side_b) for a in side_a):
            self._blackhole(x, ys)
        for x, ys in ((b, side_a) for b in side_b):
            self._blackhole(x, ys)

    def _blackhole(self, node: str, others: list[str]) -> None:
        ns = self.env.node_ns[node]
        for other in others:
            address = self.env.node_addr[other]
            ip("-n", ns, "route", "add", "blackhole", f"{address}/32")
            self.routes.append((ns, address))

    def isolate(self, node: str) -> None:
        ns = self.env.node_ns[node]
        ip("-n", ns, "link", "set", "eth0", "down")
        self.down.append(ns)

    def heal(self) -> None:
        for ns, address in self.routes:
            ip("-n", ns, "route", "del", "blackhole", f"{address}/32", check=False)
        self.routes.clear()
        for ns in self.down:
            ip("-n", ns, "link", "set", "eth0", "up", check=False)
        self.down.clear()

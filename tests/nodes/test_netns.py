"""Nodes on three hosts: Linux network namespaces joined by a bridge.

Each namespace is a host with its own address (192.0.2.11-13, TEST-NET-1), loopback and
epmd (started by its first node).  A bridge lives in a fourth namespace, so the root
namespace's network is left alone and no packet can leave the test hosts.  A driver node in
the first namespace connects the others by ``name@address``, messages and rpcs across them,
then cuts the third host's link to see ``nodedown`` and the mesh heal by itself.

Needs root and ``ip netns``; skipped with the reason otherwise.  Every process, namespace,
bridge and link is removed at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netns_hosts
import pytest
from netns_hosts import ip

try:
    from . import dist_peer_helpers as h
except ImportError:
    import dist_peer_helpers as h  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(180)

ROOT = h.HERE.parent.parent
SUBNET = "192.0.2.{}"
GHOST = SUBNET.format(99)  # in the test subnet, no host there


class Hosts:
    """Three namespaces on a bridge; node OS processes started in them."""

    def __init__(self, tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.tmp_path = tmp_path
        self.bridge_ns = f"nodes-{tag}-br"
        self.host_ns = [f"nodes-{tag}-h{i}" for i in (1, 2, 3)]
        self.addresses = [SUBNET.format(10 + i) for i in (1, 2, 3)]
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(h.HERE), str(h.HERE.parent)]),
            "NODES_EPMD_PORT": str(20_000 + int(tag, 16) % 20_000),
            "NODES_COOKIE": f"netns-{uuid.uuid4().hex}",
            "NODES_TICK_MS": "500",
        }

    def build(self) -> None:
        netns_hosts.add_bridge(self.bridge_ns)
        self.created.append(self.bridge_ns)
        for i, (ns, address) in enumerate(zip(self.host_ns, self.addresses, strict=True), start=1):
            netns_hosts.add_host(ns, address, self.bridge_ns, i)
            self.created.append(ns)

    def start_node(self, index: int, alive: str) -> str:
        name = f"{alive}@{self.addresses[index]}"
        log = open(self.tmp_path / f"{alive}.log", "wb")  # noqa: SIM115 - closed with the test dir
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.host_ns[index], sys.executable, "-m", "nodes", "--name", name,
             "--noshell"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT))
        return name

    def wait_started(self, alive: str, timeout: float = 30.0) -> None:
        path = self.tmp_path / f"{alive}.log"
        deadline = time.monotonic() + timeout
        while b"node started" not in path.read_bytes():
            if time.monotonic() > deadline:
                raise AssertionError(f"{alive} did not start:\n{path.read_text(errors='replace')}")
            time.sleep(0.05)

    def run_in(self, index: int, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a command in host ``index``'s namespace (killed by subprocess.run on timeout)."""
        return subprocess.run(["ip", "netns", "exec", self.host_ns[index], *argv],
                              capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=timeout)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')}"
                         for path in self.tmp_path.glob("*.log"))

    def close(self) -> None:
        for proc in self.procs:  # the nodes we started, by PID
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # whatever else runs there is ours too (the epmd each host's first node started)
        netns_hosts.remove(self.created)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    reason = netns_hosts.unavailable("nodes-probe-")
    if reason is not None:
        pytest.skip(reason)
    hosts = Hosts(tmp_path)
    try:
        hosts.build()
        yield hosts
    finally:
        hosts.close()
    leftover = set(ip("netns", "list").stdout.split()) & set(hosts.created)
    assert not leftover, f"namespaces left behind: {leftover}"


DRIVER = """
import json, sys
import dist_peer_helpers as h
args = json.loads(sys.argv[1])
print("RESULT " + json.dumps(h.netns_driver(**args)), flush=True)
"""


def test_three_hosts_connect_message_rpc_partition_and_heal(hosts: Hosts) -> None:
    peers = [hosts.start_node(i, f"n{i + 1}") for i in range(3)]
    for i in range(3):
        hosts.wait_started(f"n{i + 1}")
    third_ns = hosts.host_ns[2]
    args: dict[str, Any] = {
        "me": f"driver@{hosts.addresses[0]}",
        "peers": peers,
        "partition_cmd": ["ip", "-n", third_ns, "link", "set", "eth0", "down"],
        "heal_cmd": ["ip", "-n", third_ns, "link", "set", "eth0", "up"],
        "ghost": f"ghost@{GHOST}",
    }
    done = hosts.run_in(0, [sys.executable, "-c", DRIVER, json.dumps(args)], timeout=150)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"driver failed:\n{done.stdout}\n{done.stderr}\n{hosts.logs()}"
    out = json.loads(lines[-1][len("RESULT "):])
    me = args["me"]
    n1, n2, n3 = peers

    assert out["connect_first"] and out["first_connects_second"] and out["second_connects_third"]
    assert out["mesh_s"] is not None, out
    assert out["lists"] == {n: sorted({me, *peers} - {n}) for n in peers}
    assert out["names"] == peers
    assert sorted(map(tuple, out["echoes"])) == [("echo", "by name", n3), ("echo", "by pid", n3)]
    assert out["nested_rpc"] == n3
    assert out["ghost_send_max_s"] < 0.05, out
    assert out["ghost_connect"] is False
    assert out["nodedown"] == ["nodedown", n3]
    assert out["nodedown_s"] < 5.0, out
    assert out["down_reason"] == "noconnection"
    assert out["heal_s"] is not None and out["healed_mesh_s"] is not None, out
    assert out["after_heal_rpc"] == n3
    for proc in hosts.procs:
        assert proc.poll() is None, f"a node died:\n{hosts.logs()}"
    print(json.dumps({k: out[k] for k in ("mesh_s", "nodedown_s", "heal_s", "healed_mesh_s")}))

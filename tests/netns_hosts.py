"""Linux network namespaces as hosts on a bridge: the ``ip`` commands the namespace tests share.

A bridge namespace holds bridge ``br0``; each host namespace gets an ``eth0`` (a veth whose
other end is a port of ``br0``), an address and its loopback.  Used by
``tests/nodes/test_netns.py`` (three hosts) and ``tests/jepsen/netns.py`` (one host a node).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


VETH_AND_BRIDGE = (["link", "add", "pa", "type", "veth", "peer", "name", "pb"],
                   ["link", "add", "pbr", "type", "bridge"])


def unavailable(probe_prefix: str, probes: Iterable[list[str]] = VETH_AND_BRIDGE) -> str | None:
    """Why namespaces (and each ``ip`` command of ``probes`` inside one) cannot be used here, or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"{probe_prefix}{uuid.uuid4().hex[:6]}"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"'ip netns add' is not permitted here: {done.stderr.strip()}"
    try:
        for args in probes:
            done = ip("-n", probe, *args, check=False)
            if done.returncode != 0:
                return f"'ip {' '.join(args)}' fails in a namespace: {done.stderr.strip()}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def add_bridge(bridge_ns: str) -> None:
    """A new namespace ``bridge_ns`` holding bridge ``br0``, up."""
    ip("netns", "add", bridge_ns)
    ip("-n", bridge_ns, "link", "add", "br0", "type", "bridge")
    ip("-n", bridge_ns, "link", "set", "br0", "up")


def add_host(ns: str, address: str, bridge_ns: str, port: int) -> None:
    """A new namespace ``ns`` whose ``eth0`` (``address``/24) is port ``v<port>`` of the bridge."""
    ip("netns", "add", ns)
    ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{port}", "netns", bridge_ns)
    ip("-n", bridge_ns, "link", "set", f"v{port}", "master", "br0", "up")
    ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "link", "set", "lo", "up")


def remove(namespaces: list[str]) -> None:
    """SIGKILL whatever runs in ``namespaces`` (the epmd a host's first node started, ...), then
    delete them, last created first (each takes its veth ends along)."""
    for ns in namespaces:
        for pid in ip("netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for ns in reversed(namespaces):
        ip("netns", "del", ns, check=False)

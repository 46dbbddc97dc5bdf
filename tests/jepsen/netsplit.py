"""Cutting the network between node groups.

:class:`SwitchNetwork` uses the transport's partition switch (``nodes.dist.partition`` on
every node of both sides, driven with ``nodes.rpc.call`` from the harness, which itself is
never cut off).  :class:`NetnsNetwork` (in :mod:`jepsen.netns`) puts every node in a Linux
network namespace of its own and cuts real links.
"""

from __future__ import annotations

from typing import Protocol

import nodes
from nodes import dist


class Network(Protocol):
    kind: str

    def cut(self, side_a: list[str], side_b: list[str]) -> None: ...

    def isolate(self, node: str) -> None: ...

    def heal(self) -> None: ...


class SwitchNetwork:
    """Partitions through ``nodes.dist.partition`` / ``heal`` on the nodes themselves."""

    kind = "switch"

    def __init__(self, rpc_timeout_ms: int = 5000) -> None:
        self.rpc_timeout_ms = rpc_timeout_ms
        self.cut_nodes: set[str] = set()

    def _call(self, node: str, fn: object, *args: object, attempts: int = 1) -> None:
        for _ in range(attempts):
            try:
                nodes.rpc.call(node, fn, *args, timeout=self.rpc_timeout_ms)
                return
            except nodes.Exit as e:
                if e.reason == ("badrpc", "nodedown"):
                    return  # a node that is down (killed meanwhile) needs no switch

    def cut(self, side_a: list[str], side_b: list[str]) -> None:
        # both sides, every node, before anything crosses
        for n in side_a:
            self._call(n, dist.partition, list(side_b))
            self.cut_nodes.add(n)
        for n in side_b:
            self._call(n, dist.partition, list(side_a))
            self.cut_nodes.add(n)

    def isolate(self, node: str) -> None:
        raise NotImplementedError("isolate needs network namespaces")

    def heal(self) -> None:
        for n in sorted(self.cut_nodes):
            self._call(n, dist.heal, attempts=5)
        self.cut_nodes.clear()

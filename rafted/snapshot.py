"""Snapshots of a member's committed state (``RaftedValue.Snapshot``).

A snapshot is what a joining member receives, what a lagging follower is
sent instead of truncated log entries, and (with persistence) what is
written to ``snapshot_<term>_<last committed index>`` files. ``encode`` /
``decode`` give the bytes of such a file (cloudpickle, so data modules
defined interactively travel too, then gzip).
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from typing import Any

import cloudpickle

from rafted.rpc import InstallSnapshot

__all__ = ["Snapshot", "encode", "decode"]


@dataclass(slots=True)
class Snapshot:
    members: Any
    term: int
    last_committed_entry: tuple
    config: Any
    data: Any
    command_results: Any

    @classmethod
    def from_install_snapshot(cls, m: InstallSnapshot) -> Snapshot:
        return cls(m.members, m.term, m.last_committed_entry, m.config, m.data, m.command_results)

    def to_install_snapshot(self) -> InstallSnapshot:
        return InstallSnapshot(
            members=self.members,
            term=self.term,
            last_committed_entry=self.last_committed_entry,
            config=self.config,
            data=self.data,
            command_results=self.command_results,
        )


def encode(snapshot: Snapshot) -> bytes:
    return gzip.compress(cloudpickle.dumps(snapshot), compresslevel=6)


def decode(data: bytes) -> Snapshot:
    obj = pickle.loads(gzip.decompress(data))
    if not isinstance(obj, Snapshot):
        raise ValueError(f"not a rafted snapshot: {type(obj).__name__}")
    return obj

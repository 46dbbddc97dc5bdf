"""Snapshots of a member's committed state (``RaftedValue.Snapshot``).

A snapshot is what a joining member receives, what a lagging follower is
sent instead of truncated log entries, and (with persistence) what is
written to ``snapshot_<term>_<last committed index>`` files. ``encode`` /
``decode`` give the bytes of such a file: the whole :class:`Snapshot`
pickled (protocol 5; cloudpickle when it holds a class defined in
``__main__`` or in a function, so data modules typed into a shell survive),
then gzip-compressed. gzip's trailer (CRC-32 and length of the pickled
bytes) is what detects a damaged file: ``decode`` checks it before
unpickling anything.

In snapshot files ``members`` is the membership as of
``last_committed_entry`` (an uncommitted change is replayed from the log
entries after it); a joiner's in-memory snapshot also counts the pending
``add_follower`` entry that names it.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Any

from rafted._codec import dumps, loads
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


def encode(snapshot: Snapshot) -> bytes:
    return gzip.compress(dumps(snapshot), compresslevel=6, mtime=0)


def decode(data: bytes) -> Snapshot:
    """The snapshot in ``data``; raises (``gzip.BadGzipFile``, ``EOFError``, ``zlib.error``,
    ``ValueError``, ...) for damaged bytes, before unpickling them."""
    obj = loads(gzip.decompress(data))
    if not isinstance(obj, Snapshot):
        raise ValueError(f"not a rafted snapshot: {type(obj).__name__}")
    return obj

"""The seam for disk persistence (``RaftedValue.Persistence``): the interface the server calls.

Nothing is persisted yet: a member started without ``persistence_dir`` has
``state.persistence = None`` and the server skips every call below. A
persisting implementation provides an object with this interface (values
are treated as immutable: methods return the new persistence object) and
``rafted.server`` calls it as follows:

- :meth:`Persistence.write_log_entries` right after entries are appended to
  the in-memory log (leader: on each client request; follower: the new
  entries of an AppendEntries), then :meth:`Persistence.sync` once per
  batch, *before* the leader sends the entries (so its own copy counts
  towards the majority only once durable) and before a follower
  acknowledges them;
- :meth:`Persistence.log_compaction_runnable` /
  :meth:`Persistence.switch_log_file_and_spawn_snapshot_writer` after
  writing, to start a new log file and write a snapshot in a helper
  process, which reports with the call ``("snapshot_created", path, term,
  last_committed_index, size)`` handled by :meth:`Persistence.snapshot_created`;
- :meth:`Persistence.unset_snapshot_metadata` when a follower installs a
  snapshot sent by the leader (its own files no longer describe its state);
- ``latest_snapshot_metadata`` bounds log truncation: with persistence,
  entries are dropped from memory only once a snapshot on disk covers them.

See reference/rafted_value.md ("Persistence") for the file formats.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Protocol

from rafted.log_entry import LogEntry

__all__ = ["SnapshotMetadata", "Persistence", "read_last_log_index"]


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    path: str
    term: int
    last_committed_index: int
    size: int


class Persistence(Protocol):
    latest_snapshot_metadata: SnapshotMetadata | None

    def write_log_entries(self, entries: list[LogEntry]) -> Persistence: ...

    def sync(self) -> Persistence: ...

    def log_compaction_runnable(self) -> bool: ...

    def switch_log_file_and_spawn_snapshot_writer(self, snapshot: Any, index_next: int) -> Persistence: ...

    def snapshot_created(self, path: str, term: int, last_committed_index: int, size: int) -> Persistence: ...

    def unset_snapshot_metadata(self) -> Persistence: ...


def read_last_log_index(dir: str) -> int | None:
    """Last log index in the log files of a persistence dir; ``None`` when there are none.

    Reading existing log files needs the persistence layer, which is not
    there yet: raises NotImplementedError if any ``log_*`` file exists.
    """
    if not isinstance(dir, (str, os.PathLike)):
        raise TypeError(f"read_last_log_index expects a directory path, got {dir!r}")
    if not os.path.isdir(dir) or not glob.glob(os.path.join(os.fspath(dir), "log_*")):
        return None
    raise NotImplementedError("rafted: reading persisted log files is not implemented yet (in-memory only)")

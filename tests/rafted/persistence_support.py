"""Helpers for the persistence tests: reading a member's directory, a recording/netsplitting
communication module, and an fsync recorder that tells which log bytes are durable.

Imported by the tests as ``persistence_support`` (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from rafted_support import Netsplit

import nodes
from rafted import persistence as P
from rafted.log_entry import LogEntry
from rafted.rpc import AppendEntriesResponse


def live_log_entries(dir: str, i_from: int) -> list[LogEntry]:
    """The entries of ``dir``'s log files from the one holding ``i_from`` on, replayed in order
    (a later file supersedes an earlier one from its first index on); each file's first entry
    carries the index in its name."""
    with_last = P._with_last_indices(P.list_log_files(dir))
    files = [(first, path) for first, path, last in with_last if last >= i_from]
    final: dict[int, LogEntry] = {}
    for first, path in files:
        contents = P.read_log_file(path, first_index=first)
        if contents.entries:
            assert contents.entries[0][1] == first, f"{path} starts with entry {contents.entries[0][1]}"
        for e in contents.entries:
            for j in [j for j in final if j >= e[1]]:
                del final[j]
            final[e[1]] = e
    return [final[i] for i in sorted(final)]


def in_memory_and_disk_logs_same(state: Any, dir: str, i_min: int, i_max: int) -> None:
    """The member's in-memory log holds ``i_min..i_max`` and every entry on disk from ``i_min`` on
    is the one in memory (the port of the original test's helper)."""
    logs = state.logs
    assert (logs.i_min, logs.i_max) == (i_min, i_max)
    assert sorted(logs.map) == list(range(i_min, i_max + 1))
    on_disk = {e[1]: e for e in live_log_entries(dir, i_min) if e[1] >= i_min}
    assert on_disk, f"no log entry on disk from {i_min} on"
    assert max(on_disk) == i_max
    for i, e in on_disk.items():
        assert logs.map[i] == e, f"entry {i} differs: {logs.map[i]!r} in memory, {e!r} on disk"


def snapshot_indices(dir: str) -> list[int]:
    return [c for c, _t, _p in P.list_snapshot_files(dir)]


def log_firsts(dir: str) -> list[int]:
    return [first for first, _p in P.list_log_files(dir)]


class Wire(Netsplit):
    """A communication module that records what it carries and can isolate processes."""

    lock = threading.Lock()
    isolated: frozenset = frozenset()
    sent: list[tuple[Any, str]] = []  # (destination, message type name)
    on_cast: Any = None  # called as on_cast(sender, dest, msg) before a cast goes out

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.isolated = frozenset()
            cls.sent = []
            cls.on_cast = None

    @classmethod
    def isolate(cls, pids: Any) -> None:
        cls.set(pids)

    @classmethod
    def types_sent_to(cls, dest: Any) -> list[str]:
        with cls.lock:
            return [t for d, t in cls.sent if d == dest]

    @classmethod
    def cast(cls, server: Any, msg: Any) -> None:
        hook = cls.on_cast
        if hook is not None:
            hook(nodes.self(), server, msg)
        with cls.lock:
            cls.sent.append((server, type(msg).__name__))
        super().cast(server, msg)

    @classmethod
    def reply(cls, from_: Any, reply: Any) -> None:
        if type(reply) is tuple and len(reply) == 2 and reply[0] == "ok":
            with cls.lock:
                cls.sent.append((from_[0], type(reply[1]).__name__))
        super().reply(from_, reply)


class SyncRecorder:
    """Wraps rafted.persistence's fdatasync: counts calls and remembers, per file, how many
    bytes were durable at its last sync."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.synced: dict[str, int] = {}
        self._real = P._datasync

    def __call__(self, fd: int) -> None:
        self._real(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        size = os.fstat(fd).st_size
        with self.lock:
            self.calls += 1
            self.synced[path] = max(self.synced.get(path, 0), size)

    def durable_entries(self, dir: str) -> list[LogEntry]:
        """Entries of ``dir``'s log files that lie within what was fsynced."""
        found = []
        for first, path in P.list_log_files(dir):
            with self.lock:
                synced = self.synced.get(os.path.realpath(path), 0)
            contents = P.read_log_file(path, allow_torn_tail=True, first_index=first)
            ends = [*contents.offsets[1:], contents.valid_end] if contents.entries else []
            found.extend(e for e, end in zip(contents.entries, ends, strict=True) if end <= synced)
        return found

    def durable_index(self, dir: str) -> int:
        """The last index whose entry (or a snapshot covering it) is on disk for sure."""
        return max([*snapshot_indices(dir), *(e[1] for e in self.durable_entries(dir))], default=0)


@contextmanager
def recording_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncRecorder]:
    rec = SyncRecorder()
    monkeypatch.setattr(P, "_datasync", rec)
    yield rec


def is_ack(msg: Any) -> bool:
    return type(msg) is AppendEntriesResponse and msg.success

"""Disk persistence of one member (``RaftedValue.Persistence``): log files, snapshot files, recovery.

A member started with ``persistence_dir=dir`` keeps in ``dir`` (created if
missing):

- ``log_<i>``: append-only log files; ``i`` is the index of the file's first
  entry, and every entry in it has an index ``>= i``. A newer file (a larger
  ``i``) supersedes the entries of older files from ``i`` on: files are
  replayed in order of ``i`` and an entry whose index is not above the last
  one replayed truncates the log there (a follower overwriting uncommitted
  entries, Raft's rule).
- ``snapshot_<term>_<i>``: the whole state (:class:`rafted.snapshot.Snapshot`)
  as of the committed entry ``i``, written when ``term`` was the current
  term: pickled (protocol 5, cloudpickle for classes defined in ``__main__``
  or in a function), then gzip-compressed (gzip's CRC-32 and length check
  the file). Snapshot files appear atomically: written to
  ``snapshot_<term>_<i>.<suffix>.tmp``, fsynced, renamed, then the
  directory is fsynced. Left-over ``*.tmp`` files are removed at start-up.

Log entry format (all integers big-endian; 37 bytes around the payload)::

    offset     size  field
    0          8     term                   u64
    8          8     index                  u64
    16         1     type tag               u8: 0 command, 1 query, 2 change_config,
                                                3 leader_elected, 4 add_follower,
                                                5 remove_follower, 6 restore_from_files
    17         8     payload size N         u64
    25         N     payload                pickle protocol 5 (cloudpickle fallback)
    25+N       4     CRC-32 of bytes 0 .. 25+N (header and payload)   u32
    29+N       8     payload size N again   u64 (so the last entry is found from the end)

This is the original's layout (term, index, tag, size, payload, size) with
a checksum before the trailing size.

Durability. Entries are appended to an in-memory batch by
:meth:`Persistence.write_log_entries`; :meth:`Persistence.sync` writes the
batch with one ``write`` and one ``fdatasync`` (group commit). A follower
syncs before it acknowledges; a leader sends the batch to its followers and
then syncs it, before it handles their answers (so before it counts its own
copy); a lonely leader syncs before it commits. A new log file and a renamed
snapshot are made durable by fsyncing the directory before anything depends
on them.

Compaction (as the original): when the current log file has grown beyond
``log_file_expansion_factor`` × the size of the latest snapshot (and, beyond
the original, beyond ``log_file_min_size`` if one is given), the member
fsyncs and closes it, starts ``log_<next index>`` and hands the current
state (an immutable value, so a consistent copy) to a helper process that
writes the snapshot without stalling the member; when the member hears of
the new snapshot it deletes older snapshots but one, and log files holding
only entries that the older kept snapshot covers (so falling back to it
still finds every entry it needs).

Recovery (:func:`read_latest_snapshot_and_logs_if_available`): the newest
readable snapshot (a damaged one is renamed ``*.corrupt`` with a warning and
the previous one is used), then the log files from the one holding its
index on. Damage at the end of the newest log file that a crash during an
append leaves (see :func:`_looks_torn`) is a torn write of a batch that was
never acknowledged: it is dropped with a warning and the file truncated there.
A damaged entry anywhere else (a later valid entry follows it, or it is in an
older file), a complete last entry damaged otherwise (after it was written, so
perhaps acknowledged), a gap in the indices, or no readable snapshot at all raise
:class:`PersistenceError` naming the file (and the offset): acknowledged data
is never dropped silently.

The server calls, when ``state.persistence`` is not None:

- :meth:`Persistence.write_log_entries` right after entries are appended to
  the in-memory log, then :meth:`Persistence.sync` once per batch (the
  leader's ``FLUSH``, a follower's batch of AppendEntries);
- :meth:`Persistence.log_compaction_runnable` /
  :meth:`Persistence.switch_log_file_and_spawn_snapshot_writer` after
  writing; the helper reports with the message ``(SNAPSHOT_CREATED, path,
  term, last_committed_index, size)``, handled by :meth:`Persistence.snapshot_created`
  (no call does this: a caller could make a member trust a snapshot that is not there);
- :meth:`Persistence.install_snapshot` when a follower installs a snapshot
  sent by the leader (written before it is acknowledged);
- ``latest_snapshot_metadata`` bounds log truncation: with persistence,
  entries are dropped from memory only once a snapshot on disk covers them.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import struct
import threading
import zlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import nodes
from rafted._codec import dumps, loads
from rafted._values import replace as _replace_value
from rafted.log_entry import ENTRY_TYPES, LogEntry
from rafted.snapshot import Snapshot, decode, encode

__all__ = [
    "SnapshotMetadata",
    "Persistence",
    "PersistenceError",
    "UnpersistableEntry",
    "Recovered",
    "LogFileContents",
    "SNAPSHOT_CREATED",
    "entry_to_binary",
    "read_log_file",
    "read_last_log_index",
    "read_snapshot_file",
    "read_latest_snapshot_and_logs_if_available",
    "list_snapshot_files",
    "list_log_files",
    "write_snapshot_file",
]

log = logging.getLogger("rafted.persistence")

#: the message a snapshot writer sends its member: (SNAPSHOT_CREATED, path, term, last_committed_index, size)
SNAPSHOT_CREATED = "$rafted_snapshot_created"

_HEADER = struct.Struct(">QQBQ")  # term, index, type tag, payload size
_TRAILER = struct.Struct(">IQ")  # crc32 of header + payload, payload size again
HEADER_SIZE = _HEADER.size  # 25
TRAILER_SIZE = _TRAILER.size  # 12
ENTRY_OVERHEAD = HEADER_SIZE + TRAILER_SIZE  # 37
_TAG_OF = {t: i for i, t in enumerate(ENTRY_TYPES)}

_SNAPSHOT_RE = re.compile(r"snapshot_(\d+)_(\d+)\Z")
_LOG_RE = re.compile(r"log_(\d+)\Z")
_TMP_RE = re.compile(r"snapshot_\d+_\d+\..*\.tmp\Z")

#: no compaction before the current log file has this size: ``start_link(log_file_min_size=...)``,
#: beyond the original. 0 by default, which is the original's rule (a small value is then
#: snapshotted every few dozen commands, as upstream's tests expect); 1 MiB suits a busy group.
DEFAULT_LOG_FILE_MIN_SIZE = 0

# how many later indices a damaged entry is checked against before it counts as a torn tail
_RESYNC_WINDOW = 64


class PersistenceError(Exception):
    """Files in a persistence directory cannot be recovered without losing data.

    ``path`` names the file, ``offset`` the byte offset of the damaged entry
    (``None`` for a whole file, e.g. a snapshot).
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset

    def __reduce__(self) -> Any:
        return (PersistenceError, (str(self), self.path, self.offset))


# -- fault injection for crash tests ----------------------------------------------------------
#
# RAFTED_CRASH_POINTS="name:n,..." makes this OS process SIGKILL itself the n-th time it passes
# the point ``name`` (see the _crash_point calls). Read once at import; unset, it costs one
# truth test of a module global per call.


def _parse_crash_points(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, n = item.partition(":")
        points[name] = int(n or 1)
    return points


_CRASH_POINTS = _parse_crash_points(os.environ.get("RAFTED_CRASH_POINTS", ""))
_crash_lock = threading.Lock()


def _crash_point(name: str) -> bool:
    """True when this is the armed pass of ``name`` (the caller may do half its work first)."""
    if not _CRASH_POINTS or name not in _CRASH_POINTS:
        return False
    with _crash_lock:
        _CRASH_POINTS[name] -= 1
        return _CRASH_POINTS[name] == 0


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _maybe_die(name: str) -> None:
    if _CRASH_POINTS and _crash_point(name):
        _die()


# -- the entry format ------------------------------------------------------------------------


class UnpersistableEntry(TypeError):
    """An entry's payload cannot be serialized (neither pickle nor cloudpickle can do it)."""


def entry_to_binary(entry: LogEntry) -> bytes:
    term, index, kind, payload = entry
    try:
        body = dumps(payload)
    except Exception as e:
        raise UnpersistableEntry(f"cannot serialize the {kind} entry {index}: {type(e).__name__}: {e}") from e
    header = _HEADER.pack(term, index, _TAG_OF[kind], len(body))
    crc = zlib.crc32(body, zlib.crc32(header))
    return b"".join((header, body, _TRAILER.pack(crc, len(body))))


class _BadEntry(Exception):
    pass


def _check_entry_at(data: bytes, off: int) -> tuple[int, int, int, int, int]:
    """``(term, index, tag, payload size, end)`` of a well-formed entry at ``off``; raises _BadEntry."""
    size = len(data)
    if size - off < ENTRY_OVERHEAD:
        raise _BadEntry(f"truncated entry ({size - off} bytes left, an entry has at least {ENTRY_OVERHEAD})")
    term, index, tag, n = _HEADER.unpack_from(data, off)
    if tag >= len(ENTRY_TYPES):
        raise _BadEntry(f"unknown entry type tag {tag}")
    end = off + ENTRY_OVERHEAD + n
    if end > size:
        raise _BadEntry(f"entry of {n} payload bytes extends past the end of the file")
    crc, n2 = _TRAILER.unpack_from(data, end - TRAILER_SIZE)
    if n2 != n:
        raise _BadEntry(f"payload sizes differ ({n} before, {n2} after the payload)")
    if zlib.crc32(memoryview(data)[off : end - TRAILER_SIZE]) != crc:
        raise _BadEntry("checksum mismatch")
    return term, index, tag, n, end


def _is_entry_at(data: bytes, off: int) -> bool:
    if off < 0:
        return False
    try:
        _check_entry_at(data, off)
    except (_BadEntry, struct.error):
        return False
    return True


def _valid_entry_after(data: bytes, off: int, expected_index: int) -> bool:
    """Whether a well-formed entry starts after ``off`` (then the damage at ``off`` is not a torn tail)."""
    size = len(data)
    if size - off >= ENTRY_OVERHEAD:
        (n_last,) = struct.unpack_from(">Q", data, size - 8)
        start = size - ENTRY_OVERHEAD - n_last
        if off < start and _is_entry_at(data, start):
            return True
    # the last entry may be torn too: look for entries carrying the next few indices
    for v in range(expected_index, expected_index + _RESYNC_WINDOW):
        pattern = struct.pack(">Q", v)
        p = data.find(pattern, off + 9)
        while p != -1:
            if _is_entry_at(data, p - 8):
                return True
            p = data.find(pattern, p + 1)
    return False


_SECTOR = 512  # what a write that never reached the disk leaves: aligned blocks reading as zeros


def _looks_torn(data: bytes, off: int) -> bool:
    """Whether damage at ``off`` that runs to the end of the newest log file is a write that a
    crash cut short (never synced, so never acknowledged) rather than an entry damaged after
    it was written.

    A crash during an append leaves the last entry short, or followed by part of the next
    one, or, where the file's size reached the disk before its data, blocks reading as zeros
    (a zero size at the end, a whole sector of zeros, nothing but zeros).  An entry whose
    header's size ends it exactly at the end of the file, with none of those, was written
    whole, as is one whose second size ends it there: damage to it (its checksum, its type
    tag, either size) came later, to an entry that may have been acknowledged, and dropping it
    could undo a commit this member counted towards.  (A payload that itself holds 512 aligned
    zero bytes cannot be told from an unwritten block: damage elsewhere in such an entry is
    taken for a torn write.)
    """
    size = len(data)
    if size - off < ENTRY_OVERHEAD:
        return True  # not even an empty entry's worth
    (n,) = struct.unpack_from(">Q", data, off + HEADER_SIZE - 8)
    (n_end,) = struct.unpack_from(">Q", data, size - 8)
    if off + ENTRY_OVERHEAD + n != size and not (n_end and off + ENTRY_OVERHEAD + n_end == size):
        # Short, or more follows it: a batch cut short. Unless its second size frames it
        # exactly: then the entry was written whole, and its first size was damaged later.
        return True
    if data.count(0, off) == size - off or not n_end:
        return True  # nothing but zeros, or the end (its second size) never written
    zeros = bytes(_SECTOR)
    first = -(-off // _SECTOR) * _SECTOR  # the first sector boundary at or after off
    return any(data[b : b + _SECTOR] == zeros for b in range(first, size - _SECTOR + 1, _SECTOR))


@dataclass(slots=True)
class LogFileContents:
    """What :func:`read_log_file` found: entries with their offsets, where the valid part ends,
    and, for a torn tail, its offset and why it was rejected."""

    entries: list[LogEntry]
    offsets: list[int]
    valid_end: int
    torn_at: int | None = None
    torn_reason: str | None = None


def read_log_file(
    path: str, allow_torn_tail: bool = False, first_index: int | None = None
) -> LogFileContents:
    """Every entry of the log file ``path``.

    A damaged entry raises :class:`PersistenceError` (naming ``path`` and the
    offset), unless ``allow_torn_tail``, no valid entry follows it and it
    looks like a write a crash cut short (:func:`_looks_torn`): then it is a
    torn final write and the result says where the valid part ends.
    """
    with open(path, "rb") as f:
        data = f.read()
    entries: list[LogEntry] = []
    offsets: list[int] = []
    off = 0
    size = len(data)
    while off < size:
        try:
            term, index, tag, n, end = _check_entry_at(data, off)
        except _BadEntry as e:
            expected = entries[-1][1] + 1 if entries else (first_index if first_index is not None else 1)
            if allow_torn_tail and not _valid_entry_after(data, off, expected):
                if _looks_torn(data, off):
                    return LogFileContents(entries, offsets, off, off, str(e))
                where = " (the last entry, complete: damaged after it was written)"
            else:
                where = "" if allow_torn_tail else " (not the newest log file)"
            raise PersistenceError(
                f"corrupt log entry in {path} at offset {off}: {e}{where}; refusing to start without it",
                path,
                off,
            ) from None
        try:
            payload = loads(data[off + HEADER_SIZE : end - TRAILER_SIZE])
        except Exception as e:
            raise PersistenceError(
                f"cannot load the payload of log entry {index} in {path} at offset {off}: "
                f"{type(e).__name__}: {e}",
                path,
                off,
            ) from e
        entries.append((term, index, ENTRY_TYPES[tag], payload))
        offsets.append(off)
        off = end
    return LogFileContents(entries, offsets, off)


# -- directory listing -----------------------------------------------------------------------


def _dir_names(dir: str) -> list[str]:
    try:
        return os.listdir(dir)
    except FileNotFoundError:
        return []


def list_snapshot_files(dir: str) -> list[tuple[int, int, str]]:
    """``(last committed index, term, path)`` of every snapshot file, oldest first."""
    found = []
    for name in _dir_names(dir):
        m = _SNAPSHOT_RE.match(name)
        if m:
            found.append((int(m.group(2)), int(m.group(1)), os.path.join(dir, name)))
    found.sort()
    return found


def list_log_files(dir: str) -> list[tuple[int, str]]:
    """``(first index, path)`` of every log file, in replay order."""
    found = []
    for name in _dir_names(dir):
        m = _LOG_RE.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(dir, name)))
    found.sort()
    return found


def _with_last_indices(logs: list[tuple[int, str]]) -> list[tuple[int, str, float]]:
    """Each log file with the last index it still matters for (the next file supersedes the rest)."""
    out: list[tuple[int, str, float]] = []
    for k, (first, path) in enumerate(logs):
        last = logs[k + 1][0] - 1 if k + 1 < len(logs) else float("inf")
        out.append((first, path, last))
    return out


def _fsync_dir(dir: str) -> None:
    fd = os.open(dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_temp_files(dir: str) -> None:
    for name in _dir_names(dir):
        if _TMP_RE.match(name):
            _unlink(os.path.join(dir, name))


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_datasync = getattr(os, "fdatasync", os.fsync)


# -- snapshot files --------------------------------------------------------------------------


#: Puts a snapshot writer's rename under a check (:func:`rafted.dir_lock.rename_guard`).
RenameGuard = Callable[[], AbstractContextManager[bool]]


class _Unreadable(PersistenceError):
    """A file could not be read at all (an OSError opening or reading it): no sign of damage."""


class DirectoryTakenOver(PersistenceError):
    """A snapshot writer's directory passed to another member before its snapshot went in."""


def write_snapshot_file(dir: str, term: int, last_committed_index: int, data: bytes,
                        rename_guard: RenameGuard | None = None) -> str:
    """Write a snapshot file atomically (temp name, fsync, rename, fsync dir); its path.

    With ``rename_guard`` (:func:`rafted.dir_lock.rename_guard`), the rename happens inside it,
    and only if it yields true; else the file is dropped and :class:`DirectoryTakenOver` raised.
    """
    final = os.path.join(dir, f"snapshot_{term}_{last_committed_index}")
    tmp = f"{final}.{os.getpid()}-{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if _CRASH_POINTS and _crash_point("snapshot_torn_write"):
            _write_all(fd, data[: len(data) // 2])
            _die()
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _maybe_die("snapshot_before_rename")
    with rename_guard() if rename_guard is not None else nullcontext(True) as allowed:
        if not allowed:
            _unlink(tmp)
            raise DirectoryTakenOver(f"{dir} passed to another member before snapshot {final} was "
                                     "renamed in; dropped", dir)
        os.replace(tmp, final)
    _maybe_die("snapshot_before_dir_fsync")
    _fsync_dir(dir)
    return final


def read_snapshot_file(
    path: str, term: int | None = None, last_committed_index: int | None = None
) -> Snapshot:
    """The snapshot in ``path``; :class:`PersistenceError` if it is unreadable, damaged or
    does not match the term and index in its name."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _Unreadable(f"cannot read snapshot {path}: {e}", path) from e
    try:
        snapshot = decode(data)
    except Exception as e:
        raise PersistenceError(f"corrupt snapshot {path}: {type(e).__name__}: {e}", path) from e
    entry = snapshot.last_committed_entry
    if (term is not None and snapshot.term != term) or (
        last_committed_index is not None and entry[1] != last_committed_index
    ):
        raise PersistenceError(
            f"snapshot {path} holds term {snapshot.term} and index {entry[1]}, not what its name says", path
        )
    return snapshot


# -- reading a directory ---------------------------------------------------------------------


def read_last_log_index(dir: str) -> int | None:
    """Last log index in the newest log file of ``dir``, read from the file's end.

    Empty newest files (a log file just started) are skipped; ``None`` when
    there is no log file (also when ``dir`` does not exist), or the last entry is
    damaged (a torn write, or later damage that start-up refuses).  A ``dir``
    that is a file raises ``NotADirectoryError`` naming it: a wrong argument,
    not an empty directory.
    """
    if not isinstance(dir, (str, os.PathLike)):
        raise TypeError(f"read_last_log_index expects a directory path, got {dir!r}")
    for _first, path in reversed(list_log_files(os.fspath(dir))):
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    continue
                if size < ENTRY_OVERHEAD:
                    return None
                f.seek(size - 8)
                (n,) = struct.unpack(">Q", f.read(8))
                start = size - ENTRY_OVERHEAD - n
                if start < 0:
                    return None
                f.seek(start)
                data = f.read(ENTRY_OVERHEAD + n)
        except OSError:
            return None
        try:
            _term, index, _tag, _n, _end = _check_entry_at(data, 0)
        except _BadEntry:
            return None
        return index
    return None


def read_last_log_term_and_index(dir: str) -> tuple[int, int] | None:
    """``(term, index)`` of the last entry of ``dir``'s log as a start-up would recover it (the
    snapshot's entry when no log entry follows it); ``None`` when ``dir`` holds nothing to
    recover.  Reads every file that matters and changes none; raises :class:`PersistenceError`
    naming the damaged file where a start-up would refuse."""
    if not isinstance(dir, (str, os.PathLike)):
        raise TypeError(f"read_last_log_term_and_index expects a directory path, got {dir!r}")
    dir = os.fspath(dir)
    if not os.path.exists(dir):
        return None
    r = read_latest_snapshot_and_logs_if_available(dir, repair=False)
    if r is None:
        return None
    last = r.entries[-1] if r.entries else r.snapshot.last_committed_entry
    return (last[0], last[1])


@dataclass(slots=True)
class Recovered:
    """What a persistence directory holds: the snapshot used, its metadata, and the log entries
    after its last committed index (contiguous, possibly not committed)."""

    snapshot: Snapshot
    metadata: SnapshotMetadata
    entries: list[LogEntry]


def read_latest_snapshot_and_logs_if_available(dir: str, repair: bool = True) -> Recovered | None:
    """The state a member recovers from ``dir``; ``None`` when there is nothing to recover.

    With ``repair`` (start-up), a torn tail of the newest log file is cut off
    and a damaged snapshot is renamed ``*.corrupt`` (with warnings); without it
    the directory is only read. Raises :class:`PersistenceError` rather than
    dropping data that may have been acknowledged.
    """
    snapshots = list_snapshot_files(dir)
    logs = list_log_files(dir)
    if not snapshots:
        if any(os.path.getsize(p) > 0 for _, p in logs):
            raise PersistenceError(f"{dir} holds log files but no snapshot file; refusing to start", dir)
        return None
    snapshot: Snapshot | None = None
    errors: list[PersistenceError] = []
    chosen = snapshots[-1]
    for candidate in reversed(snapshots):
        c, term, path = candidate
        try:
            snapshot = read_snapshot_file(path, term, c)
        except PersistenceError as e:
            if isinstance(e, _Unreadable):
                # it could not be read (permissions, out of descriptors): no sign of damage, so
                # no fall-back and no renaming it *.corrupt, which would outlast the cause
                raise PersistenceError(f"{e}; refusing to start", e.path) from e.__cause__
            errors.append(e)
            log.warning("%s; trying an older snapshot", e)
            continue
        chosen = candidate
        break
    if snapshot is None:
        first = errors[0]
        older = "no readable older snapshot" if len(errors) > 1 else "no older snapshot"
        raise PersistenceError(f"{first}, and {older} to fall back to; refusing to start", first.path)
    c, term, path = chosen
    if repair:
        for err in errors:
            assert err.path is not None
            try:
                os.replace(err.path, err.path + ".corrupt")
            except OSError:
                pass
    tc = snapshot.last_committed_entry[0]
    stale, read = _logs_an_install_left(logs, c, tc)
    if stale:
        log.warning("old log files %s predate snapshot %s and do not continue it (an install of "
                    "the leader's snapshot was cut short before it deleted them); %s",
                    ", ".join(stale), path, "deleting them" if repair else "ignored")
        if repair:
            for p in stale:
                _unlink(p)
            _fsync_dir(dir)
        logs = [(first, p) for first, p in logs if p not in stale]
    entries = _replay_logs(dir, logs, c, repair, read)
    after = [e for i, e in entries.items() if i > c]
    if after and c not in entries and after[0][1] != c + 1:
        raise PersistenceError(
            f"log files in {dir} start at index {after[0][1]}, after snapshot {path} at {c}: "
            f"entries {c + 1}..{after[0][1] - 1} are missing",
            dir,
        )
    meta = SnapshotMetadata(path, term, c, os.path.getsize(path))
    return Recovered(snapshot, meta, after)


def _logs_an_install_left(logs: list[tuple[int, str]], c: int, tc: int
                          ) -> tuple[list[str], dict[str, LogFileContents]]:
    """The log files that an install of a leader's snapshot at ``c`` (term ``tc``) was about to
    delete when a crash cut it short: all of them, when the newest file from before ``c``
    (first index ≤ ``c``) does not hold entry ``c`` of term ``tc`` (a lagging follower's log
    ends before it; a deposed leader's has another entry there).  Nothing in them is needed:
    up to ``c`` the snapshot holds it all, and from ``c`` on they lost to the leader's log.
    Read as a log, they would stop the start-up with a false gap or, worse, shadow the entries
    written after the install.  All of them, because the install deletes the newest first and
    writes nothing before it has deleted them all (nor does a start before it has deleted
    these): a file after ``c`` beside such leftovers is a leftover too (a deposed leader's own
    compaction started one).  A log the member compacted itself always holds entry ``c``: it
    wrote the snapshot from it.  Also returns the file it read, for the replay to reuse."""
    before = [(first, p) for first, p in logs if first <= c]
    if not before:
        return [], {}
    first, path = before[-1]  # a later file supersedes the earlier ones from its first index on
    contents = read_log_file(path, allow_torn_tail=(path == logs[-1][1]), first_index=first)
    if any(e[1] == c and e[0] == tc for e in contents.entries):
        return [], {path: contents}
    return [p for _, p in logs], {}


def _replay_logs(dir: str, logs: list[tuple[int, str]], c: int, repair: bool,
                 read: dict[str, LogFileContents]) -> dict[int, LogEntry]:
    """Replay the log files that matter from index ``c`` on: index -> entry, in index order
    (``read``: files already read, by path)."""
    files = [(first, path) for first, path, last in _with_last_indices(logs) if last >= c]
    final: dict[int, LogEntry] = {}
    max_i: int | None = None
    newest = logs[-1][1] if logs else None
    for first, path in files:
        contents = read.get(path) or read_log_file(path, allow_torn_tail=(path == newest), first_index=first)
        if contents.torn_at is not None:
            log.warning(
                "dropping a torn write at the end of %s (offset %d: %s)%s",
                path,
                contents.torn_at,
                contents.torn_reason,
                "; truncating the file there" if repair else "",
            )
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(contents.valid_end)
                    os.fsync(f.fileno())
        for e, off in zip(contents.entries, contents.offsets, strict=True):
            idx = e[1]
            if idx < first:
                raise PersistenceError(
                    f"log entry {idx} in {path} at offset {off} precedes the file's first index", path, off
                )
            if max_i is not None and idx > max_i + 1:
                raise PersistenceError(
                    f"log entries missing in {path} at offset {off}: index {idx} follows {max_i}", path, off
                )
            if max_i is not None and idx <= max_i:
                for j in range(idx, max_i + 1):
                    final.pop(j, None)
            final[idx] = e
            max_i = idx
    return final


# -- the persistence of a running member ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    path: str
    term: int
    last_committed_index: int
    size: int


class _LogFile:
    """The open log file a member appends to: a resource shared by successive Persistence values.

    Encoded entries wait in ``pending`` until :meth:`sync` writes them all
    with one ``write`` and one ``fdatasync``.
    """

    __slots__ = ("dir", "path", "first_index", "fd", "pending", "dirty")

    def __init__(self, dir: str, first_index: int) -> None:
        self.dir = dir
        self.first_index = first_index
        self.path = os.path.join(dir, f"log_{first_index}")
        self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.pending: list[bytes] = []
        self.dirty = False
        _maybe_die("log_created")
        _fsync_dir(dir)  # the file's name must be durable before anything in it is acknowledged

    def __repr__(self) -> str:
        return f"<log file {self.path}>"

    def __del__(self) -> None:
        # a member killed without terminate (an exit signal "kill") leaves its last state to the
        # garbage collector: do not leak the descriptor (nothing is synced: that is a crash)
        fd = self.fd
        if fd is not None:
            self.fd = None
            try:
                os.close(fd)
            except OSError:
                pass

    def append(self, data: bytes) -> None:
        self.pending.append(data)

    def flush(self) -> None:
        if not self.pending:
            return
        assert self.fd is not None, f"{self.path} is closed"
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self.pending = []
        if _CRASH_POINTS and _crash_point("log_torn_write"):
            _write_all(self.fd, data[: max(1, len(data) // 2)])
            _die()
        _write_all(self.fd, data)
        self.dirty = True

    def sync(self) -> None:
        self.flush()
        if self.dirty and self.fd is not None:
            _maybe_die("log_before_fsync")
            _datasync(self.fd)
            self.dirty = False

    def close(self, sync: bool = True) -> None:
        if self.fd is None:
            return
        if sync:
            self.sync()
        else:
            self.pending = []
        os.close(self.fd)
        self.fd = None


@dataclass(slots=True)
class Persistence:
    """The persistence of one member. Treated as a value: methods return a new one.

    ``log`` is the open log file (a resource the values share);
    ``snapshot_writer`` is ``(pid, monitor ref)`` of a running helper.
    """

    dir: str
    log: _LogFile
    log_size_written: int
    log_expansion_factor: float
    latest_snapshot_metadata: SnapshotMetadata | None
    snapshot_writer: Any = None
    log_min_size: int = 0

    # -- constructors --------------------------------------------------------------------

    @classmethod
    def new_with_initial_snapshot(
        cls, dir: str, factor: float, snapshot: Snapshot, min_size: int = DEFAULT_LOG_FILE_MIN_SIZE
    ) -> Persistence:
        """A new group's first member: ``snapshot`` (of the empty value) and its entry on disk."""
        os.makedirs(dir, exist_ok=True)
        _remove_temp_files(dir)
        for _first, path in list_log_files(dir):
            _unlink(path)  # empty files left by a crash before the first snapshot (checked by the caller)
        entry = snapshot.last_committed_entry
        meta = _write_snapshot(dir, snapshot, None)
        p = cls(dir, _LogFile(dir, entry[1]), 0, factor, meta, log_min_size=min_size)
        return p.write_log_entries([entry]).sync()

    @classmethod
    def new_with_disk_snapshot(
        cls,
        dir: str,
        factor: float,
        meta: SnapshotMetadata,
        entry_restore: LogEntry,
        min_size: int = DEFAULT_LOG_FILE_MIN_SIZE,
    ) -> Persistence:
        """After recovery: a new log file starting with the ``restore_from_files`` entry."""
        _remove_temp_files(dir)
        p = cls(dir, _LogFile(dir, entry_restore[1]), 0, factor, meta, log_min_size=min_size)
        return p.write_log_entries([entry_restore]).sync()

    @classmethod
    def new_with_snapshot_sent_from_leader(
        cls,
        dir: str,
        factor: float,
        snapshot: Snapshot,
        data: bytes | None = None,
        min_size: int = DEFAULT_LOG_FILE_MIN_SIZE,
    ) -> Persistence:
        """A joiner: whatever ``dir`` held is replaced by the leader's snapshot (``data``: its
        file's bytes, when the leader sent them) and a log file for the entries after it."""
        os.makedirs(dir, exist_ok=True)
        _remove_temp_files(dir)
        for _c, _t, path in list_snapshot_files(dir):
            _unlink(path)
        for _first, path in list_log_files(dir):
            _unlink(path)
        meta = _write_snapshot(dir, snapshot, data)
        new_log = _LogFile(dir, snapshot.last_committed_entry[1] + 1)
        return cls(dir, new_log, 0, factor, meta, log_min_size=min_size)

    # -- the seam the server calls ---------------------------------------------------------

    def write_log_entries(self, entries: list[LogEntry]) -> Persistence:
        """Append ``entries`` (contiguous; the first may rewind the log) to the batch to sync.

        Raises :class:`UnpersistableEntry`, with nothing written, if one cannot be serialized.
        """
        if not entries:
            return self
        data = entries_to_binary(entries)
        p = self
        first = entries[0][1]
        if first < self.log.first_index:
            # a follower overwrites entries older than this file: every file from `first` on is
            # superseded (those entries conflict with the leader's, so none was committed)
            p = self._rewind_to(first)
        p.log.append(data)
        return _replace_value(p, log_size_written=p.log_size_written + len(data))

    def sync(self) -> Persistence:
        """Write the batch and fdatasync: everything written so far is durable."""
        self.log.sync()
        return self

    def log_compaction_runnable(self) -> bool:
        if self.snapshot_writer is not None or self.log_size_written < self.log_min_size:
            return False
        meta = self.latest_snapshot_metadata
        return meta is None or meta.size * self.log_expansion_factor < self.log_size_written

    def switch_log_file_and_spawn_snapshot_writer(
            self, snapshot: Snapshot, index_next: int,
            rename_guard: RenameGuard | None = None) -> Persistence:
        """Start ``log_<index_next>`` and write ``snapshot`` in a helper process (which renames
        it in under ``rename_guard``, see :func:`write_snapshot_file`)."""
        self.log.close(sync=True)
        new_log = _LogFile(self.dir, index_next)
        member = nodes.self()
        pid = nodes.spawn(_snapshot_writer, self.dir, snapshot, member, rename_guard)
        ref = nodes.monitor(pid)
        return _replace_value(self, log=new_log, log_size_written=0, snapshot_writer=(pid, ref))

    def snapshot_created(self, path: str, term: int, last_committed_index: int, size: int) -> Persistence:
        """A helper wrote a snapshot: use it, delete what it makes obsolete."""
        p = _replace_value(self, snapshot_writer=None)
        meta = self.latest_snapshot_metadata
        if meta is not None and (last_committed_index, term) < (meta.last_committed_index, meta.term):
            # a snapshot from the leader overtook it: its logs are gone, it is of no use
            if path != meta.path:
                _unlink(path)
            return p
        p.latest_snapshot_metadata = SnapshotMetadata(path, term, last_committed_index, size)
        p._delete_obsolete_files()
        return p

    def snapshot_writer_down(self, ref: Any, reason: Any) -> Persistence:
        """The helper exited; if it did not report a snapshot, compaction may run again later."""
        w = self.snapshot_writer
        if w is None or w[1] != ref:
            return self
        if reason != "normal":
            log.error("snapshot writer for %s failed: %r", self.dir, reason)
        return _replace_value(self, snapshot_writer=None)

    def install_snapshot(self, snapshot: Snapshot, data: bytes | None = None) -> Persistence:
        """A follower installs the leader's snapshot: written (and durable) first, then the old
        files go and ``log_<index + 1>`` receives the entries after it."""
        meta = _write_snapshot(self.dir, snapshot, data)
        self.log.close(sync=False)
        # The newest log file first: a crash part-way leaves only the oldest ones, which a start
        # recognises as left over (see _logs_an_install_left); a newer one left behind alone could
        # look like a continuation of the snapshot.
        for _first, path in reversed(list_log_files(self.dir)):
            _unlink(path)
        for _c, _t, path in list_snapshot_files(self.dir):
            if path != meta.path:
                _unlink(path)
        new_log = _LogFile(self.dir, snapshot.last_committed_entry[1] + 1)
        return _replace_value(self, log=new_log, log_size_written=0, latest_snapshot_metadata=meta)

    def close(self, wait_for_writer_ms: int = 30_000) -> Persistence:
        """Sync and close the log file; wait (bounded) for a snapshot being written."""
        self.log.close(sync=True)
        p = self
        w = self.snapshot_writer
        if w is not None:
            _pid, ref = w

            def is_writer_news(m: Any) -> bool:
                return type(m) is tuple and len(m) == 5 and (
                    m[0] == SNAPSHOT_CREATED or (m[0] == "DOWN" and m[1] == ref)
                )

            while p.snapshot_writer is not None:
                try:
                    m = nodes.receive(timeout=wait_for_writer_ms, match=is_writer_news)
                except TimeoutError:
                    log.warning("stopped without waiting any longer for the snapshot writer of %s", self.dir)
                    break
                if m[0] == SNAPSHOT_CREATED:
                    p = p.snapshot_created(*m[1:])
                else:
                    p = p.snapshot_writer_down(m[1], m[4])
        return p

    # -- internals -------------------------------------------------------------------------

    def _rewind_to(self, first: int) -> Persistence:
        self.log.close(sync=False)
        for f, path in list_log_files(self.dir):
            if f >= first:
                _unlink(path)
        return _replace_value(self, log=_LogFile(self.dir, first))

    def _delete_obsolete_files(self) -> None:
        snapshots = list_snapshot_files(self.dir)
        for _c, _t, path in snapshots[:-2]:
            _unlink(path)
            _maybe_die("cleanup")
        kept = snapshots[-2:]
        if not kept:
            return
        oldest_kept = kept[0][0]
        for first, path, last in _with_last_indices(list_log_files(self.dir)):
            if last < oldest_kept and first != self.log.first_index:
                _unlink(path)


def entries_to_binary(entries: Iterable[LogEntry]) -> bytes:
    return b"".join([entry_to_binary(e) for e in entries])


def _write_snapshot(dir: str, snapshot: Snapshot, data: bytes | None,
                    rename_guard: RenameGuard | None = None) -> SnapshotMetadata:
    if data is None:
        data = encode(snapshot)
    c = snapshot.last_committed_entry[1]
    path = write_snapshot_file(dir, snapshot.term, c, data, rename_guard)
    return SnapshotMetadata(path, snapshot.term, c, len(data))


def _snapshot_writer(dir: str, snapshot: Snapshot, member: Any,
                     rename_guard: RenameGuard | None = None) -> None:
    """The helper process: write ``snapshot`` and tell ``member``."""
    try:
        meta = _write_snapshot(dir, snapshot, None, rename_guard)
    except DirectoryTakenOver as e:
        log.warning("the snapshot writer of %r: %s", member, e)  # its member is dead: nobody to tell
        return
    nodes.send(member, (SNAPSHOT_CREATED, meta.path, meta.term, meta.last_committed_index, meta.size))

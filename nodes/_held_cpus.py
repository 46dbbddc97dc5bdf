"""Which CPUs the other nodes of this host hold: a board of small files, one per holding node.

Used by :mod:`nodes._sched`, which decides what to do with it (keep this node's runtime threads
off those CPUs while it holds none).  The nodes that share a port-mapper share a board: a
directory in the temporary directory named after the user id and the port-mapper's port, so
two unrelated sets of nodes on one host (two test runs, each with its own port-mapper) do not
steer each other.  A holding node writes ``<pid>`` there, holding ``"<cpu> <start time>"``
(the start time from ``/proc/<pid>/stat``, so that a reused pid is not taken for a node that
died holding).  Readers skip, and remove, the files of nodes that are gone; a node that leaves
the board removes it when only such files are left, and a node that joins also clears the boards
of port-mappers whose nodes are all gone (a killed node leaves its file behind, and every test
run or benchmark has a port-mapper of its own).

Nothing here raises for a missing or unusable directory: holding and keeping off are only
about speed, so a board that cannot be used is a board with nobody on it.
"""

from __future__ import annotations

import os
import stat
import tempfile

from ._procfs import stat_fields


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of its stat), or None."""
    try:
        return stat_fields(f"/proc/{pid}/stat")[22].decode()
    except (OSError, ValueError, IndexError):
        return None


def _ours(path: str) -> bool:
    """A directory (not a link) of this user: in a shared /tmp, another user's directory of
    that name must not steer our threads."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


class HoldBoard:
    """The board of the nodes that share the port-mapper on ``epmd_port``."""

    def __init__(self, epmd_port: int, base: str | None = None) -> None:
        self.base = tempfile.gettempdir() if base is None else base
        self.prefix = f"nodes-held-cpus-{os.getuid()}-"
        self.dir = os.path.join(self.base, f"{self.prefix}{epmd_port}")
        self._pid = os.getpid()
        self._me = _start_time(self._pid)
        self._mine = os.path.join(self.dir, str(self._pid))

    def _usable(self) -> bool:
        return _ours(self.dir)

    def sweep(self) -> None:
        """Clear the other boards of this user whose nodes are all gone."""
        try:
            names = [n for n in os.listdir(self.base) if n.startswith(self.prefix)]
        except OSError:
            return
        for name in names:
            path = os.path.join(self.base, name)
            if path == self.dir or not _ours(path):
                continue
            self._prune(path)
            try:
                os.rmdir(path)
            except OSError:
                pass  # a node of that port-mapper still holds

    def announce(self, cpu: int | None) -> None:
        """This node holds ``cpu`` now (None: it holds none)."""
        if cpu is None:
            try:
                os.unlink(self._mine)
            except OSError:
                pass
            try:
                os.rmdir(self.dir)  # the last one out leaves no directory behind
            except OSError:
                pass  # others still hold, or it was never made
            return
        if self._me is None:
            return  # no /proc: nobody could tell this file from a stale one
        for _attempt in range(2):  # a node that just removed the empty directory: make it again
            try:
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
                if not self._usable():
                    return
                tmp = f"{self._mine}.tmp"
                with open(tmp, "w") as f:
                    f.write(f"{cpu} {self._me}\n")
                os.replace(tmp, self._mine)  # readers see the old line or the new one, whole
                return
            except FileNotFoundError:
                continue
            except OSError:
                return

    def leave(self) -> None:
        """This node stops sharing: take its hold off and, when only entries of dead nodes are
        left (killed holders: a benchmark's or a test's killed leader), the board with it, rather
        than leave it in the temporary directory until the next node of this user starts."""
        if self._usable():
            self._prune(self.dir)
        self.announce(None)

    def others(self) -> frozenset[int]:
        """The CPUs that the other live nodes of this board hold."""
        if not self._usable():
            return frozenset()
        return frozenset(self._prune(self.dir))

    def _prune(self, path: str) -> set[int]:
        """The CPUs held by the live nodes of the board at ``path`` (this one's not counted);
        the files of dead nodes, and anything else there, are removed."""
        try:
            names = os.listdir(path)
        except OSError:
            return set()
        held = set()
        for name in names:
            pid_text, dot, _ = name.partition(".")  # "<pid>", or a write in progress "<pid>.tmp"
            if pid_text == str(self._pid):
                continue
            entry = os.path.join(path, name)
            if pid_text.isdigit() and dot:
                alive = os.path.exists(f"/proc/{pid_text}")  # a node writing, or one killed doing so
            elif pid_text.isdigit():
                try:
                    with open(entry) as f:
                        cpu_text, _, started = f.read().strip().partition(" ")
                    cpu = int(cpu_text)
                except (OSError, ValueError):  # replaced this moment, or damaged: no hold seen
                    alive = os.path.exists(f"/proc/{pid_text}")
                else:
                    # the start time tells a pid reused since from the node that died holding
                    alive = _start_time(int(pid_text)) == started
                    if alive:
                        held.add(cpu)
            else:
                alive = False
            if not alive:
                try:
                    os.unlink(entry)
                except OSError:
                    pass
        return held

"""One member per persistence directory: the lock a member holds on its ``persistence_dir``.

Two members appending to the same ``log_<i>`` files would interleave their entries and
lose acknowledged commands without a word, and nothing in the file format can tell the
two apart afterwards.  So a member takes its directory's lock before it reads or writes
anything there, and a second member is refused with a :class:`PersistenceError` that
names the directory (``start_link`` returns ``("error", ("persistence_error", e))``).
The original does not lock; this is one of the places where the port refuses to lose
data silently.

How:

- ``flock`` on the directory itself, so the directory keeps only the original's
  ``log_*`` and ``snapshot_*`` files.  The kernel drops the lock when the OS process
  dies: a node killed with SIGKILL leaves no stale lock behind.
- Inside one node the lock belongs to the member's pid.  A member that stops
  (``gen_statem.stop``, a crash) lets go in ``terminate``.  A member killed with
  ``nodes.exit(pid, "kill")`` never runs ``terminate`` (Erlang's rule), so the next member
  takes the lock over once the holder is no longer alive: a restart right after a kill
  works.  Every ``acquire`` also lets go of the other directories whose holders are dead, so
  killed members leave no growing pile of locked descriptors behind.  The killed member's
  thread may still finish a write it had begun, as it would without the lock.
- A member's snapshot writer (a helper process) puts its snapshot into the directory later,
  under :func:`rename_guard`: a member killed meanwhile leaves its writer running, and once
  another member has taken the directory over (a member of another group, say), the writer
  drops its snapshot instead of renaming it in beside that member's files.  (Until then the
  snapshot still matches the killed member's log and may go in: nothing is lost either way,
  the old log files go only once a snapshot covers them.)
- ``read_last_log_index(dir)`` only reads and takes no lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import nodes
from rafted.persistence import PersistenceError, RenameGuard

_mutex = threading.Lock()
_held: dict[str, tuple[nodes.Pid, int]] = {}  # real path -> (holder, fd of the locked directory)


def acquire(dir: str, owner: nodes.Pid) -> None:
    """Lock ``dir`` (created if missing) for ``owner``, or raise :class:`PersistenceError`."""
    os.makedirs(dir, exist_ok=True)
    key = os.path.realpath(dir)
    with _mutex:
        for other, (holder, fd) in list(_held.items()):
            if other != key and not nodes.is_alive(holder):
                del _held[other]
                os.close(fd)  # its holder was killed before it could let go
        held = _held.get(key)
        if held is not None:
            holder, fd = held
            if holder != owner and nodes.is_alive(holder):
                raise PersistenceError(
                    f"persistence dir {dir} is in use by member {holder!r} of this node; refusing to start",
                    dir)
            del _held[key]
            os.close(fd)  # the holder was killed before it could let go
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PersistenceError(
                f"persistence dir {dir} is in use by a member of another OS process; refusing to start",
                dir) from None
        except BaseException:
            os.close(fd)
            raise
        _held[key] = (owner, fd)


def release(dir: str, owner: nodes.Pid) -> None:
    """Let go of ``dir`` if ``owner`` holds it (idempotent)."""
    key = os.path.realpath(dir)
    with _mutex:
        held = _held.get(key)
        if held is not None and held[0] == owner:
            del _held[key]
            os.close(held[1])


def rename_guard(dir: str, owner: nodes.Pid) -> RenameGuard:
    """For a helper that ``owner`` starts now to put a file into ``dir`` later: a context manager
    factory.  Inside it ``dir`` cannot pass to another member, and it yields whether the hold
    ``owner`` has now is still in place (true as well when ``owner`` holds no lock on ``dir``,
    a persistence used without a member: nobody can take over what nobody holds)."""
    key = os.path.realpath(dir)
    with _mutex:
        held = _held.get(key)
        hold = held if held is not None and held[0] == owner else None

    @contextmanager
    def guard() -> Iterator[bool]:
        with _mutex:
            yield hold is None or _held.get(key) is hold

    return guard

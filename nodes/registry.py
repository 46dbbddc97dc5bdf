"""Local registered names (``register`` / ``unregister`` / ``whereis``).

A name belongs to one live process and a process holds at most one name, as in
Erlang; the process layer frees the name when its holder dies.
"""

from __future__ import annotations

import threading

from .terms import Pid

_lock = threading.Lock()
_names: dict[str, Pid] = {}
_by_pid: dict[Pid, str] = {}


def add(name: str, pid: Pid) -> None:
    """Bind ``name`` to ``pid``; the caller has checked that ``pid`` is a live local process."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register: name must be a non-empty str, got {name!r}")
    with _lock:
        holder = _names.get(name)
        if holder is not None:
            raise ValueError(f"register: name {name!r} is already registered to {holder!r}")
        held = _by_pid.get(pid)
        if held is not None:
            raise ValueError(f"register: {pid!r} is already registered as {held!r}")
        _names[name] = pid
        _by_pid[pid] = name


def remove(name: str) -> bool:
    with _lock:
        pid = _names.pop(name, None)
        if pid is None:
            return False
        _by_pid.pop(pid, None)
        return True


def remove_pid(pid: Pid) -> None:
    """Free the name of a process that died."""
    with _lock:
        name = _by_pid.pop(pid, None)
        if name is not None:
            _names.pop(name, None)


def lookup(name: str) -> Pid | None:
    return _names.get(name)

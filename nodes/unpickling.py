"""Unpickling that leaves this process's own classes alone.

cloudpickle stores a class that cannot be imported elsewhere (defined in ``__main__``, a shell,
or a function) *by value*, and rebuilds it in two steps: a skeleton class, then its attributes
set one by one.  When the bytes come back to the process that defined the class (a snapshot read
back after a restart, a message that went to another node and returned), cloudpickle finds the
original class through its tracker and uses it as the "skeleton" -- and then overwrites its
methods with the unpickled copies.  Those copies have their own globals and closure cells, so
from then on the user's class writes to detached lists and sees stale module globals: a leader
hook that records calls in a list defined next to it records nothing.

Erlang never rewrites loaded code on receipt, and neither does this module: when the class
being rebuilt already exists here, it is returned as it is and its attributes are not touched.
Everything else is :func:`pickle.loads`.  Bytes without a cloudpickle class in them (the
common case: Raft's messages) take the plain path after one substring check.

One more thing it loads that plain pickle no longer does: refs pickled by builds before refs
became tuples (a log or a snapshot written then), retried only after such bytes raised.

This leans on two cloudpickle internals (the ``class_tracker_id`` argument of its skeleton
constructors and its class tracker); when they are missing, :func:`loads` is plain
``pickle.loads`` again, and ``tests/rafted/test_persistence.py`` says so by failing.
"""

from __future__ import annotations

import inspect
import io
import pickle
import threading
from collections.abc import Callable
from typing import Any

from .terms import ref_from_any_pickle

try:
    from cloudpickle import cloudpickle as _cp

    _CP_MODULE = _cp.__name__
    _TRACKER = _cp._DYNAMIC_CLASS_TRACKER_BY_ID
    # constructor name -> position of its class_tracker_id argument
    _SKELETONS = {
        name: list(inspect.signature(getattr(_cp, name)).parameters).index("class_tracker_id")
        for name in ("_make_skeleton_class", "_make_skeleton_enum")
    }
    _cp._class_setstate  # noqa: B018 (present, or the fallback below)
except (ImportError, AttributeError, ValueError):  # another cloudpickle: plain loads
    _SKELETONS = {}

_MARK = b"cloudpickle"  # the module name appears in every pickle that rebuilds a class by value

# Classes some load is still filling in: cloudpickle tracks a skeleton before it sets the
# skeleton's attributes, so another thread loading the same class meanwhile must fill it too
# (as plain cloudpickle would) rather than take the half-built class as "already here".
_lock = threading.Lock()
_building: dict[int, int] = {}  # id(class) -> number of loads filling it in


def loads(data: bytes | bytearray | memoryview) -> Any:
    """:func:`pickle.loads`, except that classes this process already has are kept as they are."""
    if type(data) is memoryview:
        data = data.tobytes()
    try:
        if not _SKELETONS or _MARK not in data:
            return pickle.loads(data)
        return _load(data, old_refs=False)
    except TypeError:
        if _REF_NAME not in data:
            raise
        return _load(data, old_refs=True)  # perhaps written before refs were tuples: try so


def _load(data: bytes | bytearray, old_refs: bool) -> Any:
    unpickler = _KeepExistingClasses(io.BytesIO(data), old_refs)
    try:
        return unpickler.load()
    finally:
        unpickler.done_building()


# Until 112a5ef a Ref was pickled as Ref(prefix, n); it is a tuple now, pickled as Ref((prefix,
# n)), and calling it the old way raises TypeError.  Such bytes (a log or snapshot written by
# an earlier build) are loaded again with ``nodes.terms.Ref`` taken to mean a function that
# accepts both forms: only after a TypeError, so the common path pays nothing.
_REF_NAME = b"Ref"


class _KeepExistingClasses(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, old_refs: bool = False) -> None:
        super().__init__(file)
        self._existing: set[int] = set()  # ids of the classes found already here, during this load
        self._building: list[int] = []  # ids of the classes this load is filling in, not done yet
        self._old_refs = old_refs

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if self._old_refs and module == "nodes.terms" and name == "Ref":
            return ref_from_any_pickle
        if module != _CP_MODULE:
            return found
        if name in _SKELETONS:
            return self._skeleton(found, _SKELETONS[name])
        if name == "_class_setstate":
            return self._setstate(found)
        return found

    def _skeleton(self, make: Callable[..., Any], tracker_arg: int) -> Callable[..., Any]:
        def skeleton(*args: Any) -> Any:
            tracker_id = args[tracker_arg] if len(args) > tracker_arg else None
            with _lock:
                existing = _TRACKER.get(tracker_id) if tracker_id is not None else None
                if existing is not None and id(existing) not in _building:
                    self._existing.add(id(existing))
                    return existing
                # a new class, or one another load is still filling in: fill it in here too
                cls = make(*args)
                _building[id(cls)] = _building.get(id(cls), 0) + 1
                self._building.append(id(cls))
                return cls

        return skeleton

    def _setstate(self, setstate: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def keep_or_set(obj: Any, state: Any) -> Any:
            if id(obj) in self._existing:
                return obj  # defined here: its code and globals stay the process's own
            setstate(obj, state)
            with _lock:
                if id(obj) in self._building:
                    self._building.remove(id(obj))
                    _release(id(obj))
            return obj

        return keep_or_set

    def done_building(self) -> None:
        """A load that failed half-way leaves its classes to be filled in by the next one."""
        with _lock:
            for class_id in self._building:
                _release(class_id)
            self._building.clear()


def _release(class_id: int) -> None:
    n = _building[class_id] - 1
    if n:
        _building[class_id] = n
    else:
        del _building[class_id]

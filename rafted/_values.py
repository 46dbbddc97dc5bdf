"""A fast ``replace`` for the internal slotted dataclasses (State, Logs, Members, Election, Leadership).

States are values: handlers never mutate what ``nodes.sys.get_state`` may
have handed out, they build copies. ``dataclasses.replace`` re-runs
``__init__`` and inspects the fields on every call (several microseconds for
``State``) and a member makes a few dozen copies per command, so the hot
path uses a straight-line slot copy generated once per class (like
``namedtuple._replace``). Only for this package's own value types: no
validation beyond the field names happens here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_COPIERS: dict[type, Callable[[Any], Any]] = {}
_FIELDS: dict[type, frozenset[str]] = {}


def _make_copier(cls: type) -> Callable[[Any], Any]:
    slots = tuple(cls.__slots__)  # type: ignore[attr-defined]
    body = "".join(f"    new.{name} = obj.{name}\n" for name in slots)
    src = f"def copy(obj):\n    new = _new(_cls)\n{body}    return new\n"
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    exec(src, namespace)  # noqa: S102 - generated from the class's own slot names
    _FIELDS[cls] = frozenset(slots)
    return namespace["copy"]  # type: ignore[no-any-return]


def replace(obj: T, **changes: Any) -> T:
    """A copy of ``obj`` with ``changes`` applied (``obj`` itself is left untouched)."""
    cls = type(obj)
    copier = _COPIERS.get(cls)
    if copier is None:
        copier = _COPIERS[cls] = _make_copier(cls)
    new = copier(obj)
    if changes:
        fields = _FIELDS[cls]
        for k, v in changes.items():
            if k not in fields:
                raise TypeError(f"{cls.__name__} has no field {k!r}")
            setattr(new, k, v)
    return new  # type: ignore[no-any-return]


def copier(cls: type[T]) -> Callable[[T], T]:
    """The bare slot copy behind :func:`replace` for ``cls``: a hot path sets the changed fields itself."""
    c = _COPIERS.get(cls)
    if c is None:
        c = _COPIERS[cls] = _make_copier(cls)
    return c

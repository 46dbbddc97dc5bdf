"""Objects ↔ bytes for what rafted writes to disk: pickle protocol 5, cloudpickle when needed.

Plain pickle is fast and stores classes by reference; that is wrong for a
class defined in ``__main__`` (a script, a shell) or inside a function: such
a data module must survive in a config or a snapshot read by another process,
so it is stored by value with cloudpickle (the same rule as ``nodes``'
message codec). ``loads`` is :func:`nodes.unpickling.loads`: plain unpickling, except
that a class this process defined comes back as the class itself, untouched (a hook or data
module read back from a snapshot in the shell that defined it keeps its globals). Only ever
call it on bytes whose checksum was verified, or on a trusted file: unpickling runs code.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from nodes import Pid, Ref, unpickling

__all__ = ["dumps", "loads", "cannot_serialize", "ALWAYS_SERIALIZABLE", "PICKLE_PROTOCOL"]

PICKLE_PROTOCOL = 5
_MAIN_MARKER = b"__main__"


def dumps(obj: Any) -> bytes:
    """Plain pickle when the result loads anywhere, else cloudpickle (classes by value)."""
    try:
        data = pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    except Exception:  # local classes, lambdas, classes of modules the reader may lack, ...
        return cloudpickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    if _MAIN_MARKER in data:
        # refers to something defined in __main__: by reference it would not load elsewhere
        return cloudpickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    return data


# Values that always serialize: checked by type alone (a command's usual argument and id).
ALWAYS_SERIALIZABLE = frozenset({str, int, float, bool, bytes, type(None), Pid, Ref})


def cannot_serialize(obj: Any) -> str | None:
    """Why ``obj`` cannot be sent to another node or written (``None`` when it can)."""
    t = type(obj)
    if t in ALWAYS_SERIALIZABLE or (t is tuple and all(type(x) in ALWAYS_SERIALIZABLE for x in obj)):
        return None
    try:
        dumps(obj)
    except Exception as e:  # a lock, a socket, a generator, ...
        return f"{type(e).__name__}: {e}"
    return None


def loads(data: bytes | memoryview) -> Any:
    return unpickling.loads(data)

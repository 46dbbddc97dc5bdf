"""Objects ↔ bytes for what rafted writes to disk and pickles once for many followers.

The encoding is the one messages travel in between nodes, :func:`nodes.term_to_binary`:
pickle protocol 5, or cloudpickle when something is defined in ``__main__`` (a script, a
shell) or inside a function, so a data module stored in a config or a snapshot loads in
another process. ``loads`` is :func:`nodes.binary_to_term`: a class this process defined
comes back as the class itself, untouched (a hook or data module read back from a snapshot
in the shell that defined it keeps its globals). Only ever call it on bytes whose checksum
was verified, or on a trusted file: unpickling runs code.
"""

from __future__ import annotations

from typing import Any

import nodes
from nodes import Pid, Ref

__all__ = ["dumps", "loads", "cannot_serialize", "ALWAYS_SERIALIZABLE"]

dumps = nodes.term_to_binary
# Also the name that pickles written before this module delegated to nodes refer to.
loads = nodes.binary_to_term

# Values that always serialize: checked by type alone (a command's usual argument and id).
ALWAYS_SERIALIZABLE = frozenset({str, int, float, bool, bytes, type(None), Pid, Ref})


def _plain(obj: Any, depth: int = 2) -> bool:
    """``obj`` is made of :data:`ALWAYS_SERIALIZABLE` values, in tuples nested ``depth`` deep
    at most (a command entry's payload: ``((pid, ref), arg, id)``)."""
    t = type(obj)
    return t in ALWAYS_SERIALIZABLE or (t is tuple and depth > 0 and all(_plain(x, depth - 1) for x in obj))


def cannot_serialize(obj: Any) -> str | None:
    """Why ``obj`` cannot be sent to another node or written and read back (``None`` when it can).

    Read back too: a value that pickles but does not unpickle (an exception whose ``__init__``
    does not take its own ``args``, a common slip) would be dropped by every follower's node,
    and once written, would make the log it is in impossible to start from.
    """
    if _plain(obj):
        return None
    try:
        data = dumps(obj)
    except Exception as e:  # a lock, a socket, a generator, ...
        return f"{type(e).__name__}: {e}"
    try:
        loads(data)
    except Exception as e:
        return f"it pickles but cannot be read back ({type(e).__name__}: {e})"
    return None

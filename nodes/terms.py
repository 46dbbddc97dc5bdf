"""Value types every other room passes around: Pid, Ref, Exit, and the call-reply envelope.

They are immutable, hashable and picklable, so they travel between nodes as they
are.  A Pid carries its node's name and *creation* (incarnation number): a node
restarted under the same name gets a new creation, and a message addressed to a
pid of an earlier incarnation is never delivered to a new process.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

#: The name of a node that has not started distribution, as in a plain `erl`.
NONODE = "nonode@nohost"


class Pid:
    """A process identifier: ``<node.id.0>`` as Erlang prints it."""

    __slots__ = ("node", "id", "creation", "_hash")

    node: str
    id: int
    creation: int
    _hash: int

    def __init__(self, node: str, id: int, creation: int = 0) -> None:
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "creation", creation)
        object.__setattr__(self, "_hash", hash((node, id, creation)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Pid is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pid, (self.node, self.id, self.creation))

    def _key(self) -> tuple[str, int, int]:
        return (self.node, self.id, self.creation)

    def __eq__(self, other: object) -> bool:
        return type(other) is Pid and self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __lt__(self, other: object) -> bool:
        if type(other) is not Pid:
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if type(other) is not Pid:
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if type(other) is not Pid:
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if type(other) is not Pid:
            return NotImplemented
        return self._key() >= other._key()

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"<{self.node}.{self.id}.0>"


# Refs must be unique across nodes even when made before distribution starts, so
# each OS process draws a random prefix once and counts from there.
_REF_PREFIX = int.from_bytes(os.urandom(6), "big")
_ref_counter = itertools.count(1)


class Ref:
    """A unique reference, as made by ``make_ref()``."""

    __slots__ = ("prefix", "n", "_hash")

    prefix: int
    n: int
    _hash: int

    def __init__(self, prefix: int, n: int) -> None:
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "_hash", hash((prefix, n)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Ref is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ref, (self.prefix, self.n))

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and self.n == other.n and self.prefix == other.prefix

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __lt__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return (self.prefix, self.n) < (other.prefix, other.n)

    def __le__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return (self.prefix, self.n) <= (other.prefix, other.n)

    def __gt__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return (self.prefix, self.n) > (other.prefix, other.n)

    def __ge__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return (self.prefix, self.n) >= (other.prefix, other.n)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"#Ref<{self.prefix % 100000}.{self.n}>"


def make_ref() -> Ref:
    """A new reference, unique across nodes (``make_ref()``)."""
    return Ref(_REF_PREFIX, next(_ref_counter))


class Exit(Exception):
    """An exit raised by a call (``exit(Reason)`` in Erlang); ``.reason`` is the Erlang-style reason.

    Raising ``Exit(reason)`` inside a process ends that process with ``reason``.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (Exit, (self.reason,))

    def __repr__(self) -> str:
        return f"Exit({self.reason!r})"

    __str__ = __repr__


class CallReply:
    """The reply to a ``gen_statem.call`` (Erlang's ``{Ref, Reply}``).

    A dedicated type lets the mailbox drop a reply whose caller already gave up
    (Erlang does this with process aliases), so it never shows up in a mailbox.
    """

    __slots__ = ("ref", "value")

    def __init__(self, ref: Ref, value: Any) -> None:
        self.ref = ref
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (CallReply, (self.ref, self.value))

    def __repr__(self) -> str:
        return f"CallReply({self.ref!r}, {self.value!r})"


class ProcessExit(BaseException):
    """Unwinds the thread of a process that has been killed; never seen by user code that
    does not catch BaseException.  The process is already dead when this is raised."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason

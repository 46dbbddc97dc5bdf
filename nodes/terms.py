"""Value types every other room passes around: Pid, Ref, Exit, the call-reply envelope, and node names.

They are immutable, hashable and picklable, so they travel between nodes as they
are.  A Pid carries its node's name and *creation* (incarnation number): a node
restarted under the same name gets a new creation, and a message addressed to a
pid of an earlier incarnation is never delivered to a new process.

One exception, as in Erlang: when distribution starts, the pids of the node's live
processes take the node's new name in place (:func:`rename_local_pid`), so a pid taken
before ``nodes.start`` still equals the process's pid afterwards.  A pid's hash depends
on its id alone, so sets and dicts holding it stay valid through that rename.
"""

from __future__ import annotations

import copyreg
import itertools
import operator
import os
from typing import Any, NamedTuple

#: The name of a node that has not started distribution, as in a plain `erl`.
NONODE = "nonode@nohost"


class Pid:
    """A process identifier: ``<node.id.0>`` as Erlang prints it."""

    __slots__ = ("node", "id", "creation", "_hash", "_reduced")

    node: str
    id: int
    creation: int
    _hash: int
    _reduced: tuple[Any, ...]

    def __new__(cls, node: str, id: int, creation: int = 0) -> Pid:
        # slot descriptors set directly: several times cheaper than object.__setattr__ by name,
        # and pids are made on every unpickle of a message that names one
        self = _new(cls)
        _set_pid_node(self, node)
        _set_pid_id(self, id)
        _set_pid_creation(self, creation)
        _set_pid_hash(self, hash(id))  # the id alone: stable when the pid is renamed in place
        _set_pid_reduced(self, (_pid_from_key, ((node, id, creation),)))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Pid is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return self._reduced

    def _key(self) -> tuple[str, int, int]:
        return (self.node, self.id, self.creation)

    def __eq__(self, other: object) -> bool:
        return self is other or (type(other) is Pid and self.id == other.id
                                 and self.node == other.node and self.creation == other.creation)

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


class Ref(tuple):
    """A unique reference, as made by ``make_ref()``: ``(prefix, n)`` underneath.

    A tuple subclass so that pickle takes it apart and rebuilds it in C (``tuple.__new__``,
    no Python frame): a batch of log entries carries two per command, and rebuilding them in
    Python was most of a follower's unpickling time.  It compares equal only to refs, and
    orders against refs (a plain tuple on the right is compared by contents, as tuples are).
    Pickles written before it was a tuple (``Ref(prefix, n)``) fail in plain pickle;
    :func:`nodes.binary_to_term` loads them (see :mod:`nodes.unpickling`).
    """

    __slots__ = ()

    prefix = property(operator.itemgetter(0), doc="the random prefix of the OS process that made it")
    n = property(operator.itemgetter(1), doc="its number within that OS process")

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __lt__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return tuple.__lt__(self, other)

    def __le__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return tuple.__le__(self, other)

    def __gt__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return tuple.__gt__(self, other)

    def __ge__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return tuple.__ge__(self, other)

    __hash__ = tuple.__hash__

    # ((prefix, n),), a plain tuple in a tuple, for pickle (see copyreg.pickle below)
    _newargs = property(tuple.__getnewargs__)  # type: ignore[attr-defined]  # not in typeshed

    def __repr__(self) -> str:
        return f"#Ref<{self[0] % 100000}.{self[1]}>"


_tuple_new = tuple.__new__


_new = object.__new__
_set_pid_node = Pid.__dict__["node"].__set__
_set_pid_id = Pid.__dict__["id"].__set__
_set_pid_creation = Pid.__dict__["creation"].__set__
_set_pid_hash = Pid.__dict__["_hash"].__set__
_set_pid_reduced = Pid.__dict__["_reduced"].__set__
# pickle asks copyreg first: a C attribute getter returns the cached (_pid_from_key, (key,))
# without a Python frame (``__reduce__`` stays for anyone calling it directly)
copyreg.pickle(Pid, operator.attrgetter("_reduced"))


class _SeenPids(dict):  # type: ignore[type-arg]
    """``(node, id, creation)`` → a Pid: what an unpickled pid is looked up in.

    A message or a batch of log entries names the same few processes over and over (the
    clients of a group, its members), so a pid is pickled as a call of this table with its
    key, which runs in C when the pid was seen before; only a new one runs Python
    (:meth:`__missing__`).  Equal pids are interchangeable, so handing out one shared object
    is safe; the table is emptied when it reaches ``LIMIT``, so a node that hears of many
    short-lived processes keeps no more than that.  The table itself is pickled by its name
    (each node looks the pid up in its own), in C too.
    """

    LIMIT = 10_000
    _pickled_as = "_pid_from_key"

    __call__ = dict.__getitem__

    def __missing__(self, key: tuple[str, int, int]) -> Pid:
        if len(self) >= self.LIMIT:
            self.clear()
        pid = self[key] = Pid(*key)
        return pid


_pid_from_key = _SeenPids()
copyreg.pickle(_SeenPids, operator.attrgetter("_pickled_as"))  # a str: pickled as a global name
# (Ref, ((prefix, n),)): unpickled as Ref((prefix, n)), which is tuple.__new__
copyreg.pickle(Ref, operator.attrgetter("__class__", "_newargs"))


def rename_local_pid(pid: Pid, node: str, creation: int) -> None:
    """Distribution started (or was rolled back): ``pid``, a live local process's, now names
    it on ``node``.  Only ``nodes.process.rename_all`` calls this."""
    _set_pid_node(pid, node)
    _set_pid_creation(pid, creation)
    _set_pid_reduced(pid, (_pid_from_key, ((node, pid.id, creation),)))


def make_ref() -> Ref:
    """A new reference, unique across nodes (``make_ref()``)."""
    return _tuple_new(Ref, (_REF_PREFIX, next(_ref_counter)))


def ref_from_any_pickle(*args: Any) -> Ref:
    """What ``Ref`` means to :mod:`nodes.unpickling` when it loads bytes that an earlier build
    wrote: a ref pickled then is ``Ref(prefix, n)``, one pickled now ``Ref((prefix, n))``."""
    return _tuple_new(Ref, args if len(args) == 2 else args[0])


class BadNodeName(ValueError):
    """A node name that is not ``"name@host"``: a wrong argument, not an unreachable node."""


def split_node_name(node: str) -> tuple[str, str]:
    """``"name@host"`` → ``("name", "host")``; raises :class:`BadNodeName` for anything else."""
    if not isinstance(node, str):
        raise TypeError(f"node name must be a str like 'name@host', not {type(node).__name__}")
    name, sep, host = node.partition("@")
    if not sep or not name or not host or "@" in host or any(c.isspace() for c in node):
        raise BadNodeName(f"bad node name {node!r}: expected 'name@host'")
    return name, host


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


class Pickled(NamedTuple):
    """A value pickled apart from the signal that carries it to another node, beside a text that
    stands for it there: a value the receiving node cannot rebuild (a class it cannot import, an
    exception whose ``__init__`` does not take its own ``args``) then fails alone, where the whole
    signal would fail to unpickle and be dropped.  Exit and DOWN reasons and call replies to
    another node travel so (``nodes.process``, ``nodes.gen_statem``)."""

    data: bytes
    text: str


#: Values that every node rebuilds: they travel as they are, never as :class:`Pickled`.
PLAIN_TYPES = (str, int, bool, float, bytes, type(None))


#: The longest time-out or timer, in ms: 2**32 - 1 (about 49.7 days), Erlang's bound for a
#: ``receive ... after`` and a timer (beyond it, badarg there). Longer ones overflow the waits.
MAX_TIMEOUT_MS = 4_294_967_295


def check_ms_in_range(fn: str, ms: float) -> None:
    """ValueError for a number of ms (its type and sign already checked) that no wait can take:
    above :data:`MAX_TIMEOUT_MS`, infinite or NaN. Raised at the call site, before anything is
    sent or armed: a call would otherwise fail after its request went out, and a timer would
    stop the node's timer thread for good."""
    if not ms <= MAX_TIMEOUT_MS:  # NaN compares false too
        raise ValueError(f"{fn}: a time in ms must be at most {MAX_TIMEOUT_MS} (about 49.7 days, "
                         f"Erlang's bound), got {ms!r}")


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

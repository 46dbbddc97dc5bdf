"""History data types: the operations a set of concurrent clients performed.

A history is a list of :class:`Operation` records. Each one says which
process issued it, against which key, what it asked for (``f`` and its input
``value``), when it was invoked and when it completed (in any totally ordered
clock: event counter, monotonic seconds, line number), and how it ended:

* ``ok``       -- it took effect exactly once, and ``result`` is what it returned;
* ``fail``     -- it certainly never took effect (the checker drops it);
* ``unknown``  -- indeterminate (timeout, crash): it may have taken effect at any
  moment after its invocation, or never, and its result is unconstrained.

This module knows nothing about models or checking; it only describes what
happened.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """How an operation ended. A string enum so it serialises as plain text."""

    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Operation:
    """One client operation with its real-time interval and outcome.

    ``complete`` may be ``None`` for operations that never returned; for
    ``unknown`` operations it is ignored by the checker either way, because an
    indeterminate operation may take effect arbitrarily late.
    """

    process: Hashable
    f: str
    value: Any = None
    result: Any = None
    status: Status = Status.OK
    invoke: float = 0
    complete: float | None = None
    key: Hashable = None

    def __post_init__(self) -> None:
        # Accept plain strings ("ok") from callers and JSON, but store the enum.
        if not isinstance(self.status, Status):
            object.__setattr__(self, "status", Status(self.status))
        if self.status is not Status.UNKNOWN:
            if self.complete is None:
                raise ValueError(f"{self.status.value} operation needs a completion time: {self!r}")
            if self.complete < self.invoke:
                raise ValueError(f"operation completes before it is invoked: {self!r}")

    @property
    def end(self) -> float:
        """The latest moment the operation can take effect (+inf if unknown)."""
        if self.status is Status.UNKNOWN or self.complete is None:
            return math.inf
        return self.complete

    @property
    def result_known(self) -> bool:
        """Whether ``result`` constrains the model (false for indeterminate ops)."""
        return self.status is Status.OK

    def as_unknown(self) -> Operation:
        """The same call, relaxed to "may or may not have happened, any result"."""
        return replace(self, status=Status.UNKNOWN, result=None)

    def describe(self) -> str:
        """Compact human-readable form, e.g. ``p3 write(4) -> ok [12, 15]``."""
        args = "" if self.value is None else repr(self.value)
        if self.status is Status.OK:
            outcome = f"-> {self.result!r}"
        else:
            outcome = f"-> {self.status.value}"
        end = "inf" if self.end == math.inf else _fmt_time(self.end)
        key = "" if self.key is None else f"[{self.key!r}] "
        return f"p{self.process} {key}{self.f}({args}) {outcome}  @[{_fmt_time(self.invoke)}, {end}]"


def _fmt_time(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else f"{t:.6f}"


@dataclass
class History:
    """An ordered collection of operations plus free-form metadata.

    ``metadata`` carries anything worth keeping alongside a recorded run
    (nemesis events, seeds, cluster layout). By convention ``metadata["model"]``
    holds a model spec (see :func:`lincheck.model.model_from_spec`) so a saved
    history can be replayed without saying which model it was recorded against.
    """

    operations: list[Operation] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def __len__(self) -> int:
        return len(self.operations)

    def keys(self) -> list[Hashable]:
        """Distinct keys in first-appearance order."""
        return list(dict.fromkeys(op.key for op in self.operations))


def partition_by_key(operations: Iterable[Operation]) -> dict[Hashable, list[Operation]]:
    """Split operations per key, preserving order.

    Linearizability is local (Herlihy & Wing): a history of independent
    objects is linearizable iff each object's sub-history is, so keys can be
    checked separately, which keeps every search small.
    """
    parts: dict[Hashable, list[Operation]] = {}
    for op in operations:
        parts.setdefault(op.key, []).append(op)
    return parts

"""A bounded cache of command results keyed by command id (``RaftedValue.CommandResults``).

Replicated through the log (every member applies the same commands), it is
what makes a retried command id return the cached result instead of being
applied twice. Values are immutable: ``put`` returns a new cache, so a state
handed out by ``sys.get_state`` never changes under the reader.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["CommandResults"]

_MISSING = object()


class CommandResults:
    """Insertion-ordered map ``cmd_id -> result`` keeping at most ``max_size`` newest ids."""

    __slots__ = ("_order", "_map")

    def __init__(self) -> None:
        self._order: deque[Hashable] = deque()
        self._map: dict[Hashable, Any] = {}

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, cmd_id: object) -> bool:
        return cmd_id in self._map

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CommandResults):
            return NotImplemented
        return self._order == other._order and self._map == other._map

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CommandResults({len(self._map)} results)"

    def __getstate__(self) -> tuple[list, dict]:
        return (list(self._order), self._map)

    def __setstate__(self, st: tuple[list, dict]) -> None:
        self._order = deque(st[0])
        self._map = st[1]

    def fetch(self, cmd_id: Hashable) -> tuple[bool, Any]:
        """``(True, result)`` if ``cmd_id`` is cached, else ``(False, None)``."""
        v = self._map.get(cmd_id, _MISSING)
        if v is _MISSING:
            return False, None
        return True, v

    def copy(self) -> CommandResults:
        """A private copy, to be filled with :meth:`put_mut` (used while applying a committed batch)."""
        new = CommandResults()
        new._order = deque(self._order)
        new._map = dict(self._map)
        return new

    def put_mut(self, cmd_id: Hashable, result: Any, max_size: int) -> None:
        """In-place :meth:`put`, only for a copy nobody else has seen yet.

        Eviction happens after every single put, so the outcome does not
        depend on how committed entries are grouped into batches (members
        apply them in different groupings and must stay identical).
        """
        if cmd_id not in self._map:
            self._order.append(cmd_id)
        self._map[cmd_id] = result
        while len(self._map) > max_size:
            del self._map[self._order.popleft()]

    def put(self, cmd_id: Hashable, result: Any, max_size: int) -> CommandResults:
        """A new cache with ``cmd_id -> result`` added, the oldest ids dropped beyond ``max_size``."""
        return self.put_many(((cmd_id, result),), max_size)

    def put_many(self, items: Iterable[tuple[Hashable, Any]], max_size: int) -> CommandResults:
        """Like repeated :meth:`put`, copying the cache once (a committed batch applies many commands)."""
        new = self.copy()
        for cmd_id, result in items:
            new.put_mut(cmd_id, result, max_size)
        return new

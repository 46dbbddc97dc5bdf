"""Log entries: ``(term, index, entry_type, payload)`` tuples, as in the original.

Entry types and payloads:

- ``"command"``: ``(from_, arg, cmd_id)``
- ``"query"``: ``(from_, arg)`` (a query that goes through the log)
- ``"change_config"``: the new :class:`rafted.Config`
- ``"leader_elected"``: list of pids, the new leader first
- ``"add_follower"`` / ``"remove_follower"``: the follower's pid
- ``"restore_from_files"``: the pid of the member that recovered from disk

``ENTRY_TYPES`` fixes the order of type tags, for a persistence layer that
needs a byte per type.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LogEntry",
    "COMMAND",
    "QUERY",
    "CHANGE_CONFIG",
    "LEADER_ELECTED",
    "ADD_FOLLOWER",
    "REMOVE_FOLLOWER",
    "RESTORE_FROM_FILES",
    "ENTRY_TYPES",
    "MEMBERSHIP_CHANGES",
]

LogEntry = tuple[int, int, str, Any]

COMMAND = "command"
QUERY = "query"
CHANGE_CONFIG = "change_config"
LEADER_ELECTED = "leader_elected"
ADD_FOLLOWER = "add_follower"
REMOVE_FOLLOWER = "remove_follower"
RESTORE_FROM_FILES = "restore_from_files"

ENTRY_TYPES: tuple[str, ...] = (
    COMMAND,
    QUERY,
    CHANGE_CONFIG,
    LEADER_ELECTED,
    ADD_FOLLOWER,
    REMOVE_FOLLOWER,
    RESTORE_FROM_FILES,
)

MEMBERSHIP_CHANGES = frozenset({ADD_FOLLOWER, REMOVE_FOLLOWER})

"""Leader hooks: callbacks the leader runs on replicated events (the port of ``RaftedValue.LeaderHook``).

A hook module is any class, module or object with the six ``on_*`` functions
below, called without an instance. They run only in the leader, after the
event is committed (or the query answered), and may run more than once for
one event around a leader change. :class:`NoOp` is the default.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LeaderHook", "NoOp", "HOOK_NAMES", "check_leader_hook_module"]

HOOK_NAMES = (
    "on_command_committed",
    "on_query_answered",
    "on_follower_added",
    "on_follower_removed",
    "on_elected",
    "on_restored_from_files",
)


class LeaderHook:
    """Optional base class: every hook does nothing; override the ones you need.

    Static functions, because hook classes are used as namespaces
    (``hook.on_elected(data)``) and never instantiated.
    """

    @staticmethod
    def on_command_committed(data_before: Any, arg: Any, ret: Any, data_after: Any) -> None:
        return None

    @staticmethod
    def on_query_answered(data: Any, arg: Any, ret: Any) -> None:
        return None

    @staticmethod
    def on_follower_added(data: Any, pid: Any) -> None:
        return None

    @staticmethod
    def on_follower_removed(data: Any, pid: Any) -> None:
        return None

    @staticmethod
    def on_elected(data: Any) -> None:
        return None

    @staticmethod
    def on_restored_from_files(data: Any) -> None:
        return None


class NoOp(LeaderHook):
    """The default hook module: ignores every event."""


#: each hook's do-nothing function: a module whose hook is this one need not be called
INHERITED_NO_OPS: dict[str, Any] = {name: getattr(LeaderHook, name) for name in HOOK_NAMES}


def check_leader_hook_module(module: Any) -> None:
    """Raise TypeError unless ``module`` has the six callable ``on_*`` hooks."""
    missing = [name for name in HOOK_NAMES if not callable(getattr(module, name, None))]
    if missing:
        raise TypeError(
            f"leader_hook_module must provide callable {', '.join(HOOK_NAMES)}; "
            f"{module!r} lacks {', '.join(missing)}"
        )

"""``sys``: look inside a running gen_statem (``sys.get_state``)."""

from __future__ import annotations

from typing import Any

from . import gen_statem


def get_state(server: Any, timeout: int | None = 5000) -> tuple[Any, Any]:
    """``(state_name, state_data)``, taken inside the process between two events.

    The data is the process's own object, not a copy: callers must not mutate it.
    """
    return gen_statem.system_call(server, "get_state", timeout)  # type: ignore[no-any-return]

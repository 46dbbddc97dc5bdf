"""JSON persistence of histories, so a failing run can be saved and replayed.

File layout (one JSON object)::

    {"format": "lincheck-history", "version": 1,
     "metadata": {"model": {"name": "kv", "initial": ""}, "events": [...], ...},
     "operations": [{"process": 1, "key": "x", "f": "cas", "value": [1, 2],
                     "status": "ok", "result": true, "invoke": 3, "complete": 7}, ...]}

JSON has no tuples, so on load every list inside ``value``/``result``/``key``
becomes a tuple: model states must be hashable (the checker memoises them)
and a cas input ``[old, new]`` unpacks the same either way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lincheck.history import History, Operation, Status

FORMAT = "lincheck-history"
VERSION = 1


def _freeze(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_freeze(v) for v in x)
    if isinstance(x, dict):
        # Dicts cannot be hashed either; a sorted item tuple is the closest immutable stand-in.
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    return x


def _time(t: float | None) -> float | None:
    # JSON has no infinity; a missing completion is written as null.
    return None if t is None or t == math.inf else t


def history_to_dict(history: History) -> dict[str, Any]:
    """The JSON-able form of ``history``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "metadata": history.metadata,
        "operations": [
            {
                "process": op.process, "key": op.key, "f": op.f, "value": op.value,
                "status": op.status.value, "result": op.result,
                "invoke": op.invoke, "complete": _time(op.complete),
            }
            for op in history.operations
        ],
    }


def history_from_dict(data: dict[str, Any]) -> History:
    """Inverse of :func:`history_to_dict`."""
    if data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document (format={data.get('format')!r})")
    if data.get("version") != VERSION:
        raise ValueError(f"unsupported {FORMAT} version {data.get('version')!r}")
    ops = [
        Operation(
            process=_freeze(d["process"]), f=d["f"], value=_freeze(d.get("value")),
            result=_freeze(d.get("result")), status=Status(d.get("status", "ok")),
            invoke=d["invoke"], complete=d.get("complete"), key=_freeze(d.get("key")),
        )
        for d in data["operations"]
    ]
    return History(ops, dict(data.get("metadata") or {}))


def dumps(history: History) -> str:
    """Serialise to a JSON string (raises ``TypeError`` for non-JSON values)."""
    return json.dumps(history_to_dict(history), indent=1)


def loads(text: str) -> History:
    """Parse a JSON string written by :func:`dumps`."""
    return history_from_dict(json.loads(text))


def save_history(history: History, path: str | Path) -> Path:
    """Write ``history`` (with its metadata) to ``path``; returns the path."""
    path = Path(path)
    path.write_text(dumps(history) + "\n", encoding="utf-8")
    return path


def load_history(path: str | Path) -> History:
    """Read a history written by :func:`save_history`."""
    return loads(Path(path).read_text(encoding="utf-8"))

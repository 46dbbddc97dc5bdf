"""Parsers for the Jepsen-style history formats in the shared test data.

* Jepsen etcd logs (``jepsen_etcd/etcd_NNN.log``): one CAS register, lines like
  ``INFO  jepsen.util - 3  :invoke  :cas  [1 4]``. ``:fail :cas`` means the
  cas ran and returned false, so it becomes an ``ok`` operation with result
  ``False``; ``:fail :read :timed-out`` and invokes that never end are
  indeterminate; ``:info`` lines close nothing (the op stays indeterminate).
* kv EDN lines (``kv/cNN-{ok,bad}.txt``): ``{:process 0, :type :invoke, :f :append,
  :key "3", :value "x 0 1 y"}`` with get/put/append on string keys.

Both produce a :class:`~lincheck.history.History` whose times are line
numbers and whose ``metadata["model"]`` names the model the data belongs to.
Only the small EDN subset these files use is understood (maps, vectors,
keywords, strings, integers, nil/true/false).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

from lincheck.history import History, Operation, Status
from lincheck.jsonio import loads

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>[{\[(])|(?P<close>[}\])])|
        (?P<string>"(?:\\.|[^"\\])*")|
        (?P<atom>[^\s,{}\[\]()"]+)
    )[\s,]*""",
    re.VERBOSE,
)
_INT = re.compile(r"[+-]?\d+")
# "INFO  jepsen.util - <process> <:type> <:f> <value...>", separated by tabs or spaces.
_ETCD_LINE = re.compile(
    r"^\S+\s+jepsen\.util\s+-\s+(?P<proc>\S+)\s+(?P<type>:\S+)\s+(?P<f>:\S+)\s*(?P<rest>.*)$"
)


class Keyword(str):
    """An EDN keyword (``:foo``), kept distinct from strings; the value is the name without ':'."""

    def __repr__(self) -> str:
        return ":" + str(self)


def parse_edn(text: str) -> Any:
    """Parse one EDN value of the supported subset (maps become dicts keyed by name)."""
    value, end = _parse_value(text, 0)
    if text[end:].strip():
        raise ValueError(f"trailing text after EDN value: {text[end:]!r}")
    return value


def _parse_value(text: str, pos: int) -> tuple[Any, int]:
    m = _TOKEN.match(text, pos)
    if not m:
        raise ValueError(f"cannot parse EDN at {text[pos:pos + 30]!r}")
    if m.group("open"):
        closer = {"{": "}", "[": "]", "(": ")"}[m.group("open")]
        items: list[Any] = []
        pos = m.end()
        while True:
            c = _TOKEN.match(text, pos)
            if c and c.group("close"):
                if c.group("close") != closer:
                    raise ValueError(f"mismatched {c.group('close')!r} in {text!r}")
                pos = c.end()
                break
            item, pos = _parse_value(text, pos)
            items.append(item)
        if closer == "}":
            if len(items) % 2:
                raise ValueError(f"odd number of forms in map: {text!r}")
            return {_map_key(k): v for k, v in zip(items[::2], items[1::2], strict=True)}, pos
        return tuple(items), pos
    if m.group("string"):
        # EDN string escapes are a subset of JSON's for everything these files contain.
        return json.loads(m.group("string")), m.end()
    if m.group("close"):
        raise ValueError(f"unexpected {m.group('close')!r} in {text!r}")
    return _atom(m.group("atom")), m.end()


def _map_key(k: Any) -> Hashable:
    return str(k) if isinstance(k, Keyword) else k


def _atom(a: str) -> Any:
    if a == "nil":
        return None
    if a in ("true", "false"):
        return a == "true"
    if _INT.fullmatch(a):
        return int(a)
    if a.startswith(":"):
        return Keyword(a[1:])
    try:
        return float(a)
    except ValueError:
        return Keyword(a)  # a bare symbol; nothing in the data uses one


def _lines(source: str | Path | Iterable[str]) -> list[str]:
    if isinstance(source, Path):
        return source.read_text(encoding="utf-8").splitlines()
    if isinstance(source, str):
        return source.splitlines()
    return list(source)


class _Builder:
    """Pairs invocations with completions per process, as Jepsen logs are written."""

    def __init__(self) -> None:
        self.pending: dict[Any, tuple[str, Any, Any, int]] = {}
        self.ops: list[Operation] = []

    def invoke(self, proc: Any, f: str, value: Any, key: Any, t: int) -> None:
        if proc in self.pending:
            # A process never runs two ops at once; if it seems to, the earlier one's end was lost.
            self.close(proc, Status.UNKNOWN, None, t)
        self.pending[proc] = (f, value, key, t)

    def close(self, proc: Any, status: Status, result: Any, t: int) -> None:
        if proc not in self.pending:
            raise ValueError(f"completion for process {proc} with no pending invocation (line {t + 1})")
        f, value, key, start = self.pending.pop(proc)
        complete = None if status is Status.UNKNOWN else t
        self.ops.append(Operation(proc, f, value, result if status is Status.OK else None, status,
                                  start, complete, key))

    def finish(self, metadata: dict[str, Any]) -> History:
        for proc in list(self.pending):
            self.close(proc, Status.UNKNOWN, None, 0)
        self.ops.sort(key=lambda op: op.invoke)
        return History(self.ops, metadata)


def parse_etcd_log(source: str | Path | Iterable[str]) -> History:
    """Parse a Jepsen etcd register log (text, path, or lines) into a single-key history."""
    b = _Builder()
    for t, line in enumerate(_lines(source)):
        m = _ETCD_LINE.match(line.strip())
        if not m:
            continue  # nemesis and other log lines carry no operation
        proc_text, typ, f = m.group("proc"), m.group("type")[1:], m.group("f")[1:]
        if not _INT.fullmatch(proc_text):
            continue  # e.g. ":nemesis"
        proc = int(proc_text)
        rest = m.group("rest").strip()
        value = parse_edn(rest) if rest else None
        if typ == "invoke":
            b.invoke(proc, f, value, None, t)
        elif typ == "ok":
            b.close(proc, Status.OK, True if f == "cas" else value, t)
        elif typ == "fail" and f == "cas" and not isinstance(value, Keyword):
            b.close(proc, Status.OK, False, t)  # the cas ran and found another value
        elif typ == "fail" and isinstance(value, Keyword):
            b.close(proc, Status.UNKNOWN, None, t)  # e.g. ":fail :read :timed-out"
        elif typ == "fail":
            b.close(proc, Status.FAIL, None, t)
        # ":info" leaves the operation pending, i.e. indeterminate.
    return b.finish({"model": {"name": "register", "initial": None}})


def parse_kv(source: str | Path | Iterable[str]) -> History:
    """Parse kv EDN lines (text, path, or lines) into a multi-key get/put/append history."""
    b = _Builder()
    for t, line in enumerate(_lines(source)):
        if not line.strip():
            continue
        d = parse_edn(line)
        proc, typ, f, key, value = d["process"], str(d["type"]), str(d["f"]), d.get("key"), d.get("value")
        if typ == "invoke":
            b.invoke(proc, f, None if f == "get" else value, key, t)
        elif typ == "ok":
            b.close(proc, Status.OK, value if f == "get" else None, t)
        elif typ == "fail":
            b.close(proc, Status.FAIL, None, t)
        elif typ == "info":
            b.close(proc, Status.UNKNOWN, None, t)
    return b.finish({"model": {"name": "kv", "initial": ""}})


def load_file(path: str | Path) -> History:
    """Load a history from a lincheck JSON file, a Jepsen etcd log or a kv EDN file (sniffed)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{:"):
        return parse_kv(text)
    if stripped.startswith("{"):
        return loads(text)
    if _ETCD_LINE.match(stripped.split("\n", 1)[0]) or not stripped:
        return parse_etcd_log(text)
    raise ValueError(f"{path}: not a lincheck JSON history, Jepsen etcd log or kv EDN file")

"""Client loops and figures shared by the rafted and PySyncObj benchmarks (standard library only).

Both ``scripts/bench_rafted.py`` (on the rafted member nodes) and the PySyncObj worker processes
(``scripts/bench_pysyncobj.py``, run by a separate virtual environment's Python) import this
module, so it must not import anything outside the standard library.

A client loop issues one operation after the other until a deadline; every operation that
completes inside the measured interval ``[t_start, t_start + duration)`` counts, with its latency
(``time.perf_counter``) and the 0.5 s window it completed in.  ``perf_counter`` is
CLOCK_MONOTONIC on Linux, the same clock in every process of the machine, so a start time handed
from one process to another means the same instant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

WINDOW_S = 0.5


class ClientResult:
    """What one client measured: latencies (s) of successful operations, per-window counts, errors."""

    __slots__ = ("latencies", "windows", "errors", "last_error")

    def __init__(self, n_windows: int) -> None:
        self.latencies: list[float] = []
        self.windows = [0] * n_windows
        self.errors = 0
        self.last_error: Any = None

    def as_tuple(self) -> tuple:
        return (self.latencies, self.windows, self.errors, repr(self.last_error))


def n_windows(duration_s: float, window_s: float = WINDOW_S) -> int:
    return max(1, math.ceil(duration_s / window_s - 1e-9))


def client_loop(op: Callable[[], Any], ok: Callable[[Any], bool], t_start: float, duration_s: float,
                window_s: float = WINDOW_S) -> ClientResult:
    """Call ``op()`` back to back from now until ``t_start + duration_s``.

    Operations before ``t_start`` are the warm-up: done, not counted.  ``ok(result)`` tells a
    success; an exception counts as an error too.
    """
    clock = time.perf_counter
    deadline = t_start + duration_s
    result = ClientResult(n_windows(duration_s, window_s))
    latencies = result.latencies
    windows = result.windows
    last = len(windows) - 1
    while True:
        began = clock()
        if began >= deadline:
            break
        try:
            ret = op()
            good = ok(ret)
        except Exception as exc:  # noqa: BLE001 - an error is a figure, not a crash
            ret, good = exc, False
        ended = clock()
        if began < t_start or ended >= deadline:
            continue
        if not good:
            result.errors += 1
            result.last_error = ret
            continue
        latencies.append(ended - began)
        windows[min(last, int((ended - t_start) / window_s))] += 1
    return result


def nearest_rank(ordered: list[float], point: float) -> float:
    rank = max(1, math.ceil(point / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(results: Iterable[tuple], duration_s: float, window_s: float = WINDOW_S) -> dict[str, Any]:
    """Merge ``ClientResult.as_tuple()`` values into ops/s, p50/p99 (ms), errors and window rates."""
    latencies: list[float] = []
    windows: list[int] = []
    errors = 0
    clients = 0
    last_error = None
    for lat, win, err, last in results:
        clients += 1
        latencies.extend(lat)
        if not windows:
            windows = list(win)
        else:
            windows = [a + b for a, b in zip(windows, win, strict=True)]
        errors += err
        if err:
            last_error = last
    latencies.sort()
    figures: dict[str, Any] = {
        "clients": clients,
        "ops": len(latencies),
        "ops_per_s": round(len(latencies) / duration_s),
        "p50_ms": round(nearest_rank(latencies, 50) * 1000, 3) if latencies else None,
        "p99_ms": round(nearest_rank(latencies, 99) * 1000, 3) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "errors": errors,
        "window_rates": [round(count / window_s) for count in windows],
    }
    if last_error is not None:
        figures["last_error"] = last_error
    return figures


def window_figures(rates: list[int]) -> dict[str, Any]:
    """min / median of the per-window rates and how many windows fell below half the median."""
    if not rates:
        return {"window_s": WINDOW_S, "rates": [], "min": None, "median": None, "below_half_median": None}
    ordered = sorted(rates)
    median = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1]
                                                                  + ordered[len(ordered) // 2]) / 2
    return {
        "window_s": WINDOW_S,
        "rates": rates,
        "min": ordered[0],
        "median": round(median),
        "below_half_median": sum(1 for r in rates if r < median / 2),
    }

"""Client loops and figures shared by the rafted and PySyncObj benchmarks (standard library only).

Both ``scripts/bench_rafted.py`` (on the rafted member nodes) and the PySyncObj worker processes
(``scripts/bench_pysyncobj.py``, run by a separate virtual environment's Python) import this
module (and ``scripts/demo.py`` its ``free_port``), so it must not import anything outside the
standard library.

A client loop issues one operation after the other until a deadline; every operation that
completes inside the measured interval ``[t_start, t_start + duration)`` counts, with its latency
(``time.perf_counter``, kept in a histogram of 0.5 %-wide buckets) and the 0.5 s window it
completed in.  ``perf_counter`` is
CLOCK_MONOTONIC on Linux, the same clock in every process of the machine, so a start time handed
from one process to another means the same instant.
"""

from __future__ import annotations

import math
import os
import random
import socket
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

WINDOW_S = 0.5


BUCKETS_PER_E = 200  # latency histogram: buckets e**(1/200) apart, i.e. 0.5 % wide


def bucket(latency_s: float) -> int:
    return int(math.log(max(latency_s, 1e-7) * 1e6) * BUCKETS_PER_E)


def bucket_value_s(b: int) -> float:
    return math.exp((b + 0.5) / BUCKETS_PER_E) / 1e6


class ClientResult:
    """What one client measured: a latency histogram of successful operations (bucket -> count),
    the slowest one, per-window counts and errors, and how many operations succeeded outside
    the measured time (in the warm-up, or running over its end): proof that the clients ran
    even when a starved machine completes none inside a short window.

    A histogram rather than a list of samples, so that the client's own memory stays flat however
    long it runs: the clients run on a member's node, whose resident memory is measured.
    """

    __slots__ = ("hist", "max_s", "windows", "errors", "last_error", "outside")

    def __init__(self, n_windows: int) -> None:
        self.hist: dict[int, int] = {}
        self.max_s = 0.0
        self.windows = [0] * n_windows
        self.errors = 0
        self.last_error: Any = None
        self.outside = 0

    def as_tuple(self) -> tuple:
        return (self.hist, self.max_s, self.windows, self.errors, repr(self.last_error), self.outside)


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
    hist = result.hist
    windows = result.windows
    log = math.log
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
            if good:
                result.outside += 1
            continue
        if not good:
            result.errors += 1
            result.last_error = ret
            continue
        latency = ended - began
        b = int(log(latency * 1e6) * BUCKETS_PER_E) if latency > 1e-7 else 0
        hist[b] = hist.get(b, 0) + 1
        if latency > result.max_s:
            result.max_s = latency
        windows[min(last, int((ended - t_start) / window_s))] += 1
    return result


def hist_percentile(ordered: list[tuple[int, int]], total: int, point: float) -> float:
    """Nearest-rank percentile (s) of a histogram given as sorted (bucket, count) pairs."""
    rank = max(1, math.ceil(point / 100 * total))
    seen = 0
    for b, count in ordered:
        seen += count
        if seen >= rank:
            return bucket_value_s(b)
    return bucket_value_s(ordered[-1][0])


def summarize(results: Iterable[tuple], duration_s: float, window_s: float = WINDOW_S) -> dict[str, Any]:
    """Merge ``ClientResult.as_tuple()`` values into ops/s, p50/p99 (ms, to 0.5 %), errors, window rates."""
    hist: dict[int, int] = {}
    windows: list[int] = []
    errors = 0
    clients = 0
    max_s = 0.0
    last_error = None
    outside = 0
    for h, mx, win, err, last, out in results:
        outside += out
        clients += 1
        for b, count in h.items():
            hist[b] = hist.get(b, 0) + count
        max_s = max(max_s, mx)
        if not windows:
            windows = list(win)
        else:
            windows = [a + b for a, b in zip(windows, win, strict=True)]
        errors += err
        if err:
            last_error = last
    ordered = sorted(hist.items())
    ops = sum(hist.values())
    figures: dict[str, Any] = {
        "clients": clients,
        "ops": ops,
        "ops_per_s": round(ops / duration_s),
        "p50_ms": round(hist_percentile(ordered, ops, 50) * 1000, 3) if ops else None,
        "p99_ms": round(hist_percentile(ordered, ops, 99) * 1000, 3) if ops else None,
        "max_ms": round(max_s * 1000, 1) if ops else None,
        "errors": errors,
        "window_rates": [round(count / window_s) for count in windows],
        "ops_outside_window": outside,
    }
    if last_error is not None:
        figures["last_error"] = last_error
    return figures


def window_figures(rates: list[int]) -> dict[str, Any]:
    """min / median of the per-window rates and how many windows fell below half the median."""
    if not rates:
        return {"window_s": WINDOW_S, "rates": [], "min": None, "median": None, "below_half_median": None}
    median = statistics.median(rates)
    return {
        "window_s": WINDOW_S,
        "rates": rates,
        "min": min(rates),
        "median": round(median),
        "below_half_median": sum(1 for r in rates if r < median / 2),
    }


def crash_moment(period_s: float) -> float:
    """Sleep until a random moment within the next ``period_s`` (a heartbeat interval); return the wait.

    A failover try kills the leader right after checking it is healthy, and that check (a
    command) has just reset every follower's election timer.  A real crash comes at any moment
    between two heartbeats, so the kill waits a uniformly random part of the heartbeat interval
    first: without it every try measured the worst heartbeat phase (the followers had heard from
    the leader 1-2 ms before the kill in 10 of 10 traced tries).
    """
    wait = random.uniform(0, period_s)
    time.sleep(wait)
    return wait


def failover_figures(times: list[float], elections: list[int], waits: list[float]) -> dict[str, Any]:
    """Median / max / min of the failover ``times`` (s), the most elections one took, and the
    ``waits`` (s) between the health check and the kill (see :func:`crash_moment`)."""
    return {"tries": len(times), "median": round(statistics.median(times), 3), "max": round(max(times), 3),
            "min": round(min(times), 3), "elections_max": max(elections),
            "times": [round(t, 3) for t in times], "elections": elections,
            "kill_after_check_s": [round(w, 3) for w in waits]}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` different TCP ports free on 127.0.0.1 right now, outside the kernel's ephemeral range.

    Outside it, because every outgoing connection on the machine takes its source port from that
    range, and a listener cannot bind a port an open connection uses: a port picked inside it
    may be taken between the pick and its user's bind (an epmd test once failed so, both of its
    racing epmds refused with EADDRINUSE, while other suites ran). All ``n`` are held at once
    while they are picked: picked one after the other, the same port could come twice (a
    PySyncObj group of three once got two members on one port and never elected a leader).
    """
    pool = _ports_outside_ephemeral_range()
    socks: list[socket.socket] = []
    try:
        for _ in range(100 * n):
            s = socket.socket()
            try:
                # no SO_REUSEADDR: a port still in TIME_WAIT counts as taken
                s.bind(("127.0.0.1", _port_picker.choice(pool) if pool else 0))
            except OSError:
                s.close()
                continue
            socks.append(s)
            if len(socks) == n:
                return [int(s.getsockname()[1]) for s in socks]
        raise OSError(f"no {n} free TCP ports found on 127.0.0.1")
    finally:
        for s in socks:
            s.close()


# its own generator: a test that seeds ``random`` must not make two suites pick the same ports
_port_picker = random.Random(os.urandom(16))


def _ports_outside_ephemeral_range() -> range | None:
    """Ports no outgoing connection takes as its source port: below the kernel's ephemeral
    range (``/proc/sys/net/ipv4/ip_local_port_range``), else above it; None if neither side
    has room (any free port then)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    for pool in (range(10_000, low), range(high + 1, 65_536)):
        if len(pool) >= 1_000:
            return pool
    return None


def pin_leader(leader_pid: int, other_pids: Iterable[int], cpu: int = 0) -> None:
    """``--pin-leader``: the leader's process on ``cpu``, the others on any CPU.

    As ``$NODES_CPU`` does for a node, ZeroMQ's I/O threads (which need no GIL) are left free.
    Threads the leader's process starts later (the client threads) inherit the mask. Linux only
    (``/proc/<pid>/task``); a thread that ends meanwhile is skipped.
    """
    everywhere = os.sched_getaffinity(0)
    for pid, mask in [(leader_pid, {cpu}), *((p, everywhere) for p in other_pids)]:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    zmq_thread = f.read().startswith("ZMQbg")
                os.sched_setaffinity(int(tid), everywhere if zmq_thread else mask)
            except OSError:
                pass

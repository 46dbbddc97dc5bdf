"""Thread scheduling for the runtime's own threads (process threads, the transport's I/O thread,
the timers' thread): ``SCHED_BATCH``, the CPUs of ``$NODES_CPU``, holding one CPU while a
process asks for it, and keeping off the CPUs other nodes of this host hold.

Kept apart so that both ``process`` and ``transport`` can use it without knowing each other.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time

from ._held_cpus import HoldBoard
from ._procfs import stat_fields

_SCHED_BATCH = os.environ.get("NODES_SCHED_BATCH", "1") != "0" and hasattr(os, "SCHED_BATCH")
_HOLD = os.environ.get("NODES_HOLD_CPU", "1") != "0" and hasattr(os, "sched_setaffinity")
_WATCH = os.environ.get("NODES_HOLD_CPU_WATCH", "1") != "0"
_KEEP_OFF = os.environ.get("NODES_KEEP_OFF_HELD", "1") != "0"


def _parse_cpus(value: str | None) -> set[int] | None:
    if not value:
        return None
    try:
        cpus = {int(part) for part in value.split(",")}
    except ValueError:
        cpus = set()
    if not cpus or min(cpus) < 0:
        raise ValueError(f"NODES_CPU must be CPU numbers like '0' or '0,1', got {value!r}")
    return cpus


_CPUS = _parse_cpus(os.environ.get("NODES_CPU"))

# Runtime threads alive now (native thread ids), the CPUs they are kept on (None: any the
# process may use, or $NODES_CPU), and who holds one CPU (see hold_one_cpu).
_lock = threading.Lock()
_threads: set[int] = set()
_held: set[object] = set()
_held_cpu: int | None = None
_EVERYWHERE = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


def batch_scheduling() -> None:
    """Set up a runtime thread's scheduling: ``SCHED_BATCH``, and the CPUs of ``$NODES_CPU``.

    Call :func:`thread_done` when the thread ends.

    **CPUs.**  With ``$NODES_CPU`` (``"0"``, ``"0,1"``) every runtime thread is kept on those
    CPUs; ZeroMQ's own I/O thread, which needs no GIL, and the threads of an embedding program
    are not.  The runtime's threads take turns holding the GIL, and handing it to a thread
    on another CPU costs a cross-CPU wake-up: on a 2-core VM, keeping the busiest node (the
    leader and its 32 clients) on one CPU took it from 87-110 to 53-61 µs of CPU per command
    and the group from about 8,000 to 12,000-13,000 commands/s.  Without ``$NODES_CPU``, the
    same happens while a process holds one CPU (:func:`hold_one_cpu`).

    **SCHED_BATCH** (``$NODES_SCHED_BATCH=0``: don't): the calling thread under Linux's
    ``SCHED_BATCH`` policy.

    A thread woken by a message can only run once it holds the GIL, and usually the thread
    that woke it holds the GIL.  Under the default policy the woken thread may preempt that
    thread on its CPU: two context switches during which no Python thread of the node runs.
    ``SCHED_BATCH`` turns off that wake-up preemption only; priorities and time slices stay.
    Measured on a 2-core VM (32 rafted clients): 0.9 -> 0.1 involuntary switches per command
    on the leader's node, 8-15 % more commands per second.  Used for process threads, the
    transport's I/O thread and the timers' thread, never for the threads of an embedding program.
    """
    if _SCHED_BATCH:
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:  # not permitted here (a sandbox): the default policy is only slower
            pass
    if _CPUS is not None:
        try:
            os.sched_setaffinity(0, _CPUS)  # 0: the calling thread (Linux affinity is per thread)
        except (OSError, AttributeError) as error:  # no such CPU here, or not Linux
            _warn_once(f"NODES_CPU={','.join(map(str, sorted(_CPUS)))} cannot be applied: {error}")
    if _HOLD:
        with _lock:
            _threads.add(threading.get_native_id())
            if _held_cpu is not None:
                _set_affinity(0, {_held_cpu})
            elif _kept_off:
                _set_affinity(0, _unheld_cpus())


def thread_done() -> None:
    """The calling runtime thread ends: it is no longer moved by :func:`hold_one_cpu`."""
    if _HOLD:
        with _lock:
            _threads.discard(threading.get_native_id())


def hold_one_cpu(holder: object, hold: bool) -> bool:
    """Keep every runtime thread of this node on one CPU while at least one holder wants it.

    The node's threads share one GIL, so they run one at a time anyway; on one CPU, handing
    the GIL from one to the next is a context switch instead of a wake-up of another CPU,
    which on a virtual machine costs tens of microseconds.  The CPU is the one the first
    holder's thread is running on when it asks.  ZeroMQ's I/O threads and the threads of an
    embedding program are left free.  If other programs keep that CPU busy, the hold moves to
    a less busy one (see ``_watch``; ``$NODES_HOLD_CPU_WATCH=0``: it stays).  Threads a held
    thread starts inherit its CPU (Linux); :func:`unheld_thread` undoes that.  Returns whether
    the threads are held now; never with ``$NODES_CPU`` (the explicit choice stands) or
    ``$NODES_HOLD_CPU=0``.
    """
    global _held_cpu
    if not _HOLD or _CPUS is not None:
        return False
    with _lock:
        if hold:
            _held.add(holder)
        else:
            _held.discard(holder)
        if _held and _held_cpu is None:
            _held_cpu = _current_cpu()
            if _held_cpu is None:
                return False
            _move_threads({_held_cpu})
            _start_watcher()
            _announce(_held_cpu)
        elif not _held and _held_cpu is not None:
            _held_cpu = None
            _move_threads(_unheld_cpus())
            _announce(None)
        return _held_cpu is not None


def _move_threads(cpus: set[int]) -> None:
    """Every registered runtime thread to ``cpus``; the caller holds ``_lock``."""
    for tid in list(_threads):
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            _threads.discard(tid)  # ended without saying so (a killed interpreter)
        except OSError as error:  # a CPU set that shrank, a sandbox: stay where it is
            _warn_once(f"nodes: cannot move runtime threads to CPUs {sorted(cpus)}: {error}")


def unheld_thread() -> None:
    """For a helper thread started by a runtime thread: undo the held CPU it inherited.

    Linux gives a new thread its creator's CPUs, so a thread started by a held thread is
    held too, though it is no runtime thread and would never be let go.
    """
    if _held_cpu is not None:
        _set_affinity(0, _CPUS if _CPUS is not None else _EVERYWHERE)


def _forget_after_fork() -> None:
    # a forked child has one thread: the parent's thread ids name the parent's threads
    global _lock, _held_cpu, _watcher, _board, _kept_off, _looker_stop
    _lock = threading.Lock()
    _threads.clear()
    _held.clear()
    _held_cpu = None
    _watcher = None
    _board, _looker_stop, _kept_off = None, None, frozenset()  # the board knows the parent's pid


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# -- moving away from a CPU that other programs keep busy ----------------------------------------
#
# The CPU is chosen once, where the first holder happened to run.  If other programs then keep
# it busy (another node holding the same CPU, a batch job), the held threads would wait for it
# while another CPU idles: every WATCH_INTERVAL a watcher thread (alive only while a hold is)
# compares, from /proc/stat, how busy each allowed CPU was with work that is not this node's
# runtime threads, and moves the hold to the least busy CPU when the held one was busy with
# others' work more than MOVE_WHEN_BUSY of the time and the other at least MOVE_MARGIN less,
# over the last interval and over two short looks after it (RECHECK_INTERVAL, FINAL_LOOK).

WATCH_INTERVAL = 1.0  # s
RECHECK_INTERVAL = 0.25  # s
FINAL_LOOK = 0.15  # s
# Two busy nodes sharing a CPU get about half of it each: each must see that as a reason to move.
MOVE_WHEN_BUSY = 0.35
MOVE_MARGIN = 0.2
_watcher: threading.Thread | None = None


def _start_watcher() -> None:
    """Start the watcher if none runs; the caller holds ``_lock``."""
    global _watcher
    if _WATCH and _watcher is None and len(_EVERYWHERE) > 1:
        _watcher = threading.Thread(target=_watch, name="nodes-cpu-hold", daemon=True)
        _watcher.start()


def _watch() -> None:
    global _watcher, _held_cpu
    unheld_thread()  # started by a held thread, it would run on the CPU it watches
    before = _sample()
    while True:
        time.sleep(WATCH_INTERVAL)
        now = _sample()
        with _lock:
            if _held_cpu is None:
                _watcher = None
                return
            held = _held_cpu
        if _less_busy_cpu(held, before, now) is not None:
            # Two nodes holding one CPU both see the other's work there: each waits a random
            # while and looks again over a short window, so the one that moves first is seen
            # gone by the other, which stays (both moving at once would swap them together).
            time.sleep(random.uniform(0, WATCH_INTERVAL))
            start = _sample()
            time.sleep(RECHECK_INTERVAL)
            now = _sample()
            target = _less_busy_cpu(held, start, now)
            if target is not None:
                # and once more, over a window wholly after that one: a node that moved away
                # during the look above shows up on the target here, instead of both moving
                time.sleep(FINAL_LOOK)
                last = _sample()
                if _less_busy_cpu(held, now, last) != target:
                    target = None
                now = last
            with _lock:
                if target is not None and _held_cpu == held:
                    _held_cpu = target
                    _move_threads({target})
                    _announce(target)
                    _log.info("nodes: runtime threads held on CPU %d now (CPU %d was busy)", target, held)
        before = now


def _less_busy_cpu(held: int, before: tuple[float, dict[int, int], int],
                   now: tuple[float, dict[int, int], int]) -> int | None:
    """The CPU to move to between two samples (see above), or None to stay."""
    (t0, busy0, own0), (t1, busy1, own1) = before, now
    ticks = os.sysconf("SC_CLK_TCK") * (t1 - t0)
    others = {cpu: busy1[cpu] - busy0[cpu] for cpu in _EVERYWHERE if cpu in busy0 and cpu in busy1}
    if held not in others or ticks <= 0:
        return None
    # this node's runtime threads ran on the held CPU only: what is left is others' work (the
    # node's other threads, ZeroMQ's, may have run elsewhere: counting them errs towards staying)
    others[held] -= own1 - own0
    best = min(others, key=lambda cpu: others[cpu])
    if others[held] > MOVE_WHEN_BUSY * ticks and others[best] < others[held] - MOVE_MARGIN * ticks:
        return best
    return None


def _sample() -> tuple[float, dict[int, int], int]:
    return time.monotonic(), _cpu_busy(), _own_cpu_time()


def _cpu_busy() -> dict[int, int]:
    """Per CPU, clock ticks spent running anything (user, nice, system, irq, softirq)."""
    busy: dict[int, int] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    fields = line.split()
                    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
                    busy[int(fields[0][3:])] = user + nice + system + irq + softirq
    except (OSError, ValueError):
        pass
    return busy


def _own_cpu_time() -> int:
    """Clock ticks this OS process has run, every thread's, ended ones' too (utime + stime)."""
    try:
        fields = stat_fields("/proc/self/stat")
        return int(fields[14]) + int(fields[15])
    except (OSError, ValueError, IndexError):
        return 0


def holder_gone(holder: object) -> None:
    """``holder`` ended (a process that exited): its hold, if any, ends with it."""
    if holder in _held:
        hold_one_cpu(holder, False)


def _current_cpu() -> int | None:
    """The CPU the calling thread runs on (field 39 of /proc/thread-self/stat), or None."""
    try:
        return int(stat_fields("/proc/thread-self/stat")[39])
    except (OSError, ValueError, IndexError):
        return None


def _set_affinity(tid: int, cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(tid, cpus)
    except OSError:
        pass  # a thread that is gone, a CPU set that shrank: it stays as it is


# -- keeping off the CPUs that other nodes of this host hold -----------------------------------------
#
# A group's leader holds one CPU because its node does most of the work. When the group's
# other members run on the same host (a test, a benchmark, a small deployment), the kernel
# spreads their threads over every CPU, the held one too, where they take turns with the
# leader's threads. So the nodes that share a port-mapper tell each other their holds (see
# nodes._held_cpus), and a node that holds no CPU keeps its runtime threads off the CPUs the
# others hold, as long as one is left. Measured on the 2-core benchmark VM (3 members, both
# followers then sharing the CPU the leader does not hold), in alternating pairs of 10-40 s
# runs: one client's p50 0.33-0.39 ms in every run with it, 0.32-0.50 without (the slow runs
# are those in which followers' threads ran on the leader's CPU); 32 clients 4.7 % fewer
# commands/s on average over ten pairs (lower in six), and in two 60 s full runs with it
# 33,533 and 32,687 against 33,951 without, where one client's p50 was 0.370 and 0.409 ms
# against 0.429. ``$NODES_KEEP_OFF_HELD=0``: this node neither tells its holds nor keeps off
# others'.

LOOK_INTERVAL = 1.0  # s between two looks at the board
_board: HoldBoard | None = None
_kept_off: frozenset[int] = frozenset()  # CPUs other nodes hold, as last seen
_looker_stop: threading.Event | None = None


def share_holds(epmd_port: int) -> None:
    """This node is distributed now, its port-mapper on ``epmd_port``: tell its holds to the
    other nodes of that port-mapper and keep off theirs, until :func:`stop_sharing`."""
    global _board, _looker_stop
    if not (_KEEP_OFF and _HOLD and _CPUS is None and len(_EVERYWHERE) > 1):
        return
    with _lock:
        if _board is not None:
            return
        _board = HoldBoard(epmd_port)
        _looker_stop = threading.Event()
        if _held_cpu is not None:
            _board.announce(_held_cpu)
    threading.Thread(target=_look, args=(_board, _looker_stop), name="nodes-held-cpus", daemon=True).start()


def stop_sharing() -> None:
    """Distribution stopped: take this node's hold off the board, stop keeping off others'."""
    global _board, _kept_off, _looker_stop
    with _lock:
        board, stop = _board, _looker_stop
        _board, _looker_stop = None, None
        if board is None or stop is None:
            return
        stop.set()
        board.leave()
        if _kept_off:
            _kept_off = frozenset()
            if _held_cpu is None:
                _move_threads(_EVERYWHERE)


def _announce(cpu: int | None) -> None:
    """This node's hold changed (the caller holds ``_lock``)."""
    if _board is not None:
        _board.announce(cpu)


def _unheld_cpus() -> set[int]:
    """Where the runtime threads of a node that holds no CPU may run: off the others' holds."""
    free = _EVERYWHERE - _kept_off
    return free if free else set(_EVERYWHERE)


def _look(board: HoldBoard, stop: threading.Event) -> None:
    global _kept_off
    unheld_thread()
    board.sweep()
    while not stop.wait(LOOK_INTERVAL):
        others = board.others()
        with _lock:
            if stop.is_set() or others == _kept_off:
                continue
            _kept_off = others
            if _held_cpu is None:
                _move_threads(_unheld_cpus())


_log = logging.getLogger("nodes")
_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        _log.warning("%s", text)

"""Thread scheduling for the runtime's own threads (process threads, the transport's I/O thread):
``SCHED_BATCH`` and, with ``$NODES_CPU``, the CPUs they may run on.

Kept apart so that both ``process`` and ``transport`` can use it without knowing each other.
"""

from __future__ import annotations

import logging
import os

_SCHED_BATCH = os.environ.get("NODES_SCHED_BATCH", "1") != "0" and hasattr(os, "SCHED_BATCH")


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


def batch_scheduling() -> None:
    """Set up a runtime thread's scheduling: ``SCHED_BATCH``, and the CPUs of ``$NODES_CPU``.

    **CPUs.**  With ``$NODES_CPU`` (``"0"``, ``"0,1"``) every runtime thread is kept on those
    CPUs; ZeroMQ's own I/O thread, which needs no GIL, and the threads of an embedding program
    are not.  The runtime's threads take turns holding the GIL, and handing it to a thread
    on another CPU costs a cross-CPU wake-up: on a 2-core VM, keeping the busiest node (the
    leader and its 32 clients) on one CPU took it from 87-110 to 53-61 µs of CPU per command
    and the group from about 8,000 to 12,000-13,000 commands/s.

    **SCHED_BATCH** (``$NODES_SCHED_BATCH=0``: don't): the calling thread under Linux's
    ``SCHED_BATCH`` policy.

    A thread woken by a message can only run once it holds the GIL, and usually the thread
    that woke it holds the GIL.  Under the default policy the woken thread may preempt that
    thread on its CPU: two context switches during which no Python thread of the node runs.
    ``SCHED_BATCH`` turns off that wake-up preemption only; priorities and time slices stay.
    Measured on a 2-core VM (32 rafted clients): 0.9 -> 0.1 involuntary switches per command
    on the leader's node, 8-15 % more commands per second.  Used for process threads and the
    transport's I/O thread, never for the threads of an embedding program.
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


_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        logging.getLogger("nodes").warning("%s", text)

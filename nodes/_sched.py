"""Thread scheduling for the runtime's own threads (process threads, the transport's I/O thread).

Kept apart so that both ``process`` and ``transport`` can use it without knowing each other.
"""

from __future__ import annotations

import os

_SCHED_BATCH = os.environ.get("NODES_SCHED_BATCH", "1") != "0" and hasattr(os, "SCHED_BATCH")


def batch_scheduling() -> None:
    """Put the calling thread under Linux's ``SCHED_BATCH`` policy (``$NODES_SCHED_BATCH=0``: don't).

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

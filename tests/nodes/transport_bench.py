"""Round-trip latency and throughput between two node OS processes over nodes.transport.

    .venv/bin/python tests/nodes/transport_bench.py [--round-trips 5000] [--messages 100000] [--spin-us 0]

This process runs one node, a transport_peer.py child the other; both on a private epmd port
(cleaned up at the end).  Reported:

* round trip: send ``("echo", i)``, the peer's I/O thread sends ``i`` back, and this process's
  main thread takes it from a queue (so it includes one thread hand-off on each side's
  receiving end, as a mailbox delivery would);
* pipelined echo: N echoes in flight at once, messages/s back;
* one-way: the peer sends N messages as fast as it can, messages/s received here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]  # tests/nodes, tests

import transport_support as support  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--queued-only", action="store_true",
                        help="NODES_DIRECT_SEND=0 for both nodes: every send goes through the I/O thread")
    args = parser.parse_args()
    os.environ["NODES_DIRECT_SEND"] = "0" if args.queued_only else "1"
    t_name, a_name = "bench_t@127.0.0.1", "bench_a@127.0.0.1"
    with support.cluster(Path(tempfile.mkdtemp())) as c:
        t = c.local(t_name)
        c.peer(a_name)
        assert t.transport.connect(a_name)
        send, get = t.transport.send, t.messages.get
        for i in range(500):  # warm up
            send(a_name, ("echo", i))
            get()
        wakeups = t.transport.stats["wakeups"]
        samples = []
        for i in range(args.round_trips):
            start = time.perf_counter()
            send(a_name, ("echo", i))
            get()
            samples.append(time.perf_counter() - start)
        samples.sort()
        n = len(samples)

        def pct(p: float) -> float:
            return samples[min(n - 1, int(n * p))] * 1e6

        woken = t.transport.stats["wakeups"] - wakeups
        print(f"round trip over {n}: p50 {pct(0.5):.0f} µs, p90 {pct(0.9):.0f} µs, p99 {pct(0.99):.0f} µs, "
              f"max {samples[-1] * 1e6:.0f} µs; wake-ups of the I/O thread {woken}")

        m = args.messages
        frames = t.transport.stats["frames_sent"]
        start = time.perf_counter()
        for i in range(m):
            send(a_name, ("echo", i))
        for _ in range(m):
            get()
        elapsed = time.perf_counter() - start
        print(f"pipelined echo: {m / elapsed:,.0f} messages/s back "
              f"({m / max(1, t.transport.stats['frames_sent'] - frames):.0f} messages per frame sent)")

        start = time.perf_counter()
        t.transport.send(a_name, ("call", "flood", "flood", t_name, m))
        for _ in range(m + 1):
            get()
        elapsed = time.perf_counter() - start
        print(f"one way: {m / elapsed:,.0f} messages/s received")
    return 0


if __name__ == "__main__":
    sys.exit(main())

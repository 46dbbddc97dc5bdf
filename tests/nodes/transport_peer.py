"""A :class:`nodes.transport.Transport` alone in its own OS process, driven by messages.

Used by the transport tests and the benchmark::

    python tests/nodes/transport_peer.py NAME@HOST --cookie C [--tick-ms N] [--creation N] [--connect NODE]

Prints ``READY <port> <creation>`` on stdout once listening (and connected to ``--connect``),
then serves until SIGTERM, SIGINT or a ``stop`` call.  Messages it understands (from any connected node):

* ``("echo", x)``: sends ``x`` back to the sender node (on the transport's I/O thread).
* ``("call", ref, op, *args)``: runs ``op`` on a worker thread (``connect`` blocks) and answers
  ``("reply", ref, result)``.  Ops: ``connect node``, ``disconnect node``, ``nodes``,
  ``events`` (the ``("up", node, creation)`` / ``("down", node)`` seen so far), ``send node obj``,
  ``flood node n`` (sends ``("flood", i)`` for i in range(n)), ``stop``.

Anything else is logged and ignored.  The epmd port comes from ``NODES_EPMD_PORT``.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
from typing import Any

from nodes.transport import Transport


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--tick-ms", type=int, default=None)
    parser.add_argument("--creation", type=int, default=None)
    parser.add_argument("--connect", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("TRANSPORT_PEER_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    stop = threading.Event()
    calls: queue.Queue[tuple[str, Any]] = queue.Queue()
    events: list[tuple[Any, ...]] = []
    transport: Transport

    def on_message(frm: str, obj: Any) -> None:
        if type(obj) is tuple and obj and obj[0] == "echo":
            transport.send(frm, obj[1])
        elif type(obj) is tuple and obj and obj[0] == "call":
            calls.put((frm, obj))
        else:
            logging.warning("ignoring %r from %s", obj, frm)

    transport = Transport(
        args.name, args.creation or (os.getpid() << 8 | os.urandom(1)[0]), args.cookie.encode(),
        on_message=on_message,
        on_node_up=lambda node, creation: events.append(("up", node, creation)),
        on_node_down=lambda node: events.append(("down", node)),
        tick_ms=args.tick_ms,
    )

    def serve_calls() -> None:
        while True:
            frm, (_, ref, op, *rest) = calls.get()
            result: Any = None
            try:
                if op == "connect":
                    result = transport.connect(rest[0])
                elif op == "disconnect":
                    result = transport.disconnect(rest[0])
                elif op == "nodes":
                    result = transport.connected_nodes()
                elif op == "events":
                    result = list(events)
                elif op == "send":
                    transport.send(rest[0], rest[1])
                elif op == "flood":
                    for i in range(rest[1]):
                        transport.send(rest[0], ("flood", i))
                elif op == "stop":
                    stop.set()
                else:
                    result = ("error", f"unknown op {op!r}")
            except Exception as error:  # report it to the test instead of dying
                result = ("error", repr(error))
            transport.send(frm, ("reply", ref, result))

    port = transport.start()
    threading.Thread(target=serve_calls, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.connect and not transport.connect(args.connect):
        print(f"FAILED to connect to {args.connect}", flush=True)
    print(f"READY {port} {transport.creation}", flush=True)
    while not stop.wait(0.5):  # a timed wait so signal handlers run promptly
        pass
    transport.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

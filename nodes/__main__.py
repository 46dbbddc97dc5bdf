"""``python -m nodes`` / ``pynode``: start a node, with an interactive shell or headless.

    pynode --sname 1                 node 1@<short hostname>, interactive shell (SIGTERM: stop, exit 0)
    pynode --name n1@192.0.2.1       a long name (the host part is the address to bind and announce)
    pynode --sname 2 --cookie secret the shared cookie (default: $NODES_COOKIE, else ~/.nodes.cookie)
    pynode --sname 3 --noshell       headless until SIGTERM/SIGINT, then stop cleanly and exit 0
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

_LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pynode",
        description="Start an Erlang-style node (nodes runtime) with an interactive Python shell "
                    "in which nodes, rafted and RaftedValue are preloaded.",
        epilog="Name resolution works like epmd: the first node on a host starts a port mapper "
               "(port $NODES_EPMD_PORT, default 4370). Failure detection tick: $NODES_TICK_MS "
               "(default 1000).",
    )
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--sname", metavar="NAME",
                       help="short node name: NAME@<short hostname> (like erl -sname)")
    names.add_argument("--name", metavar="NAME@HOST",
                       help="long node name, e.g. n1@127.0.0.1 (like erl -name)")
    parser.add_argument("--cookie", metavar="C",
                        help="the shared secret; default $NODES_COOKIE, else ~/.nodes.cookie "
                             "(created with mode 0600 on first use)")
    parser.add_argument("--noshell", action="store_true",
                        help="run headless until SIGTERM or SIGINT, then stop the node and exit 0")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=_LOG_LEVELS,
                        help="logging level for the runtime (default WARNING)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from nodes import dist

    name = args.sname if args.sname is not None else args.name  # "" is a bad name, not none
    if args.name is not None and "@" not in args.name:
        parser.error(f"--name needs NAME@HOST, got {args.name!r} (--sname takes a short name)")
    if name is not None:
        try:
            dist.full_name(name)
        except (TypeError, ValueError) as error:
            parser.error(str(error).removeprefix("start: "))  # a usage error: exit 2
    if args.cookie is not None and not args.cookie:
        parser.error("--cookie must not be empty")
    if args.noshell:
        if name is not None and not _start(name, args.cookie):
            return 1
        return _headless()
    from .shell import run_shell

    # As erl since OTP 20: SIGTERM stops the node cleanly (its processes go, links and monitors
    # fire) and the shell exits 0. The handler runs in the main thread, the prompt's, from the
    # start on, so a node being started is stopped too.
    signal.signal(signal.SIGTERM, _exit_0)
    try:
        if name is not None and not _start(name, args.cookie):
            return 1
        run_shell()
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the stop short
        _stop_node()
    return 0


def _start(name: str, cookie: str | None) -> bool:
    """Start the node; False, with the reason on stderr, if it cannot (as erl, which exits)."""
    import zmq

    import nodes
    from nodes import epmd

    try:
        nodes.start(name, cookie=cookie)
    except (epmd.EpmdError, OSError, zmq.ZMQError, ValueError) as error:  # the name is taken, the
        # port-mapper is unreachable, the address is not this host's, the cookie file is empty
        print(f"pynode: cannot start node {name}: {error}", file=sys.stderr)
        return False
    return True


def _exit_0(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _headless() -> int:
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("node started", flush=True)
    while not stopping.wait(0.5):
        pass
    _stop_node()
    return 0


def _stop_node() -> None:
    from . import dist, process

    try:
        process.shutdown_all("shutdown")  # like init:stop(): every process goes, links and monitors fire
        dist.stop()
    except Exception:  # noqa: BLE001 - leaving anyway
        logging.getLogger("nodes").exception("stopping the node failed")


if __name__ == "__main__":
    sys.exit(main())

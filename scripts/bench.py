#!/usr/bin/env python3
"""Benchmarks, one sub-command per scenario.

    .venv/bin/python scripts/bench.py nodes-local              # local message and gen_statem throughput
    .venv/bin/python scripts/bench.py nodes-local --json       # ... and one JSON object on the last line
    .venv/bin/python scripts/bench.py --help                   # every scenario

Each measurement runs for ``--duration`` seconds (default 2.5).  Figures depend on the machine and
on whatever else it is doing; compare runs made on the same machine.

Adding a scenario (nodes-remote, a rafted workload, ...): write a function that takes the parsed
arguments and returns a dict of figures, and register it with ``@scenario``::

    def _add_my_options(parser):
        parser.add_argument("--members", type=int, default=3)

    @scenario("rafted-commands", "commands/s through a 3-member cluster", options=_add_my_options)
    def rafted_commands(args):
        ...
        return {"commands_per_s": rate(n, elapsed), "latency_us": percentiles(latencies_us)}

The helpers below (``run_for``, ``rate``, ``percentiles``, ``report``) keep scenarios short and
their output uniform: figures print as ``name  value``; with ``--json`` the whole dict (plus the
scenario name and the duration) is the last line of output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the project without an install, e.g. ./scripts/bench.py from a checkout


def _ensure_project_python() -> None:
    """Run under the project's .venv when started by a Python that lacks its dependencies."""
    try:
        import pykka  # noqa: F401
    except ImportError:
        venv = ROOT / ".venv"
        venv_python = venv / "bin" / "python"
        if venv_python.exists() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(str(venv_python), [str(venv_python), *sys.argv])
        raise


# -- the scenario registry -----------------------------------------------------------------------

Figures = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str
    run: Callable[[argparse.Namespace], Figures]
    options: Callable[[argparse.ArgumentParser], None] | None = None


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, help: str, options: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register ``fn(args) -> figures`` as the sub-command ``name``."""

    def register(fn: Callable[[argparse.Namespace], Figures]) -> Callable[[argparse.Namespace], Figures]:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} is registered twice")
        SCENARIOS[name] = Scenario(name, help, fn, options)
        return fn

    return register


# -- shared helpers ------------------------------------------------------------------------------

def run_for(duration_s: float, step: Callable[[], int]) -> tuple[int, float]:
    """Call ``step`` (which returns how many operations it did) until ``duration_s`` has passed.

    Returns (operations, elapsed seconds).
    """
    done = 0
    started = time.perf_counter()
    deadline = started + duration_s
    while time.perf_counter() < deadline:
        done += step()
    return done, time.perf_counter() - started


def rate(count: float, elapsed_s: float) -> float:
    """Operations per second, rounded to a whole number."""
    return round(count / elapsed_s) if elapsed_s > 0 else 0.0


def percentiles(samples: Iterable[float], points: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles of ``samples`` as ``{"p50": ..., "p99.9": ..., "max": ...}``."""
    ordered = sorted(samples)
    if not ordered:
        return {}
    result: dict[str, float] = {}
    for point in points:
        rank = max(1, math.ceil(point / 100 * len(ordered)))
        result[f"p{point:g}"] = round(ordered[rank - 1], 1)
    result["max"] = round(ordered[-1], 1)
    return result


def _format(value: Any) -> str:
    if isinstance(value, dict):
        return "  ".join(f"{k} {_format(v)}" for k, v in value.items())
    if isinstance(value, float) and value.is_integer() or isinstance(value, int):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def report(name: str, figures: Figures, args: argparse.Namespace) -> None:
    """Print figures one per line; with ``--json`` also one JSON object as the last line."""
    print(f"{name} ({args.duration:g} s per measurement; Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs)")
    width = max((len(key) for key in figures), default=0)
    for key, value in figures.items():
        print(f"  {key:<{width}}  {_format(value)}")
    if args.json:
        print(json.dumps({"scenario": name, "duration_s": args.duration, **figures}), flush=True)


# -- nodes-local ---------------------------------------------------------------------------------
#
# Every measurement runs between two spawned processes; the main thread only starts them and
# collects the figures they send back, so its own mailbox never is on the measured path.

BATCH = 1000  # messages between two flow-control acknowledgements
WINDOW = 4  # batches a producer may have in flight


def _consumer(batch: int) -> None:
    import nodes

    count = 0
    producer = None
    while True:
        msg = nodes.receive()
        if type(msg) is tuple:
            if msg[0] == "producer":
                producer = msg[1]
                continue
            if msg[0] == "sync":
                nodes.send(msg[1], ("synced", count))
                continue
            if msg[0] == "stop":
                return
        count += 1
        if count % batch == 0:
            nodes.send(producer, ("ack", count))


def _producer(parent: Any, consumer: Any, duration_s: float, batch: int, window: int) -> None:
    import nodes

    nodes.send(consumer, ("producer", nodes.self()))
    sent = acked = 0
    is_ack = lambda m: type(m) is tuple and m[0] == "ack"  # noqa: E731
    payload = ("msg", 1)

    def step() -> int:
        nonlocal sent, acked
        for _ in range(batch):
            nodes.send(consumer, payload)
        sent += batch
        while sent - acked >= window * batch:  # flow control: the consumer's mailbox stays bounded
            acked = nodes.receive(match=is_ack)[1]
        return batch

    started = time.perf_counter()
    done, _ = run_for(duration_s, step)
    nodes.send(consumer, ("sync", nodes.self()))  # the clock stops once the consumer has them all
    received = nodes.receive(match=lambda m: type(m) is tuple and m[0] == "synced")[1]
    nodes.send(parent, ("send_receive", received, time.perf_counter() - started, done))


def _measure_send_receive(duration_s: float) -> Figures:
    import nodes

    return {"send_receive_msgs_per_s": _stream_rate(nodes.spawn(_consumer, BATCH), duration_s, WINDOW)}


def _stream_rate(consumer: Any, duration_s: float, window: int) -> float:
    """Messages per second a local producer gets through to ``consumer`` (stopped afterwards)."""
    import nodes

    try:
        nodes.spawn(_producer, nodes.self(), consumer, duration_s, BATCH, window)
        _, received, elapsed, sent = nodes.receive(int(duration_s * 1000) + 60_000,
                                                   match=lambda m: m[0] == "send_receive")
    finally:
        nodes.send(consumer, ("stop",))
    assert received == sent, f"sent {sent} messages but {received} arrived"
    return rate(received, elapsed)


class _Counter:
    """The gen_statem under test: replies to calls at once, counts casts."""

    def init(args: Any) -> tuple:
        return ("ok", "ready", 0)

    def ready(event_type: Any, content: Any, data: int) -> Any:
        if event_type == "cast":
            return ("keep_state", data + 1)
        _, from_ = event_type
        return ("keep_state_and_data", [("reply", from_, data if content == "count" else content)])


def _caller(parent: Any, server: Any, duration_s: float) -> None:
    import nodes
    from nodes import gen_statem

    latencies_us: list[float] = []
    clock = time.perf_counter_ns

    def step() -> int:
        started = clock()
        gen_statem.call(server, "ping")
        latencies_us.append((clock() - started) / 1000)
        return 1

    calls, elapsed = run_for(duration_s, step)
    nodes.send(parent, ("calls", calls, elapsed, latencies_us))


def _caster(parent: Any, server: Any, duration_s: float, batch: int) -> None:
    import nodes
    from nodes import gen_statem

    def step() -> int:
        for _ in range(batch):
            gen_statem.cast(server, 1)
        gen_statem.call(server, "count")  # flow control: every cast so far has been handled
        return batch

    started = time.perf_counter()
    run_for(duration_s, step)  # each step ends with a call, so every cast sent has been handled
    processed = gen_statem.call(server, "count")
    nodes.send(parent, ("casts", processed, time.perf_counter() - started))


def _with_server(fn: Callable[[Any], Figures]) -> Figures:
    from nodes import gen_statem

    status, server = gen_statem.start(_Counter, None)
    if status != "ok":
        raise RuntimeError(f"could not start the gen_statem under test: {server!r}")
    try:
        return fn(server)
    finally:
        gen_statem.stop(server)


def _measure_calls(duration_s: float) -> Figures:
    import nodes

    def measure(server: Any) -> Figures:
        nodes.spawn(_caller, nodes.self(), server, duration_s)
        _, calls, elapsed, latencies_us = nodes.receive(int(duration_s * 1000) + 60_000,
                                                        match=lambda m: m[0] == "calls")
        return {"call_round_trips_per_s": rate(calls, elapsed), "call_latency_us": percentiles(latencies_us)}

    return _with_server(measure)


def _measure_casts(duration_s: float) -> Figures:
    import nodes

    def measure(server: Any) -> Figures:
        nodes.spawn(_caster, nodes.self(), server, duration_s, BATCH)
        _, processed, elapsed = nodes.receive(int(duration_s * 1000) + 60_000,
                                              match=lambda m: m[0] == "casts")
        return {"casts_per_s": rate(processed, elapsed)}

    return _with_server(measure)


def _add_duration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=2.5, metavar="S",
                        help="seconds per measurement (default: 2.5)")


@scenario("nodes-local", "local send→receive throughput, gen_statem call round trips and casts",
          options=_add_duration)
def nodes_local(args: argparse.Namespace) -> Figures:
    figures: Figures = {}
    figures.update(_measure_send_receive(args.duration))
    figures.update(_measure_calls(args.duration))
    figures.update(_measure_casts(args.duration))
    return figures


# -- nodes-remote --------------------------------------------------------------------------------
#
# The bench process becomes a node and starts a second node as an OS process (``python -m nodes
# --noshell``) on a private epmd port with a random cookie, both on 127.0.0.1.  The functions and
# the gen_statem below run on the other node: this script is ``__main__``, so they travel by value
# (cloudpickle), as code typed in a shell does.  The peer and the epmd are killed by PID at the end.

REMOTE_WINDOW = 8  # batches in flight: a round trip between nodes is longer than within one


def _echo() -> None:
    import nodes

    while True:
        msg = nodes.receive()
        if msg == "stop":
            return
        nodes.send(msg[0], msg[1])


def _pinger(parent: Any, echo: Any, duration_s: float) -> None:
    import nodes

    me = nodes.self()
    latencies_us: list[float] = []
    clock = time.perf_counter_ns

    def step() -> int:
        started = clock()
        nodes.send(echo, (me, started))
        nodes.receive(match=lambda m: m == started)
        latencies_us.append((clock() - started) / 1000)
        return 1

    pings, elapsed = run_for(duration_s, step)
    nodes.send(parent, ("pings", pings, elapsed, latencies_us))


class _RemotePeer:
    """This process as node bench<pid>@127.0.0.1 and a second node as an OS process."""

    def __init__(self, startup_timeout_s: float = 30.0) -> None:
        import secrets
        import subprocess
        import tempfile

        from bench_stats import free_port

        import nodes

        self.epmd_port = free_port()
        os.environ["NODES_EPMD_PORT"] = str(self.epmd_port)
        os.environ["NODES_COOKIE"] = secrets.token_hex(16)
        self.log = tempfile.NamedTemporaryFile(prefix="bench-peer-", suffix=".log", delete=False)  # noqa: SIM115
        self.name = f"benchpeer{os.getpid()}@127.0.0.1"
        nodes.start(f"bench{os.getpid()}@127.0.0.1")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                         os.environ.get("PYTHONPATH")]))}
        self.popen = subprocess.Popen([sys.executable, "-m", "nodes", "--name", self.name, "--noshell"],
                                      stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                      env=env, cwd=ROOT)
        deadline = time.monotonic() + startup_timeout_s
        while not nodes.connect(self.name):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the second node did not start; its log:\n{self.read_log()}")
            time.sleep(0.05)

    def read_log(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def close(self) -> None:
        import signal
        import subprocess

        from nodes import dist, epmd

        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        dist.stop()
        epmd.kill(self.epmd_port)  # the epmd our node started on the private port
        self.log.close()
        os.unlink(self.log.name)


def _measure_remote_echo(peer: _RemotePeer, duration_s: float) -> Figures:
    import nodes

    echo = nodes.rpc.call(peer.name, nodes.spawn, _echo, timeout=10_000)
    try:
        nodes.spawn(_pinger, nodes.self(), echo, duration_s)
        _, pings, elapsed, latencies_us = nodes.receive(int(duration_s * 1000) + 60_000,
                                                        match=lambda m: m[0] == "pings")
    finally:
        nodes.send(echo, "stop")
    return {"echo_round_trips_per_s": rate(pings, elapsed), "echo_latency_us": percentiles(latencies_us)}


def _measure_remote_calls(peer: _RemotePeer, duration_s: float) -> Figures:
    import nodes
    from nodes import gen_statem

    status, server = nodes.rpc.call(peer.name, gen_statem.start, _Counter, None, timeout=10_000)
    if status != "ok":
        raise RuntimeError(f"could not start the gen_statem on {peer.name}: {server!r}")
    try:
        nodes.spawn(_caller, nodes.self(), server, duration_s)
        _, calls, elapsed, latencies_us = nodes.receive(int(duration_s * 1000) + 60_000,
                                                        match=lambda m: m[0] == "calls")
    finally:
        gen_statem.stop(server)
    return {"call_round_trips_per_s": rate(calls, elapsed), "call_latency_us": percentiles(latencies_us)}


def _measure_remote_throughput(peer: _RemotePeer, duration_s: float) -> Figures:
    import nodes

    consumer = nodes.rpc.call(peer.name, nodes.spawn, _consumer, BATCH, timeout=10_000)
    return {"one_way_msgs_per_s": _stream_rate(consumer, duration_s, REMOTE_WINDOW)}


def _add_remote_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=3.0, metavar="S",
                        help="seconds per measurement (default: 3)")


@scenario("nodes-remote", "two node OS processes: echo and gen_statem call round trips (latency), "
          "one-way message throughput counted on the receiver", options=_add_remote_options)
def nodes_remote(args: argparse.Namespace) -> Figures:
    peer = _RemotePeer()
    try:
        figures: Figures = {"peer": peer.name}
        figures.update(_measure_remote_echo(peer, args.duration))
        figures.update(_measure_remote_calls(peer, args.duration))
        figures.update(_measure_remote_throughput(peer, args.duration))
        return figures
    finally:
        peer.close()


# -- rafted-persist ------------------------------------------------------------------------------
#
# A 3-member group on 3 node OS processes (bench_rafted's Cluster: private epmd port, random
# cookie, every process killed by PID at the end), every member persisting into its own directory
# of a temporary directory (fsync on: a leader syncs each batch before it counts its own copy, a
# follower before it acknowledges).  Clients run on the leader's node (bench_rafted.run_clients).
# The directory is removed at the end, after its size is reported.

def _add_persist_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=5.0, metavar="S",
                        help="seconds per measurement (default: 5)")
    parser.add_argument("--clients", type=int, default=32, metavar="N",
                        help="concurrent clients of the throughput run (default: 32)")
    parser.add_argument("--dir", type=Path, default=None, metavar="DIR",
                        help="where the members persist (default: a temporary directory; its disk "
                             "decides the fsync cost)")


def _dir_usage(path: Path) -> dict[str, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


@scenario("rafted-persist", "3 persisting members on 3 node processes (fsync on): sequential command "
          "latency and --clients (32) concurrent clients' throughput", options=_add_persist_options)
def rafted_persist(args: argparse.Namespace) -> Figures:
    import shutil
    import tempfile

    _ensure_project_python()
    scripts = str(Path(__file__).resolve().parent)
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import bench_rafted

    work = Path(tempfile.mkdtemp(prefix="bench-persist-"))
    data_root = (args.dir.resolve() / f"bench-persist-{os.getpid()}") if args.dir else work / "data"
    cluster = bench_rafted.Cluster(work)
    try:
        bench = bench_rafted.RaftedBench(args, cluster)
        bench.member_nodes = [cluster.start_node() for _ in range(3)]
        bench.create_group(bench_rafted.PNAME, persistence_root=data_root)
        seq = bench.load(0)
        conc = bench.load(args.clients)
        figures: Figures = {
            "members": "3 node processes, every member persisting (fsync on)",
            "dir": str(data_root),
            "seq_ops_per_s": seq["ops_per_s"],
            "seq_latency_ms": {"p50": seq["p50_ms"], "p99": seq["p99_ms"], "max": seq["max_ms"]},
            "seq_errors": seq["errors"],
            f"clients_{args.clients}_ops_per_s": conc["ops_per_s"],
            f"clients_{args.clients}_latency_ms": {"p50": conc["p50_ms"], "p99": conc["p99_ms"],
                                                   "max": conc["max_ms"]},
            f"clients_{args.clients}_errors": conc["errors"],
            "disk": _dir_usage(data_root),
        }
        return figures
    finally:
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
        if args.dir:
            shutil.rmtree(data_root, ignore_errors=True)


# -- command line --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py", description="Benchmarks for nodes and rafted; one sub-command per scenario.",
        epilog="With no scenario, or 'all': every rafted scenario (scripts/bench_rafted.py; "
               "bench.py all --help lists its options, e.g. --compare pysyncobj).")
    commands = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for entry in SCENARIOS.values():
        sub = commands.add_parser(entry.name, help=entry.help, description=entry.help)
        sub.add_argument("--json", action="store_true", help="print one JSON object as the last line")
        if entry.options is not None:
            entry.options(sub)
        if not any(action.dest == "duration" for action in sub._actions):
            _add_duration(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] == "all" or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        _ensure_project_python()  # the rafted suite, with its own options: scripts/bench_rafted.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_rafted

        return bench_rafted.main(argv)
    args = build_parser().parse_args(argv)
    _ensure_project_python()
    figures = SCENARIOS[args.scenario].run(args)
    report(args.scenario, figures, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

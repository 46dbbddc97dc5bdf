#!/usr/bin/env python3
"""Fault-injection campaigns against rafted, checked for linearizability.

    .venv/bin/python scripts/torture.py --minutes 10 --seed 1

Runs back-to-back runs of ``--run-seconds`` each (a fresh 5-node group per run, seeds
S, S+1, ...) until ``--minutes`` have passed, and prints one summary line per run:
operations ok / failed / unknown, the faults and nemesis events, the verdict.  A run that
is not linearizable (or that broke) saves its history with the nemesis events as JSON
(``--out``, printed in its line): ``python -m lincheck FILE`` replays it.

This script is a node itself, on a private port-mapper port; every node process it starts
is killed by PID at the end of its run, also on Ctrl-C / SIGTERM.  ``--net netns`` puts
each node in a Linux network namespace of its own and cuts real links (needs root and
``ip netns``); ``--net switch`` (the default) uses the transport's partition switch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import nodecluster  # noqa: E402
from jepsen import campaign, nemesis  # noqa: E402

import nodes  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="campaign length (default 10)")
    p.add_argument("--seed", type=int, default=1, help="seed of the first run (default 1)")
    p.add_argument("--run-seconds", type=float, default=120.0, help="faulty part of one run (default 120)")
    p.add_argument("--runs", type=int, default=None, help="stop after this many runs")
    p.add_argument("--seconds", type=float, default=None,
                   help="one run of this many seconds (instead of --minutes)")
    p.add_argument("--schedule", type=Path, default=None,
                   help="replay the faults of a saved history (its metadata) or of a JSON list")
    p.add_argument("--tick-ms", type=int, default=2000,
                   help="NODES_TICK_MS of every node (default 2000: a 4 s pause is not a nodedown)")
    p.add_argument("--epmd-port", type=int, default=None, help="port-mapper port (default: a free one)")
    p.add_argument("--distrust-noproc", action="store_true",
                   help="clients take ('error', 'noproc') as 'unknown' (default: 'not applied', give up)")
    p.add_argument("--mutate", choices=["lease", "dedup"], default=None,
                   help="self-test: break every node (lease never expires / ids not de-duplicated); "
                        "the campaign must then find violations")
    p.add_argument("--stale-reads", action="store_true",
                   help="self-test: read with query_non_leader from any member; must be NOT linearizable")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--probers", type=int, default=1,
                   help="extra clients that send each operation to a random member first (default 1)")
    p.add_argument("--keys", type=int, default=6)
    p.add_argument("--think-ms", type=float, default=10.0, help="mean pause between a client's operations")
    p.add_argument("--election-timeout", type=int, default=1000, help="ms (default 1000)")
    p.add_argument("--lease-margin", type=int, default=300, help="clock drift margin, ms (default 300)")
    p.add_argument("--kinds", default=None,
                   help=f"faults to draw from (default {','.join(nemesis.KINDS)}; netns adds isolate)")
    p.add_argument("--net", choices=["switch", "netns"], default="switch",
                   help="how partitions are made (default: the transport switch)")
    p.add_argument("--netns-tag", default=None, help="name tag of the namespaces (default: random)")
    p.add_argument("--out", type=Path, default=ROOT / "jepsen-histories",
                   help="where failing histories go (default ./jepsen-histories)")
    p.add_argument("--save-all", action="store_true", help="save every run's history")
    p.add_argument("--logs", type=Path, default=None,
                   help="keep the node logs under DIR/run<N> (default: kept only for failing runs)")
    p.add_argument("--verbose", "-v", action="store_true", help="print nemesis events as they happen")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.kinds is None:
        kinds = nemesis.KINDS + (("isolate",) if args.net == "netns" else ())
    else:
        kinds = tuple(k for k in args.kinds.split(",") if k)
    for k in kinds:
        if k not in (*nemesis.KINDS, "isolate"):
            raise SystemExit(f"unknown fault kind {k!r}")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    def log(msg: str) -> None:
        if args.verbose:
            print(f"  {time.strftime('%H:%M:%S')} {msg}", flush=True)

    if args.seconds is not None:
        args.runs, args.run_seconds, args.minutes = 1, args.seconds, args.seconds / 60 + 5
    schedule = None
    if args.schedule is not None:
        data = json.loads(args.schedule.read_text())
        if isinstance(data, dict):
            data = data["metadata"]["schedule"]
        schedule = [nemesis.Fault.from_dict(d) for d in data]
    os.environ["NODES_TICK_MS"] = str(args.tick_ms)  # this node and, inherited, every node it starts
    logging.basicConfig(level=logging.ERROR if not args.verbose else logging.WARNING)
    netns_env = None
    if args.net == "netns":
        from jepsen import netns

        reason = netns.unavailable()
        if reason:
            print(f"--net netns: unavailable here: {reason}", file=sys.stderr)
            return 2
        print(f"--net netns: tc netem: {netns.netem_unavailable() or 'available'} "
              "(not used: cuts are blackhole routes, isolation is a link taken down)", flush=True)
    epmd_port = args.epmd_port or nodecluster.free_port()
    os.environ["NODES_EPMD_PORT"] = str(epmd_port)
    os.environ.setdefault("NODES_COOKIE", f"torture-{uuid.uuid4().hex}")
    if args.net == "netns":
        netns_env = netns.Netns(args.netns_tag)
        try:
            netns_env.setup()
            netns_env.start_harness_node()
        except BaseException:
            netns_env.close()
            raise
    else:
        nodes.start(f"torture{os.getpid()}")
    end = time.monotonic() + args.minutes * 60
    totals = {"runs": 0, "ops": 0, "ok": 0, "fail": 0, "unknown": 0, "faults": 0, "bad": 0}
    status = 0
    try:
        run_no = 0
        while time.monotonic() < end and (args.runs is None or run_no < args.runs):
            seed = args.seed + run_no
            run_no += 1
            seconds = min(args.run_seconds, max(20.0, end - time.monotonic() - 20.0))
            cfg = campaign.RunConfig(seconds=seconds, seed=seed, clients=args.clients, probers=args.probers,
                                     keys=args.keys,
                                     election_timeout=args.election_timeout, lease_margin=args.lease_margin,
                                     kinds=kinds, out_dir=args.out, save_always=args.save_all,
                                     schedule=schedule, stale_reads=args.stale_reads,
                                     trust_noproc=not args.distrust_noproc, mutation=args.mutate,
                                     think_s=args.think_ms / 1000,
                                     workdir=args.logs / f"run{run_no}" if args.logs else None)
            if netns_env is not None:
                result = campaign.run(cfg, launcher=netns_env.launcher, network=netns_env.network(), log=log)
            else:
                result = campaign.run(cfg, log=log)
            print(f"run {run_no}: {result.summary()}", flush=True)
            if args.verbose and result.attempts:
                print(f"  attempts: {dict(result.attempts)}", flush=True)
            if result.explanation:
                print(result.explanation, flush=True)
            totals["runs"] += 1
            totals["ops"] += sum(result.statuses.values())
            for k in ("ok", "fail", "unknown"):
                totals[k] += result.statuses[k]
            totals["faults"] += sum(result.faults.values())
            if not result.ok:
                totals["bad"] += 1
                status = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    finally:
        from nodes import dist

        dist.stop()
        if netns_env is not None:
            netns_env.close()
        nodecluster.kill_epmd(epmd_port)
    verdict = "ALL LINEARIZABLE" if totals["bad"] == 0 and totals["runs"] else f"{totals['bad']} BAD RUN(S)"
    print(f"campaign: {totals['runs']} run(s), {totals['ops']} ops (ok {totals['ok']}, "
          f"failed {totals['fail']}, unknown {totals['unknown']}), {totals['faults']} faults, {verdict}",
          flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

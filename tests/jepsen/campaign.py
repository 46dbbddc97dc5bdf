"""One recorded, checked run: a 5-member group, clients, a nemesis, then the verdict.

:func:`run` needs the calling process to be a ``nodes`` node already (the pytest
``this_node`` fixture, or ``scripts/torture.py``).  Order of a run:

1. start the nodes and the group, wait until it is healthy;
2. clients and nemesis run for ``seconds``;
3. the nemesis stops (the fault in progress is undone), the group must become healthy
   again, the clients go on for ``calm_s`` more (liveness: operations must succeed
   again) and stop, finishing their pending operations;
4. one final read of every key, and every live member must reach the same map;
5. ``lincheck`` checks the history against a register per key; a violation, an
   undecided check or any harness error saves the history with the nemesis events
   (``Recorder.note``) and the schedule as JSON: ``python -m lincheck FILE`` replays it.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nodecluster

import nodes
from lincheck import Recorder, Verdict, check, register_model, render, save_history

from .cluster import RaftCluster
from .nemesis import KINDS, Fault, Nemesis, random_schedule
from .netsplit import Network, SwitchNetwork
from .regressions import MUTATIONS
from .workload import Client, make_config


@dataclass
class RunConfig:
    seconds: float = 75.0
    seed: int = 1
    clients: int = 4
    probers: int = 1  # extra clients that ask random members first (see run)
    keys: int = 6
    size: int = 5
    heartbeat_timeout: int = 100
    election_timeout: int = 1000
    lease_margin: int = 300
    think_s: float = 0.01
    calm_s: float = 3.0
    kinds: tuple[str, ...] = KINDS
    schedule: list[Fault] | None = None  # replay this instead of drawing one from the seed
    check_timeout: float = 120.0
    out_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "jepsen-histories")
    save_always: bool = False
    stale_reads: bool = False  # harness self-test: reads from any member, must be caught
    mutation: str | None = None  # harness self-test: break every node (regressions.MUTATIONS)
    trust_noproc: bool = True  # take ("error", "noproc") as "not applied": rafted promises it
    workdir: Path | None = None  # node logs; a temporary directory if None


@dataclass
class RunResult:
    seed: int
    verdict: str
    elapsed: float
    statuses: Counter[str]
    by_op: Counter[str]
    faults: Counter[str]
    events: int
    check_elapsed: float
    problems: list[str]
    history_path: Path | None
    explanation: str = ""
    attempts: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.verdict == Verdict.LINEARIZABLE.value and not self.problems

    def summary(self) -> str:
        st = self.statuses
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        line = (f"seed={self.seed} {self.elapsed:.0f}s ops={sum(st.values())} "
                f"(ok {st['ok']}, failed {st['fail']}, unknown {st['unknown']}) "
                f"faults={sum(self.faults.values())} ({faults}) events={self.events} "
                f"verdict={self.verdict} check={self.check_elapsed:.1f}s")
        if self.problems:
            line += " problems=" + "; ".join(self.problems)
        if self.history_path is not None:
            line += f" history={self.history_path}"
        return line


class LocalLauncher:
    """Node processes on this host (short names), through ``nodecluster.NodeCluster``."""

    def __init__(self, workdir: Path) -> None:
        self.nc = nodecluster.NodeCluster(workdir)

    def start_node(self) -> Any:
        return self.nc.start_node()

    def close(self) -> None:
        self.nc.close()


def run(cfg: RunConfig, *, launcher: Callable[[Path], Any] | None = None, network: Network | None = None,
        log: Callable[[str], None] = lambda s: None) -> RunResult:
    """One run; ``launcher(workdir)`` makes the node launcher (default: :class:`LocalLauncher`)."""
    assert nodes.node() != "nonode@nohost", "the harness process must be a node (nodes.start)"
    t_start = time.monotonic()
    tmp = None
    if cfg.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="jepsen-nodes-")
        workdir = Path(tmp.name)
    else:
        workdir = cfg.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    nodes_launcher = (launcher or LocalLauncher)(workdir)
    network = network or SwitchNetwork()
    config = make_config(cfg.heartbeat_timeout, cfg.election_timeout, cfg.lease_margin)
    schedule = cfg.schedule if cfg.schedule is not None else random_schedule(
        cfg.seed, 2 * cfg.seconds, cfg.election_timeout, cfg.kinds)  # more than enough: cut at the end
    keys = [f"k{i}" for i in range(cfg.keys)]
    rec = Recorder(metadata={
        "model": register_model().spec(),
        "harness": "tests/jepsen",
        "seed": cfg.seed,
        "network": network.kind,
        "config": {"heartbeat_timeout": cfg.heartbeat_timeout, "election_timeout": cfg.election_timeout,
                   "lease_margin": cfg.lease_margin, "size": cfg.size, "clients": cfg.clients,
                   "seconds": cfg.seconds},
        "schedule": [f.to_dict() for f in schedule],
        "node_logs": str(workdir),
    })
    problems: list[str] = []
    on_node = None
    if cfg.mutation is not None:
        mutate = MUTATIONS[cfg.mutation]

        def on_node(name: str) -> None:
            log(f"mutating {name}: {nodes.rpc.call(name, mutate, timeout=10_000)}")

        rec.metadata["mutation"] = cfg.mutation
    cluster = RaftCluster(nodes_launcher, config, cfg.size, log=log, on_node=on_node)
    stop_nemesis = threading.Event()
    stop_clients = threading.Event()
    clients: list[Client] = []
    nemesis: Nemesis | None = None
    final_values: dict[str, Any] = {}
    try:
        cluster.start()
        if not cluster.wait_healthy(30):
            raise RuntimeError("the new group never became healthy")
        rec.note("started", members=[m.node.name for m in cluster.live()])
        clients = [Client(i + 1, rec, cluster.directory, keys, cfg.seed * 1000 + i, stop_clients,
                          think_s=cfg.think_s, stale_reads=cfg.stale_reads,
                          trust_noproc=cfg.trust_noproc) for i in range(cfg.clients)]
        for j in range(cfg.probers):
            # mostly reads, each sent first to a random member and waited for: a deposed,
            # cut-off or paused (old) leader gets asked right after the new leader has
            # committed writes -- that is where a broken lease would show
            cid = cfg.clients + j + 1
            clients.append(Client(cid, rec, cluster.directory, keys, cfg.seed * 1000 + cid, stop_clients,
                                  think_s=cfg.think_s, trust_noproc=cfg.trust_noproc, explore=1.0,
                                  mix=(0.8, 0.1, 0.1), attempt_timeouts_ms=(5000,)))
        for c in clients:
            c.start()
        nemesis = Nemesis(cluster, network, rec, schedule, stop_nemesis, log=log)
        nemesis.start()
        stop_nemesis.wait(cfg.seconds)  # the run lasts this long
        stop_nemesis.set()
        nemesis.join(120)
        if nemesis.is_alive():
            problems.append("the nemesis did not stop")
        if nemesis.error is not None:
            problems.append(f"nemesis error: {nemesis.error!r}")
        if nemesis.unrecovered:
            problems.append(f"{nemesis.unrecovered} fault(s) not recovered from within "
                            f"{nemesis.recovery_timeout:.0f} s")
        rec.note("nemesis-stopped")
        if not cluster.wait_healthy(60):
            problems.append("the group is not healthy 60 s after the last fault")
        # liveness: with every fault undone, operations must succeed again
        calm_start = sum(c.counts["read ok"] + c.counts["write ok"] + c.counts["cas ok"] for c in clients)
        stop_clients.wait(cfg.calm_s)
        stop_clients.set()
        for c in clients:
            c.join(30)
            if c.is_alive():
                problems.append(f"client {c.cid} did not stop")
            if c.error is not None:
                problems.append(f"client {c.cid} error: {c.error!r}")
        calm_ok = sum(c.counts["read ok"] + c.counts["write ok"] + c.counts["cas ok"] for c in clients)
        if calm_ok == calm_start:
            problems.append("no operation succeeded after the faults were healed")
        # final reads: every unknown write is settled one way or the other by now
        final = Client(0, rec, cluster.directory, keys, cfg.seed, threading.Event(), op_timeout_s=20.0)
        for k in keys:
            final.read(k)
        if final.counts["read ok"] != len(keys):
            problems.append("final reads failed")
        final_values = _converge(cluster, problems)
    except Exception as e:  # noqa: BLE001 - a broken run is reported, with what was recorded
        problems.append(f"harness error: {e!r}")
        log(f"harness error: {e!r}")
    finally:
        stop_nemesis.set()
        stop_clients.set()
        if nemesis is not None:
            nemesis.join(60)
        for c in clients:
            c.join(30)
        cluster.close()
    history = rec.history(metadata={"final_values": _jsonable(final_values), "problems": problems,
                                    "faults_done": _jsonable(nemesis.done if nemesis else [])})
    statuses = Counter(op.status.value for op in history)
    by_op = Counter(f"{op.f} {op.status.value}" for op in history)
    attempts: Counter[str] = Counter()
    for c in clients:
        attempts.update({k: v for k, v in c.counts.items() if k.startswith("attempt")})
    faults = Counter(str(d["fault"]["kind"]) for d in (nemesis.done if nemesis else []))
    result = check(history, register_model(), timeout=cfg.check_timeout)
    explanation = ""
    if result.verdict is not Verdict.LINEARIZABLE:
        explanation = render(result, register_model(), minimize_timeout=30.0)
    path = None
    if cfg.save_always or result.verdict is not Verdict.LINEARIZABLE or problems:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = save_history(history, cfg.out_dir / f"jepsen-seed{cfg.seed}-{stamp}.json")
    if tmp is not None and (result.verdict is Verdict.LINEARIZABLE and not problems):
        tmp.cleanup()
    events = len(history.metadata.get("events", []))
    return RunResult(cfg.seed, result.verdict.value, time.monotonic() - t_start, statuses, by_op, faults,
                     events, result.elapsed, problems, path, explanation, attempts)


def _converge(cluster: RaftCluster, problems: list[str], timeout: float = 20.0) -> dict[str, Any]:
    """Every live member must reach the same map (they apply the same log)."""
    deadline = time.monotonic() + timeout
    values: dict[str, Any] = {}
    while time.monotonic() < deadline:
        values = cluster.values()
        distinct = {json.dumps(_jsonable(v), sort_keys=True) for v in values.values()}
        if len(distinct) == 1 and all(isinstance(v, dict) for v in values.values()):
            return values
        time.sleep(0.2)
    problems.append(f"members did not converge: {values!r}")
    return values


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, (int, float, str, bool)):
        return x
    return repr(x)

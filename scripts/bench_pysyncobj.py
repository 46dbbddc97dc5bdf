"""PySyncObj on rafted's benchmark workload (``scripts/bench.py --compare pysyncobj``).

The same run creates a virtual environment in a temporary directory (``python -m venv``, then
``pip install pysyncobj==0.3.17`` through pip's configured index) and starts three PySyncObj
nodes as three OS processes on loopback ports, each running this file as a worker::

    <venv>/bin/python scripts/bench_pysyncobj.py worker 127.0.0.1:P1 127.0.0.1:P2,127.0.0.1:P3

A worker holds a ``SyncObj`` counter with one ``@replicated`` method (``incr``), default timers
and batching off (``SyncObjConf(appendEntriesUseBatch=False)``, as in the issue's reference
figures), and obeys JSON lines on its stdin.  The callers run *in the leader's process*: N
threads calling ``counter.incr(sync=True, timeout=5)`` back to back (the sync call API), timed
per call with ``time.perf_counter`` exactly as the rafted clients are (``bench_stats``).

Failover: SIGKILL the leader's process, then both survivors retry ``incr(sync=True,
timeout=0.2)`` until one commits; the time is from the kill to the first commit (perf_counter is
CLOCK_MONOTONIC, shared by every process), elections are the term increase.  The killed node is
restarted (fresh, on the same address) before the next try.

Every process started is killed by PID in a ``finally`` and the temporary directory is removed.
This module imports only the standard library at the top: the worker runs under the venv's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from bench_stats import (  # noqa: E402
    client_loop,
    crash_moment,
    failover_figures,
    free_ports,
    pin_leader,
    summarize,
    window_figures,
)

REPLY = "@@bench "  # prefix of the worker's answer lines (anything else on stdout is ignored)
CALL_TIMEOUT_S = 5.0


# -- the worker (runs under the venv's Python, with pysyncobj) ------------------------------------

def worker_main(self_addr: str, partners: list[str]) -> None:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Counter(SyncObj):
        def __init__(self) -> None:
            conf = SyncObjConf(appendEntriesUseBatch=False)  # batching off; every timer default
            super().__init__(self_addr, partners, conf)
            self.__value = 0

        @replicated
        def incr(self) -> int:
            self.__value += 1
            return self.__value

        def get(self) -> int:
            return self.__value

    counter = Counter()

    def answer(obj: Any) -> None:
        sys.stdout.write(REPLY + json.dumps(obj) + "\n")
        sys.stdout.flush()

    def status() -> dict[str, Any]:
        st = counter.getStatus()
        leader = st["leader"]
        partners_up = [v for k, v in st.items() if k.startswith("partner_node_status_server_")]
        return {"state": st["state"], "leader": getattr(leader, "address", None) if leader else None,
                "term": st["raft_term"], "has_quorum": st["has_quorum"], "commit_idx": st["commit_idx"],
                "last_applied": st["last_applied"], "connected": all(v == 2 for v in partners_up)}

    def incr(timeout: float) -> Any:
        return counter.incr(sync=True, timeout=timeout)

    def load(clients: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
        t_start = time.perf_counter() + warmup_s

        def one() -> tuple:
            return client_loop(lambda: incr(CALL_TIMEOUT_S), lambda _: True, t_start, duration_s).as_tuple()

        if clients == 0:
            return summarize([one()], duration_s)
        results: list[tuple] = []
        lock = threading.Lock()

        def run() -> None:
            res = one()
            with lock:
                results.append(res)

        threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return summarize(results, duration_s)

    def wait_commit(deadline_s: float) -> dict[str, Any]:
        end = time.perf_counter() + deadline_s
        while time.perf_counter() < end:
            try:
                incr(0.2)
                return {"t": time.perf_counter()}
            except Exception:  # noqa: BLE001 - no leader yet: SyncObjException('Timeout') and the like
                time.sleep(0.002)
        return {"t": None}

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "status":
                answer(status())
            elif op == "load":
                answer(load(request["clients"], request["duration"], request["warmup"]))
            elif op == "wait_commit":
                answer(wait_commit(request["deadline"]))
            elif op == "quit":
                answer({"ok": True})
                break
            else:
                answer({"error": f"unknown op {op!r}"})
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            answer({"error": repr(exc)})
    os._exit(0)  # PySyncObj's threads are not daemons everywhere; leave at once


# -- the driver (runs in the bench process) --------------------------------------------------------

def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Worker:
    """One PySyncObj node OS process, driven through JSON lines on its stdin/stdout."""

    def __init__(self, python: Path, addr: str, partners: list[str], log_path: Path) -> None:
        self.addr = addr
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [str(python), str(Path(__file__).resolve()), "worker", addr, ",".join(partners)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=SCRIPTS, text=True, bufsize=1)
        self.replies: queue.Queue[Any] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if line.startswith(REPLY):
                self.replies.put(json.loads(line[len(REPLY):]))
        self.replies.put(None)  # the process is gone

    def send(self, op: str, **kwargs: Any) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.popen.stdin.flush()

    def receive(self, timeout_s: float) -> Any:
        try:
            reply = self.replies.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"PySyncObj worker {self.addr} did not answer within {timeout_s} s") from None
        if reply is None:
            raise RuntimeError(f"PySyncObj worker {self.addr} exited ({self.popen.poll()})")
        if "error" in reply:
            raise RuntimeError(f"PySyncObj worker {self.addr}: {reply['error']}")
        return reply

    def request(self, op: str, timeout_s: float = 10.0, **kwargs: Any) -> Any:
        self.send(op, **kwargs)
        return self.receive(timeout_s)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        for stream in (self.popen.stdin, self.popen.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


def make_venv(tmp: Path, version: str) -> tuple[Path, str, str]:
    """A venv with pysyncobj; returns (its python, the installed version, a note)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=subprocess.DEVNULL)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    note = f"pysyncobj=={version} from pip's configured index"
    done = subprocess.run([*pip, f"pysyncobj=={version}"], capture_output=True, text=True)
    if done.returncode != 0:
        say(f"   pip could not install pysyncobj=={version}: {done.stderr.strip()[-500:]}; trying the latest")
        subprocess.run([*pip, "pysyncobj"], check=True, capture_output=True, text=True)
        note = f"pysyncobj=={version} unavailable, used the nearest pip found"
    installed = subprocess.run([str(python), "-c", "from pysyncobj.version import VERSION; print(VERSION)"],
                               check=True, capture_output=True, text=True).stdout.strip()
    return python, installed, note


class PySyncObjBench:
    def __init__(self, python: Path, tmp: Path, duration_s: float, pin: bool = False) -> None:
        self.python = python
        self.tmp = tmp
        self.duration_s = duration_s
        self.pin = pin
        self.addrs = [f"127.0.0.1:{port}" for port in free_ports(3)]
        self.workers: dict[str, Worker] = {}
        self.all_workers: list[Worker] = []
        self.notes: list[str] = []

    def start(self, addr: str) -> Worker:
        partners = [a for a in self.addrs if a != addr]
        worker = Worker(self.python, addr, partners, self.tmp / f"worker-{addr.split(':')[1]}.log")
        self.workers[addr] = worker
        self.all_workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.all_workers:
            try:
                worker.kill()
            except (OSError, subprocess.TimeoutExpired):
                pass

    def wait_healthy(self, timeout_s: float = 60.0) -> tuple[Worker, dict]:
        """Every node up, connected to its partners, agreeing on a leader that commits a call."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                statuses = {addr: w.request("status") for addr, w in self.workers.items()}
            except (TimeoutError, RuntimeError) as e:
                last = e
                time.sleep(0.1)
                continue
            last = statuses
            leaders = {st["leader"] for st in statuses.values()}
            if len(leaders) == 1 and None not in leaders and all(st["connected"] for st in statuses.values()):
                leader = self.workers[leaders.pop()]
                if leader.request("wait_commit", deadline=5.0, timeout_s=10.0)["t"] is not None:
                    return leader, leader.request("status")
            time.sleep(0.1)
        if isinstance(last, dict):
            states = {0: "follower", 1: "candidate", 2: "leader"}
            last = "; ".join(f"{addr.split(':')[1]} {states.get(st['state'], st['state'])} term {st['term']} "
                             f"commit {st['commit_idx']}" for addr, st in last.items())
        raise RuntimeError(f"group not healthy after {timeout_s:g} s ({last})")

    def restart_all(self) -> None:
        """Kill the three nodes and start a fresh group on new ports."""
        for worker in self.workers.values():
            worker.kill()
        self.workers = {}
        self.addrs = [f"127.0.0.1:{port}" for port in free_ports(3)]
        for addr in self.addrs:
            self.start(addr)
        self.wait_healthy()

    def healthy_or_restart(self, when: str) -> tuple[Worker, dict]:
        """The group's leader; a group stuck for 20 s is noted and replaced by a fresh one."""
        try:
            return self.wait_healthy(timeout_s=20.0)
        except RuntimeError as e:
            self.notes.append(f"{when}: {e}; restarted all three nodes")
            say(f"   PySyncObj {when}: {e}; restarting all three nodes")
        self.restart_all()
        return self.wait_healthy()

    def load(self, clients: int, duration_s: float) -> dict[str, Any]:
        leader, _ = self.healthy_or_restart(f"before the {clients}-client run")
        if self.pin:
            pin_leader(leader.popen.pid, [w.popen.pid for w in self.workers.values() if w is not leader])
        warmup = 1.0 + clients * 0.005
        return leader.request("load", timeout_s=warmup + duration_s + 120, clients=clients,
                              duration=duration_s, warmup=warmup)

    def failover(self, tries: int, period_s: float) -> dict[str, Any]:
        """As rafted's: the kill comes at a random moment within ``period_s`` of the health check."""
        times: list[float] = []
        elections: list[int] = []
        waits: list[float] = []
        for i in range(tries):
            self.healthy_or_restart(f"before failover try {i + 1}")
            time.sleep(0.5)
            leader, st = self.wait_healthy()
            term0 = st["term"]
            survivors = [w for addr, w in self.workers.items() if addr != leader.addr]
            waits.append(crash_moment(period_s))
            t_kill = time.perf_counter()
            leader.kill()
            for w in survivors:
                w.send("wait_commit", deadline=60.0)
            answers = [w.receive(70.0)["t"] for w in survivors]
            t_ok = min(t for t in answers if t is not None)
            elapsed = t_ok - t_kill
            term1 = max(w.request("status")["term"] for w in survivors)
            times.append(elapsed)
            elections.append(term1 - term0)
            say(f"   PySyncObj failover {i + 1}/{tries}: {elapsed:.3f} s, {term1 - term0} election(s)")
            self.start(leader.addr)  # a fresh node on the same address takes the dead one's place
        return failover_figures(times, elections, waits)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """PySyncObj figures for the same workload as rafted's (``args`` as parsed by bench_rafted)."""
    only = set(args.only.split(",")) if args.only else {"seq", "conc", "lease", "failover", "persist"}
    counts = [int(c) for c in args.clients.split(",")]
    long_clients = 32 if 32 in counts else max(counts)
    tmp = Path(tempfile.mkdtemp(prefix="bench-pysyncobj-"))
    bench: PySyncObjBench | None = None
    try:
        say(f"== PySyncObj: creating a venv in {tmp} and installing pysyncobj=={args.pysyncobj_version}")
        python, version, note = make_venv(tmp, args.pysyncobj_version)
        figures: dict[str, Any] = {"system": "pysyncobj", "version": version, "members": 3,
                                   "note": f"{note}; appendEntriesUseBatch=False; default timers; "
                                           "sync calls from threads in the leader's process",
                                   "seq": None, "conc": {}, "failover_s": None, "windows": None}
        bench = PySyncObjBench(python, tmp, args.duration, pin=bool(getattr(args, "pin_leader", False)))
        for addr in bench.addrs:
            bench.start(addr)
        bench.healthy_or_restart("at start")
        if "seq" in only:
            say("   PySyncObj: seq (1 caller, the worker's main thread) ...")
            figures["seq"] = bench.load(0, max(2.0, args.duration / 2))
        if "conc" in only:
            for n in counts:
                say(f"   PySyncObj: {n} client thread(s) for {args.duration:g} s ...")
                figures["conc"][str(n)] = bench.load(n, args.duration)
            if str(long_clients) in figures["conc"]:
                figures["windows"] = {"clients": long_clients,
                                      **window_figures(figures["conc"][str(long_clients)]["window_rates"])}
        if "failover" in only and args.failover_tries > 0:
            figures["failover_s"] = bench.failover(args.failover_tries, args.heartbeat_timeout / 1000)
        if bench.notes:
            figures["incidents"] = bench.notes
        return figures
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], [a for a in (sys.argv[3] if len(sys.argv) > 3 else "").split(",") if a])
    else:
        sys.exit("usage: bench_pysyncobj.py worker SELF_ADDR PARTNER,PARTNER "
                 "(run by scripts/bench.py --compare pysyncobj)")

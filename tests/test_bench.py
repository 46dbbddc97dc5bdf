"""``scripts/bench.py`` end to end, shortened: every scenario runs and reports what the README says.

The figures themselves depend on the machine and are not asserted (speed is measured, not
tested); what is asserted is what a user of the benchmark relies on: every scenario of the
performance issue runs, no operation fails, the JSON object on the last line has the documented
shape with sane values, and no process of the run is left behind.  PySyncObj (``--compare``)
needs a package download and is not run here.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from script_run import ROOT, ScriptRun

pytestmark = pytest.mark.timeout(300)

BENCH = ROOT / "scripts" / "bench.py"
DURATION_S = 1.0
HEARTBEAT_MS = 200  # the default: the failover's kill waits at most this long after the check


def check_load(name: str, figures: Any, clients: int) -> None:
    assert isinstance(figures, dict), f"{name}: {figures!r}"
    assert figures["clients"] == clients, f"{name}: {figures!r}"
    assert figures["errors"] == 0, f"{name}: operations failed: {figures!r}"
    # The clients ran: operations succeeded, in the 1 s window or beside it (the warm-up, the
    # end). How many fall inside is speed, which is measured, not asserted: on a machine
    # starved by other work one 128-client cycle has taken longer than the window.
    assert figures["ops"] + figures["ops_outside_window"] > 0, f"{name}: nothing ran: {figures!r}"
    assert sum(figures["window_rates"]) * 0.5 == figures["ops"], f"{name}: {figures!r}"
    if figures["ops"] == 0:
        assert figures["p50_ms"] is None and figures["ops_per_s"] == 0, f"{name}: {figures!r}"
        return
    # percentiles are histogram buckets (0.5 % wide), the maximum is exact but rounded to 0.1 ms:
    # the two are not comparable to the last digit
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] and figures["max_ms"] > 0, f"{name}: {figures!r}"


def test_every_scenario_runs_and_the_json_line_has_the_documented_shape(script_runs: list[ScriptRun]) -> None:
    run = ScriptRun([sys.executable, str(BENCH)], "--duration", str(DURATION_S), "--failover-tries", "1",
                    "--json", what="the benchmark")
    script_runs.append(run)
    status = run.wait(240)
    output = run.output()
    assert status == 0, f"the benchmark exited with {status}:\n{output}"
    assert "Traceback" not in output, output
    fig = json.loads(output.splitlines()[-1])

    assert fig["system"] == "rafted" and fig["members"] == 3, fig
    check_load("seq", fig["seq"], 1)
    assert sorted(fig["conc"], key=int) == ["1", "8", "32", "128"], fig["conc"].keys()
    for clients, figures in fig["conc"].items():
        check_load(f"conc {clients}", figures, int(clients))
    check_load("lease_reads", fig["lease_reads"], 1)
    check_load("persist", fig["persist"], 32)

    failover = fig["failover_s"]
    assert failover["tries"] == 1 and len(failover["times"]) == 1, failover
    assert 0 < failover["median"] <= failover["max"], failover
    assert failover["elections_max"] >= 1, f"a failover without an election: {failover}"
    # the kill comes at a random moment of the heartbeat interval, as a crash would
    assert all(0 <= w <= HEARTBEAT_MS / 1000 for w in failover["kill_after_check_s"]), failover

    windows = fig["windows"]
    assert windows["clients"] == 32 and windows["window_s"] == 0.5, windows
    assert len(windows["rates"]) == int(DURATION_S / 0.5), windows
    assert windows["rates"] == fig["conc"]["32"]["window_rates"], "windows are not the 32-client run's"
    if os.path.exists("/proc/stat"):  # the VM's steal time per window, to tell a host's hiccup
        assert len(windows["steal_ms"]) == len(windows["rates"]), windows
        assert all(0 <= ms <= 1000 * 0.5 * (os.cpu_count() or 1) + 50 for ms in windows["steal_ms"]), windows

    members = fig["rss_mb"]["members"]
    assert len(members) == 3 and sum(m["leader"] for m in members.values()) == 1, members
    assert all(m["start"] > 0 and m["max"] >= m["end"] for m in members.values()), members

    # the table a user reads, and the verdict on each target of the issue
    for row in ("commands                    32", "lease reads", "persist (fsync)", "failover rafted:"):
        assert row in output, f"no {row!r} line in the table:\n{output}"
    targets = fig["targets"]
    assert len(targets) >= 8 and all(isinstance(t["met"], bool) for t in targets), targets

    left = run.leftovers()
    assert not left, f"processes of the benchmark still running after it exited: {left}\n{output}"


def test_ports_picked_for_a_group_are_all_different() -> None:
    # The PySyncObj comparison starts three members on ports picked here; two on one port make a
    # group that never elects a leader.
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from bench_stats import free_ports
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    for _ in range(200):
        ports = free_ports(3)
        assert len(set(ports)) == 3, ports


def test_picked_ports_stay_clear_of_the_source_ports_of_outgoing_connections() -> None:
    # A port from the ephemeral range can be taken, between the pick and the bind, as the source
    # port of any connection on the machine; a listener then fails with EADDRINUSE.
    import nodecluster

    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    picked = [nodecluster.free_port() for _ in range(200)]
    assert not [p for p in picked if low <= p <= high], (low, high)
    assert len(set(picked)) > 150  # spread over the range, not one port again and again



def test_a_picked_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    import nodecluster

    bench_stats = nodecluster._bench_stats()
    busy, free = bench_stats.free_ports(2)

    class Picker:  # offers the busy port first, as often as the picker tries but once
        offers = iter([busy] * 99 + [free])

        def choice(self, pool: range) -> int:
            return next(self.offers)

    with socket.create_server(("127.0.0.1", busy)):
        monkeypatch.setattr(bench_stats, "_port_picker", Picker())
        assert bench_stats.free_ports(1) == [free]  # found at the last try

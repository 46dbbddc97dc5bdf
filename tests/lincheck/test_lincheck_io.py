"""Recording live histories, JSON round trips, and the ``python -m lincheck`` command line."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from lincheck.checker import Verdict, check
from lincheck.history import History, Operation, Status
from lincheck.jsonio import dumps, load_history, loads, save_history
from lincheck.model import kv_model, register_model
from lincheck.recorder import Recorder

pytestmark = pytest.mark.timeout(120)

PROJECT = Path(__file__).resolve().parents[2]
DATA = PROJECT.parent / "shared" / "data" / "linearizability"


class LockedStore:
    """A correct (linearizable) register store: every operation under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, Any] = {}

    def apply(self, f: str, key: str, value: Any) -> Any:
        with self.lock:
            current = self.values.get(key)
            if f == "read":
                return current
            if f == "write":
                self.values[key] = value
                return None
            old, new = value
            if current == old:
                self.values[key] = new
                return True
            return False


def run_clients(rec: Recorder, store: LockedStore, clients: int = 6, ops_each: int = 40) -> None:
    def client(p: int) -> None:
        rng = random.Random(p)
        for _ in range(ops_each):
            key = rng.choice("xy")
            f = rng.choice(["read", "write", "cas"])
            value: Any = None
            if f == "write":
                value = rng.randint(0, 3)
            elif f == "cas":
                value = (rng.randint(0, 3), rng.randint(0, 3))
            h = rec.invoke(p, f, value, key)
            result = store.apply(f, key, value)
            if rng.random() < 0.05:
                rec.info(h)  # pretend the reply was lost: outcome unknown
            else:
                rec.ok(h, result)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_recorder_with_concurrent_clients_gives_linearizable_history() -> None:
    rec = Recorder(metadata={"model": register_model().spec()})
    rec.note("nemesis", action="partition", nodes=["n1"])
    run_clients(rec, LockedStore())
    history = rec.history()
    assert len(history) == 6 * 40
    times = [t for op in history for t in (op.invoke, op.complete)]
    assert len(set(times)) == len(times), "the event counter never repeats"
    assert history.metadata["events"][0]["event"] == "nemesis"
    assert check(history, register_model()).verdict is Verdict.LINEARIZABLE


def test_recorder_outcomes_and_pending_operations() -> None:
    rec = Recorder()
    a = rec.invoke(1, "write", 1, key="k")
    b = rec.invoke(2, "write", 2, key="k")
    c = rec.invoke(3, "read", key="k")
    d = rec.invoke(4, "write", 3, key="k")
    rec.ok(a)
    rec.fail(b)
    rec.ok(c, 1)
    with pytest.raises(KeyError):
        rec.ok(a)
    history = rec.history()
    status = {op.process: op.status for op in history}
    assert status == {1: Status.OK, 2: Status.FAIL, 3: Status.OK, 4: Status.UNKNOWN}
    assert [op.invoke for op in history] == [1, 2, 3, 4]
    assert rec.info(d).status is Status.UNKNOWN


def test_recorder_detects_stale_read() -> None:
    rec = Recorder()
    rec.ok(rec.invoke(1, "write", 1), None)
    rec.ok(rec.invoke(1, "write", 2), None)
    rec.ok(rec.invoke(2, "read"), 1)
    assert check(rec.history(), register_model()).verdict is Verdict.NOT_LINEARIZABLE


def sample_history() -> History:
    ops = [
        Operation(1, "write", 1, None, Status.OK, 0, 1, key="a"),
        Operation(2, "cas", (1, 2), True, Status.OK, 2, 3, key="a"),
        Operation(3, "write", [5, 6], None, Status.UNKNOWN, 4, None, key=("a", 1)),
        Operation("c", "read", None, 2, Status.OK, 5.5, 6.25, key="a"),
        Operation(4, "write", 9, None, Status.FAIL, 7, 8, key="a"),
    ]
    return History(ops, {"model": register_model().spec(), "events": [{"event": "kill", "node": "n2"}]})


def test_json_round_trip(tmp_path: Path) -> None:
    original = sample_history()
    path = save_history(original, tmp_path / "h.json")
    loaded = load_history(path)
    assert loaded.metadata == original.metadata
    # JSON has no tuples; lists come back as tuples so values stay hashable model states.
    expected = [
        op if op.key != ("a", 1) else Operation(3, "write", (5, 6), None, Status.UNKNOWN, 4, None, ("a", 1))
        for op in original
    ]
    assert loaded.operations == expected
    assert loads(dumps(loaded)).operations == loaded.operations
    document = json.loads(path.read_text())
    assert document["format"] == "lincheck-history"
    assert document["operations"][2]["complete"] is None and document["operations"][2]["status"] == "unknown"


def test_json_rejects_other_documents() -> None:
    with pytest.raises(ValueError):
        loads('{"format": "something-else", "operations": []}')


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # Run from the project root so that the package there (not an install) is the one imported.
    return subprocess.run(
        [sys.executable, "-m", "lincheck", *map(str, args)],
        cwd=PROJECT, capture_output=True, text=True, timeout=100,
    )


def test_cli_exit_codes_and_explanation(tmp_path: Path) -> None:
    good = save_history(sample_history(), tmp_path / "good.json")
    bad_history = sample_history()
    bad_history.operations.append(Operation(5, "read", None, 1, Status.OK, 10, 11, key="a"))
    bad = save_history(bad_history, tmp_path / "bad.json")

    done = run_cli(good)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LINEARIZABLE" in done.stdout and "NOT" not in done.stdout

    done = run_cli(bad)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "NOT LINEARIZABLE" in done.stdout
    assert "key 'a'" in done.stdout
    assert "p5 [a] read() -> 1" in done.stdout.replace("'", "")
    assert "minimal contradiction" in done.stdout

    # Several files: any violation wins.
    assert run_cli(good, bad).returncode == 1
    assert run_cli(tmp_path / "missing.json").returncode == 2


def test_cli_time_limit_and_model_override(tmp_path: Path) -> None:
    ops = [Operation(p, "append", f"<{p}>", None, Status.OK, p, 100 + p, key="k") for p in range(12)]
    ops.append(Operation(12, "get", None, "impossible", Status.OK, 200, 201, key="k"))
    path = save_history(History(ops), tmp_path / "hard.json")
    done = run_cli(path, "--model", "kv", "--timeout", "0.3")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "UNKNOWN" in done.stdout

    # The same history with a read of the initial value: linearizable only if that value is "".
    easy = save_history(History([Operation(0, "get", None, "", Status.OK, 0, 1, key="k")]), tmp_path / "e")
    assert run_cli(easy, "--model", "kv").returncode == 0
    assert run_cli(easy, "--model", "kv", "--initial", "null").returncode == 1
    assert check(load_history(easy), kv_model()).linearizable is True


def test_cli_reads_jepsen_files_directly() -> None:
    if not DATA.is_dir():
        pytest.skip(f"Jepsen linearizability data not found at {DATA}")
    assert run_cli(DATA / "jepsen_etcd" / "etcd_002.log").returncode == 0
    done = run_cli(DATA / "jepsen_etcd" / "etcd_000.log")
    assert done.returncode == 1 and "no linearization gets past the return of" in done.stdout
    assert run_cli(DATA / "kv" / "c10-bad.txt").returncode == 1

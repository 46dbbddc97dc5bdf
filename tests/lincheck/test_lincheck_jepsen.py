"""Verdicts on the real Jepsen histories in the shared data directory match its README.

The data lives outside the repository, next to it: ``<project>/../shared/data/linearizability``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from lincheck.checker import Verdict, check, check_operations
from lincheck.formats import parse_etcd_log, parse_kv
from lincheck.history import History
from lincheck.model import model_from_spec

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "linearizability"
README = DATA / "README.md"
MISSING = f"Jepsen linearizability data not found at {DATA}"


def etcd_expectations() -> dict[str, bool]:
    """``{"000": False, ...}`` from the README's "Expected verdict per file" list."""
    return {n: v == "true" for n, v in re.findall(r"\b(\d{3}):(true|false)\b", README.read_text())}


def etcd_cases() -> list:
    if not README.is_file():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=MISSING), id="etcd-data-missing")]
    return [pytest.param(n, v, id=f"etcd_{n}") for n, v in sorted(etcd_expectations().items())]


KV_FILES = ["c01-ok", "c01-bad", "c10-ok", "c10-bad", "c50-ok", "c50-bad"]


def check_file(history: History) -> Verdict:
    return check(history, model_from_spec(history.metadata["model"])).verdict


@pytest.mark.parametrize(("number", "linearizable"), etcd_cases())
def test_etcd_verdict_matches_readme(number: str, linearizable: bool) -> None:
    history = parse_etcd_log(DATA / "jepsen_etcd" / f"etcd_{number}.log")
    assert len(history) > 0
    expected = Verdict.LINEARIZABLE if linearizable else Verdict.NOT_LINEARIZABLE
    assert check_file(history) is expected


@pytest.mark.parametrize("name", KV_FILES)
def test_kv_verdict_matches_readme(name: str) -> None:
    if not README.is_file():
        pytest.skip(MISSING)
    history = parse_kv(DATA / "kv" / f"{name}.txt")
    expected = Verdict.LINEARIZABLE if name.endswith("-ok") else Verdict.NOT_LINEARIZABLE
    assert check_file(history) is expected


def test_readme_lists_all_102_etcd_histories() -> None:
    if not README.is_file():
        pytest.skip(MISSING)
    expected = etcd_expectations()
    assert len(expected) == 102
    assert all((DATA / "jepsen_etcd" / f"etcd_{n}.log").is_file() for n in expected)


def test_violations_explained_by_prefix() -> None:
    """For each bad etcd file the reported prefix is itself non-linearizable."""
    if not README.is_file():
        pytest.skip(MISSING)
    model = model_from_spec("register")
    for n, ok in etcd_expectations().items():
        if ok:
            continue
        result = check(parse_etcd_log(DATA / "jepsen_etcd" / f"etcd_{n}.log"), model)
        failure = result.failures[0]
        assert failure.blocked is not None
        assert check_operations(failure.prefix, model).verdict is Verdict.NOT_LINEARIZABLE, n


def test_all_jepsen_histories_are_checked_quickly() -> None:
    """Parsing and checking every history: about 2-3 s here; fail only if far off."""
    if not README.is_file():
        pytest.skip(MISSING)
    start = time.perf_counter()
    histories = [parse_etcd_log(DATA / "jepsen_etcd" / f"etcd_{n}.log") for n in etcd_expectations()]
    histories += [parse_kv(DATA / "kv" / f"{name}.txt") for name in KV_FILES]
    for history in histories:
        assert check_file(history) is not Verdict.UNKNOWN
    elapsed = time.perf_counter() - start
    print(f"checked {len(histories)} Jepsen histories in {elapsed:.2f} s")
    assert elapsed < 60

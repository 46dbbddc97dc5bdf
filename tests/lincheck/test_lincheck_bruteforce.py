"""Property tests: the WGL checker agrees with a brute-force checker on small random histories.

The brute force knows nothing about entries, linked lists, memoisation or
partitioning: it enumerates every order of the operations that respects
real-time precedence (fail ops left out, unknown ops optional), replaying the
whole multi-key store, and says whether any order explains every result.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Import from the submodules rather than the package root: the venv's editable install
# may expose ``lincheck`` as a namespace package, whose __init__ would then not run.
from lincheck.checker import Verdict, check, check_operations
from lincheck.explain import minimal_core
from lincheck.history import History, Operation, Status, partition_by_key
from lincheck.model import StoreModel, kv_model, register_model

pytestmark = pytest.mark.timeout(120)

SETTINGS = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def brute_force(ops: list[Operation], model: StoreModel) -> bool:
    """Is there an order of the ops (≤ 7) consistent with real time that explains all results?"""
    ops = [op for op in ops if op.status is not Status.FAIL]
    assert len(ops) <= 7
    required = frozenset(i for i, op in enumerate(ops) if op.status is Status.OK)
    # j may only be placed once every op that definitely finished before j started is placed.
    before = [
        frozenset(i for i, a in enumerate(ops) if a.status is Status.OK and a.end < b.invoke) for b in ops
    ]

    def extend(placed: frozenset[int], states: dict[Hashable, Any]) -> bool:
        if required <= placed:
            return True  # any unknown ops not placed simply never happened
        for j, op in enumerate(ops):
            if j in placed or not before[j] <= placed:
                continue
            ok, new = model.step(states.get(op.key, model.init()), op)
            if ok and extend(placed | {j}, {**states, op.key: new}):
                return True
        return False

    return extend(frozenset(), {})


def assert_valid_witness(history: list[Operation], model: StoreModel, result: Any) -> None:
    """A linearizable verdict must come with a real linearization of every key."""
    for key, ops in partition_by_key(op for op in history if op.status is not Status.FAIL).items():
        order = result.keys[key].linearization
        assert {id(op) for op in ops if op.status is Status.OK} <= {id(op) for op in order}
        state = model.init()
        for k, op in enumerate(order):
            ok, state = model.step(state, op)
            assert ok, f"witness step {op} rejected"
            assert state == result.keys[key].states[k]
            for later in order[k + 1:]:
                assert not (later.status is Status.OK and later.end < op.invoke), "real-time order violated"


# --- history generators -------------------------------------------------------------------

VALUES = st.integers(0, 2)


@st.composite
def intervals(draw: st.DrawFn) -> tuple[int, int]:
    a, b = draw(st.integers(0, 14)), draw(st.integers(0, 14))
    return min(a, b), max(a, b)


@st.composite
def register_calls(draw: st.DrawFn) -> tuple[str, Any]:
    f = draw(st.sampled_from(["read", "write", "cas"]))
    if f == "read":
        return f, None
    if f == "write":
        return f, draw(VALUES)
    return f, (draw(st.one_of(st.none(), VALUES)), draw(VALUES))


@st.composite
def random_histories(draw: st.DrawFn) -> list[Operation]:
    """Arbitrary results: mostly not linearizable once there are a few reads."""
    ops = []
    for p in range(draw(st.integers(0, 7))):
        f, value = draw(register_calls())
        result = {"read": draw(st.one_of(st.none(), VALUES)), "write": None, "cas": draw(st.booleans())}[f]
        status = draw(st.sampled_from([Status.OK] * 4 + [Status.UNKNOWN, Status.FAIL]))
        t0, t1 = draw(intervals())
        key = draw(st.sampled_from(["a", "b"]))
        ops.append(Operation(p, f, value, result if status is Status.OK else None, status, t0, t1, key))
    return ops


@st.composite
def simulated_histories(draw: st.DrawFn, kv: bool = False) -> list[Operation]:
    """Results from a real sequential execution at random points inside each interval, then
    optionally one result corrupted: mostly linearizable, plus near misses."""
    model = kv_model() if kv else register_model()
    n = draw(st.integers(1, 7))
    calls = []
    for p in range(n):
        if kv:
            f = draw(st.sampled_from(["get", "put", "append"]))
            value = None if f == "get" else draw(st.sampled_from(["x", "y", "z"]))
        else:
            f, value = draw(register_calls())
        t0, t1 = draw(intervals())
        point = draw(st.integers(t0, t1))
        fate = draw(st.sampled_from(["ok"] * 5 + ["unknown-applied", "unknown-lost", "fail"]))
        calls.append((point, p, f, value, t0, t1, fate, draw(st.sampled_from(["a", "b", "c"]))))
    states: dict[str, Any] = {}
    ops = []
    for _point, p, f, value, t0, t1, fate, key in sorted(calls):
        probe = Operation(p, f, value, None, Status.UNKNOWN, t0, None, key)
        result = None
        if fate in ("ok", "unknown-applied"):
            before = states.get(key, model.init())
            _, states[key] = model.step(before, probe)
            if f in ("read", "get"):
                result = before
            elif f == "cas":
                result = before == value[0]
        status = {"ok": Status.OK, "fail": Status.FAIL}.get(fate, Status.UNKNOWN)
        ops.append(Operation(p, f, value, result if status is Status.OK else None, status, t0, t1, key))
    if draw(st.booleans()):
        i = draw(st.integers(0, n - 1))
        op = ops[i]
        if op.status is Status.OK and op.f in ("read", "get", "cas"):
            bad = {"read": draw(VALUES), "get": draw(st.sampled_from(["", "x", "yx"])), "cas": not op.result}
            ops[i] = replace(op, result=bad[op.f])
    return ops


# --- properties -----------------------------------------------------------------------------


def agree(ops: list[Operation], model: StoreModel) -> None:
    expected = brute_force(ops, model)
    result = check(History(ops), model, exhaustive=True)
    assert result.linearizable == expected, "\n".join(op.describe() for op in ops)
    if expected:
        assert_valid_witness(ops, model, result)
    else:
        for bad in result.failures:
            # The reported prefix is itself a violation, and so is its minimal core on its own,
            # even with the results of its "effects" ignored.
            assert not brute_force(bad.prefix, model)
            core = minimal_core(bad.prefix, model)
            assert core.observations and not brute_force(core.operations, model)
            ops_in_core = core.operations
            effects = [i for i, op in enumerate(ops_in_core) if op in core.effects]
            relaxed = check_operations(ops_in_core, model, ignore_results=effects)
            assert relaxed.verdict is Verdict.NOT_LINEARIZABLE


@SETTINGS
@given(random_histories())
def test_random_register_histories_match_brute_force(ops: list[Operation]) -> None:
    agree(ops, register_model())


@SETTINGS
@given(simulated_histories())
def test_simulated_register_histories_match_brute_force(ops: list[Operation]) -> None:
    agree(ops, register_model())


@SETTINGS
@given(simulated_histories(kv=True))
def test_simulated_kv_histories_match_brute_force(ops: list[Operation]) -> None:
    agree(ops, kv_model())


@SETTINGS
@given(simulated_histories())
def test_smallest_prefix_is_tight(ops: list[Operation]) -> None:
    """Cutting the reported prefix just before its blocking return makes it linearizable."""
    model = register_model()
    for key, part in partition_by_key(ops).items():
        res = check_operations(part, model, key=key)
        if res.verdict is not Verdict.NOT_LINEARIZABLE:
            continue
        assert res.blocked is not None
        cut = res.blocked.end
        shorter = [
            op if op.end < cut or op.status is not Status.OK else op.as_unknown()
            for op in res.prefix
        ]
        assert brute_force(shorter, model)


def test_generators_produce_both_verdicts() -> None:
    """Guard against a generator that silently only yields one kind of history."""
    seen: set[bool] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(simulated_histories())
    def collect(ops: list[Operation]) -> None:
        seen.add(brute_force(ops, register_model()))

    collect()
    assert seen == {True, False}

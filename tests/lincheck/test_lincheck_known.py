"""Hand-written histories with known verdicts, and the checker's explanations and limits."""

from __future__ import annotations

from typing import Any

import pytest

from lincheck.checker import Verdict, check, check_operations
from lincheck.explain import minimal_core, render
from lincheck.history import History, Operation, Status
from lincheck.model import StoreModel, kv_model, model_from_spec, register_model

pytestmark = pytest.mark.timeout(60)

OK, FAIL, UNKNOWN = Status.OK, Status.FAIL, Status.UNKNOWN


def op(p: int, f: str, value: Any, result: Any, t0: float, t1: float | None,
       status: Status = OK, key: Any = None) -> Operation:
    return Operation(p, f, value, result, status, t0, t1, key)


def w(p: int, v: Any, t0: float, t1: float | None, status: Status = OK, key: Any = None) -> Operation:
    return op(p, "write", v, None, t0, t1, status, key)


def r(p: int, v: Any, t0: float, t1: float, key: Any = None) -> Operation:
    return op(p, "read", None, v, t0, t1, OK, key)


def cas(p: int, old: Any, new: Any, swapped: bool | None, t0: float, t1: float | None,
        status: Status = OK, key: Any = None) -> Operation:
    return op(p, "cas", (old, new), swapped, t0, t1, status, key)


REGISTER = register_model()

BAD = {
    "stale read": [w(0, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)],
    "read of initial value after acknowledged write": [w(0, 1, 0, 1), r(1, None, 2, 3)],
    "read of a value never written": [w(0, 1, 0, 1), w(1, 2, 0, 3), r(2, 7, 1, 4)],
    "cas claims success on the wrong value": [w(0, 1, 0, 1), cas(1, 0, 2, True, 2, 3)],
    "cas claims failure on the right value": [w(0, 1, 0, 1), cas(1, 1, 2, False, 2, 3), r(2, 1, 4, 5)],
    "two concurrent cas on the same old value both win": [
        w(0, 0, 0, 1), cas(1, 0, 1, True, 2, 5), cas(2, 0, 2, True, 3, 6),
    ],
    "value goes back in time": [w(0, 1, 0, 10), r(1, 1, 2, 3), r(2, None, 4, 5)],
    "failed write is visible": [w(0, 1, 0, 1, FAIL), r(1, 1, 2, 3)],
    "indeterminate write cannot be undone": [w(0, 1, 0, None, UNKNOWN), r(1, 1, 2, 3), r(2, None, 4, 5)],
    "indeterminate write cannot act before its invocation": [r(1, 1, 0, 1), w(0, 1, 2, None, UNKNOWN)],
}

GOOD = {
    "empty": [],
    "sequential": [w(0, 1, 0, 1), r(1, 1, 2, 3), cas(0, 1, 2, True, 4, 5), cas(1, 1, 3, False, 6, 7),
                   r(2, 2, 8, 9)],
    "concurrent read sees old value": [w(0, 1, 0, 10), r(1, None, 2, 3)],
    "concurrent read sees new value": [w(0, 1, 0, 10), r(1, 1, 2, 3)],
    "concurrent writes in either order": [w(0, 1, 0, 5), w(1, 2, 1, 6), r(2, 1, 7, 8)],
    "unknown write takes effect late": [w(0, 1, 0, None, UNKNOWN), w(1, 2, 1, 2), r(2, 1, 10, 11)],
    "unknown write never takes effect": [w(0, 1, 0, None, UNKNOWN), r(1, None, 5, 6), r(2, None, 7, 8)],
    "unknown write seen only later": [w(0, 1, 0, None, UNKNOWN), r(1, None, 5, 6), r(2, 1, 7, 8)],
    "unknown cas takes effect": [w(0, 5, 0, 1), cas(1, 5, 6, None, 2, 3, UNKNOWN), r(2, 6, 20, 21)],
    "failed write has no effect": [w(0, 1, 0, 1), w(1, 2, 2, 3, FAIL), r(2, 1, 4, 5)],
    "only indeterminate operations": [w(0, 1, 0, None, UNKNOWN), cas(1, 1, 2, None, 1, None, UNKNOWN)],
    # Operations that merely touch (one returns at t, the other is invoked at t) count as concurrent.
    "touching intervals are concurrent": [w(0, 1, 0, 2), r(1, None, 2, 3)],
}


@pytest.mark.parametrize("ops", BAD.values(), ids=BAD.keys())
def test_known_bad_register_histories(ops: list[Operation]) -> None:
    result = check(History(ops), REGISTER)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.linearizable is False
    failure = result.failures[0]
    assert failure.blocked is not None and failure.blocked in ops
    assert check_operations(failure.prefix, REGISTER).verdict is Verdict.NOT_LINEARIZABLE


@pytest.mark.parametrize("ops", GOOD.values(), ids=GOOD.keys())
def test_known_good_register_histories(ops: list[Operation]) -> None:
    result = check(History(ops), REGISTER)
    assert result.verdict is Verdict.LINEARIZABLE
    assert result.linearizable is True
    assert not result.failures


def test_lost_append_in_kv_store() -> None:
    ops = [
        op(0, "append", "a", None, 0, 2, key="k"),
        op(1, "append", "b", None, 1, 3, key="k"),
        op(2, "get", None, "a", 4, 5, key="k"),
    ]
    assert check(ops, kv_model()).verdict is Verdict.NOT_LINEARIZABLE
    ops[2] = op(2, "get", None, "ba", 4, 5, key="k")
    assert check(ops, kv_model()).verdict is Verdict.LINEARIZABLE


def test_kv_put_and_initial_empty_string() -> None:
    ops = [op(0, "get", None, "", 0, 1, key="x"), op(1, "put", "v", None, 2, 3, key="x"),
           op(0, "append", "w", None, 4, 5, key="x"), op(1, "get", None, "vw", 6, 7, key="x")]
    assert check(ops, kv_model()).linearizable is True
    # With the register's initial None, the first get of "" is impossible.
    assert check(ops, StoreModel(None)).linearizable is False


def test_keys_are_checked_independently_and_violation_is_attributed() -> None:
    ops = [w(0, 1, 0, 1, key="a"), r(1, 1, 2, 3, key="a"),
           w(0, 5, 4, 5, key="b"), r(1, None, 6, 7, key="b"),
           r(2, 5, 8, 9, key="a")]  # a read of key b's value on key a is wrong too...
    result = check(ops, REGISTER, exhaustive=True)
    assert {k: v.verdict for k, v in result.keys.items()} == {
        "a": Verdict.NOT_LINEARIZABLE, "b": Verdict.NOT_LINEARIZABLE,
    }
    # ...while the same reads on their own keys are fine.
    ok = [w(0, 1, 0, 1, key="a"), w(1, 2, 0, 1, key="b"), r(2, 1, 2, 3, key="a"), r(3, 2, 2, 3, key="b")]
    assert check(ok, REGISTER).linearizable is True


def test_explanation_of_a_stale_read() -> None:
    stale = BAD["stale read"]
    result = check(stale, REGISTER)
    failure = result.failures[0]
    assert failure.key is None
    assert failure.blocked == stale[2]
    assert failure.prefix == stale
    assert failure.linearization == stale[:2] and failure.states == [1, 2]
    # The first write is irrelevant: it could not have happened after the second.
    core = minimal_core(failure.prefix, REGISTER)
    assert core.observations == [stale[2]] and core.effects == [stale[1]]
    text = render(result, REGISTER)
    assert "NOT LINEARIZABLE" in text
    assert "these results cannot all be right:\n      p2 read() -> 1" in text
    assert "given that these operations took effect within their intervals:\n      p1 write(2)" in text


def test_witness_for_linearizable_history_respects_unknowns() -> None:
    ops = GOOD["unknown write takes effect late"]
    result = check(ops, REGISTER).keys[None]
    assert result.linearization == [ops[1], ops[0], ops[2]]
    assert result.states == [2, 1, 1]


def hard_appends(n: int = 12, key: str = "k") -> list[Operation]:
    """n fully concurrent appends, then a get that no order explains: n! orders to rule out."""
    ops = [op(p, "append", f"<{p}>", None, p, 100 + p, key=key) for p in range(n)]
    ops.append(op(n, "get", None, "impossible", 200, 201, key=key))
    return ops


def test_time_limit_gives_unknown_verdict() -> None:
    result = check(hard_appends(), kv_model(), timeout=0.2)
    assert result.verdict is Verdict.UNKNOWN and result.linearizable is None
    assert result.keys["k"].reason == "time limit reached"
    assert result.elapsed < 5
    assert "UNKNOWN" in render(result, kv_model(), minimize_timeout=None)


def test_violation_on_one_key_ends_the_check_without_waiting_for_hard_keys() -> None:
    ops = hard_appends(key="hard") + [op(0, "put", "x", None, 0, 1, key="easy"),
                                      op(1, "get", None, "y", 2, 3, key="easy")]
    result = check(ops, kv_model(), timeout=30)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.elapsed < 5
    assert result.keys["easy"].verdict is Verdict.NOT_LINEARIZABLE
    assert result.keys["hard"].verdict is Verdict.UNKNOWN
    assert "abandoned" in result.keys["hard"].reason


def test_model_rejects_unknown_function() -> None:
    with pytest.raises(ValueError, match="does not know operation 'frobnicate'"):
        check([op(0, "frobnicate", None, None, 0, 1)], REGISTER)


def test_model_specs() -> None:
    assert model_from_spec(None).initial is None
    assert model_from_spec("kv").initial == ""
    assert model_from_spec({"name": "kv", "initial": None}).initial is None
    assert model_from_spec({"name": "register", "initial": 0}).spec() == {"name": "register", "initial": 0}
    with pytest.raises(ValueError):
        model_from_spec("queue")


def test_operation_validation() -> None:
    with pytest.raises(ValueError):
        w(0, 1, 5, 4)  # completes before it is invoked
    with pytest.raises(ValueError):
        w(0, 1, 5, None)  # an ok operation needs a completion time
    assert w(0, 1, 5, None, UNKNOWN).end == float("inf")
    assert Operation(0, "read", status="fail", invoke=0, complete=1).status is Status.FAIL

"""Turning a verdict into something a person can act on.

For a non-linearizable key the checker already reports a non-linearizable
prefix. That can still hold dozens of operations, so :func:`minimal_core`
shrinks it further by *relaxing* operations, in two degrees: ignore what an
``ok`` operation returned (it must still take effect within its interval),
then also allow it not to have taken effect at all. Relaxing only adds
possible linearizations, so if the relaxed history is still not
linearizable, neither was the original -- and what is left un-relaxed is a
contradiction on its own, whatever the other operations did. (Relaxing to
fully ``unknown``, "any time after invocation", would be just as sound but
keeps far more operations: every write of the value a stale read saw could
then explain it.) Greedy relaxation in halving chunks, as in delta debugging,
yields a core from which no single operation can be relaxed further.

:func:`render` formats a :class:`~lincheck.checker.CheckResult` as text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lincheck.checker import CheckResult, KeyResult, Verdict, check_operations
from lincheck.history import Operation, Status
from lincheck.model import Model


@dataclass
class Core:
    """A minimal contradiction: ``observations`` cannot all have returned what they did,
    given that ``effects`` took effect within their intervals, whatever else happened."""

    observations: list[Operation]
    effects: list[Operation]

    @property
    def operations(self) -> list[Operation]:
        return sorted(self.observations + self.effects, key=lambda op: op.invoke)


def minimal_core(operations: list[Operation], model: Model[Any], timeout: float = 10.0) -> Core:
    """Shrink one key's non-linearizable history to a minimal contradiction.

    ``operations`` is e.g. a :attr:`KeyResult.prefix`. Each ``ok`` operation is
    relaxed as far as the history stays non-linearizable: first its result is
    ignored (it must still take effect within its interval), then it is made
    optional (it may also never have taken effect). Operations whose result
    cannot be ignored are the core's ``observations``; those whose result could
    be ignored but not their effect are its ``effects``; the rest do not matter.

    Result relaxations keep the search cheap, optional ones can make it
    expensive (every subset of them is a possibility), so each check gets a
    slice of ``timeout`` and a relaxation whose check does not finish in time
    is simply not taken: the answer is always a genuine contradiction, just
    possibly a larger one than necessary.
    """
    deadline = time.monotonic() + timeout
    per_check = max(0.1, timeout / 20)
    definite = [i for i, op in enumerate(operations) if op.status is Status.OK]
    free_results: set[int] = set()
    optional: set[int] = set()

    def still_contradictory(results: set[int], skippable: set[int]) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        result = check_operations(
            operations, model, timeout=min(remaining, per_check), ignore_results=results, optional=skippable
        )
        return result.verdict is Verdict.NOT_LINEARIZABLE

    _greedy(definite, lambda group: still_contradictory(free_results | group, optional), free_results)
    # Only an operation whose result does not matter can be left out altogether.
    effects_first = [i for i in definite if i in free_results]
    _greedy(effects_first, lambda group: still_contradictory(free_results, optional | group), optional)
    return Core(
        observations=[operations[i] for i in definite if i not in free_results],
        effects=[operations[i] for i in definite if i in free_results and i not in optional],
    )


def _greedy(candidates: list[int], works: Callable[[set[int]], bool], relaxed: set[int]) -> None:
    """Add to ``relaxed`` every candidate that ``works``, trying halving chunks down to singles.

    Relaxation is monotone (relaxing more never removes a linearization), so
    the final single-element pass leaves nothing that could still be relaxed.
    """
    chunk = max(1, len(candidates) // 2)
    while True:
        todo = [i for i in candidates if i not in relaxed]
        for start in range(0, len(todo), chunk):
            group = set(todo[start:start + chunk])
            if works(group):
                relaxed |= group
        if chunk == 1:
            return
        chunk //= 2


def render(
    result: CheckResult,
    model: Model[Any],
    minimize_timeout: float | None = 10.0,
    context: int = 8,
) -> str:
    """Multi-line text: the verdict and, per violating key, why.

    ``minimize_timeout`` is the budget for :func:`minimal_core` per failing key
    (``None`` skips it); ``context`` is how many operations of the longest
    partial linearization to show.
    """
    lines = [f"{_headline(result.verdict)} (checked {len(result.keys)} key(s) in {result.elapsed:.3f} s)"]
    for kr in result.failures:
        lines.extend(_explain_key(kr, model, minimize_timeout, context))
    undecided = [kr for kr in result.keys.values() if kr.verdict is Verdict.UNKNOWN]
    if undecided:
        reasons = sorted({kr.reason for kr in undecided})
        lines.append(f"{len(undecided)} key(s) undecided: {'; '.join(reasons)}")
    return "\n".join(lines)


def _headline(v: Verdict) -> str:
    return {
        Verdict.LINEARIZABLE: "LINEARIZABLE",
        Verdict.NOT_LINEARIZABLE: "NOT LINEARIZABLE",
        Verdict.UNKNOWN: "UNKNOWN (time limit reached before a verdict)",
    }[v]


def _explain_key(kr: KeyResult, model: Model[Any], minimize_timeout: float | None, context: int) -> list[str]:
    out = [f"key {kr.key!r}: not linearizable ({len(kr.operations)} operation(s) on this key)"]
    if kr.blocked is not None:
        out.append("  no linearization gets past the return of")
        out.append(f"    {kr.blocked.describe()}")
        out.append(f"  so the {len(kr.prefix)} operation(s) invoked before that are already not linearizable")
    if kr.linearization:
        shown = list(zip(kr.linearization, kr.states, strict=True))[-context:]
        out.append(
            f"  longest partial linearization: {len(kr.linearization)} operation(s)"
            + (f", last {len(shown)}:" if len(shown) < len(kr.linearization) else ":")
        )
        describe_state = getattr(model, "describe_state", repr)
        for op, state in shown:
            out.append(f"    {op.describe()}   => state {describe_state(state)}")
    if minimize_timeout is not None and kr.prefix:
        core = minimal_core(kr.prefix, model, minimize_timeout)
        out.append(
            "  minimal contradiction (every other operation may or may not have taken effect, within its"
            " interval, or any time after its invocation if indeterminate):"
        )
        out.append("    these results cannot all be right:")
        out.extend(f"      {op.describe()}" for op in sorted(core.observations, key=lambda o: o.invoke))
        if core.effects:
            out.append("    given that these operations took effect within their intervals:")
            out.extend(f"      {op.describe()}" for op in sorted(core.effects, key=lambda o: o.invoke))
    return out

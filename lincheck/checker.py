"""The linearizability checker: Wing & Gong's search with Lowe's memoisation.

For each key the history becomes a list of call/return *entries* sorted by
time and threaded into a doubly linked list. The search walks the list from
the front:

* at a call entry it tries to linearize that operation now: if the model
  accepts it and the resulting ``(set of linearized ops, model state)`` pair
  has not been seen before, the call and its return are *lifted* out of the
  list, pushed on a stack, and the walk restarts at the front;
* at a return entry, the operation it closes would have to be linearized
  already but is not, so the search backtracks: pop the last choice, *unlift*
  it (restoring both entries in place) and try the call after it.

The memo set is Lowe's improvement ("Testing for linearizability", 2017): two
search nodes that linearized the same set of operations and reached the same
state have identical futures, so the second is pruned. Sets are Python ints
used as bitsets.

Outcomes: ``fail`` operations are dropped (they never happened); ``unknown``
operations get a return at +infinity, so they may be linearized anywhere after
their call. Once the first return left in the list is at +infinity, every
remaining operation is indeterminate and may simply never have happened, so
the search succeeds there.

Two refinements keep Jepsen histories with many timed-out writes cheap, both
sound because an indeterminate operation may always be left out:

* at each node, candidates with a known outcome are tried before
  indeterminate ones (any order is complete; this one finds witnesses sooner);
* an indeterminate operation that would leave the state unchanged is never
  applied: the node without it already covers every continuation.

Keys are searched as generators, interleaved in slices by a small scheduler,
which gives the time limit and lets a multi-key check stop at the first
violating key the way Porcupine's parallel checker does.

When a key is not linearizable, the deepest return entry any branch got stuck
at is where linearization becomes impossible: the operations invoked before it
already form a non-linearizable history (the *prefix*), while the history cut
just before that return is still linearizable. Both are reported, with the
longest partial linearization found (the witness that got there).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Generator, Hashable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lincheck.history import History, Operation, Status, partition_by_key
from lincheck.model import Model

# Search steps per scheduling slice: long enough that switching keys and reading
# the clock cost nothing next to the search, short enough (a few ms) to be fair.
_SLICE = 2048

# How a search node was left (kept on the backtracking stack).
_DEFINITE = 0  # applied an ok operation (first pass over the candidates)
_INDETERMINATE = 1  # applied an unknown operation (second pass)
_SKIPPED = 2  # let a relaxed optional operation's interval end without applying it


class Verdict(StrEnum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"  # undecided: the time limit ran out, or the search was abandoned


@dataclass
class KeyResult:
    """Outcome of checking one key's sub-history.

    ``operations`` are the ones that took part (``fail`` operations removed).
    ``linearization`` is a witness order: the complete one when linearizable,
    otherwise the longest partial one the search found, with ``states`` the
    model state after each operation in it. For a violation, ``blocked`` is
    the operation whose return the search could never get past and
    ``prefix`` the operations invoked before that return: already a
    non-linearizable history on its own.
    """

    key: Hashable
    verdict: Verdict
    operations: list[Operation]
    linearization: list[Operation] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)
    blocked: Operation | None = None
    prefix: list[Operation] = field(default_factory=list)
    steps: int = 0
    elapsed: float = 0.0
    reason: str = ""  # why an UNKNOWN verdict: time limit, or abandoned after another key failed

    @property
    def linearizable(self) -> bool | None:
        return _as_bool(self.verdict)


@dataclass
class CheckResult:
    """Outcome of checking a whole history (all keys)."""

    verdict: Verdict
    keys: dict[Hashable, KeyResult]
    elapsed: float = 0.0

    @property
    def linearizable(self) -> bool | None:
        """True / False, or None if the time limit was hit before a verdict."""
        return _as_bool(self.verdict)

    @property
    def failures(self) -> list[KeyResult]:
        """The non-linearizable keys, smallest offending prefix first."""
        bad = [r for r in self.keys.values() if r.verdict is Verdict.NOT_LINEARIZABLE]
        return sorted(bad, key=lambda r: len(r.prefix))


def _as_bool(v: Verdict) -> bool | None:
    return None if v is Verdict.UNKNOWN else v is Verdict.LINEARIZABLE


def check(
    history: History | Iterable[Operation],
    model: Model[Any],
    timeout: float | None = None,
    exhaustive: bool = False,
) -> CheckResult:
    """Check a multi-key history against ``model`` (applied per key).

    Keys are searched round-robin in small slices, so one hard key cannot
    starve the others. As soon as one key is found non-linearizable the whole
    history is (linearizability is local), and unless ``exhaustive`` is set
    the remaining keys are abandoned as ``UNKNOWN`` -- the same trade Porcupine
    makes, and the reason adversarial multi-key histories stay cheap.
    ``timeout`` (seconds) bounds the whole check; keys undecided by then are
    ``UNKNOWN``, and so is the verdict unless some key is non-linearizable.
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    ops = history.operations if isinstance(history, History) else list(history)
    parts = partition_by_key(ops)
    # Smallest keys first so that cheap verdicts come in early.
    searches = {key: _Search(key, parts[key], model) for key in sorted(parts, key=lambda k: len(parts[k]))}
    results = _schedule(searches, deadline, exhaustive)
    results = {key: results[key] for key in parts}
    verdicts = {r.verdict for r in results.values()}
    if Verdict.NOT_LINEARIZABLE in verdicts:
        verdict = Verdict.NOT_LINEARIZABLE
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.LINEARIZABLE
    return CheckResult(verdict, results, time.monotonic() - start)


def is_linearizable(
    history: History | Iterable[Operation], model: Model[Any], timeout: float | None = None
) -> bool | None:
    """Shorthand for ``check(...).linearizable``."""
    return check(history, model, timeout).linearizable


def check_operations(
    operations: Iterable[Operation],
    model: Model[Any],
    key: Hashable = None,
    timeout: float | None = None,
    ignore_results: Iterable[int] = (),
    optional: Iterable[int] = (),
) -> KeyResult:
    """Check one object's operations as they are (no partitioning by key).

    The last two arguments relax ``ok`` operations, by index into ``operations``
    (this is how :func:`lincheck.explain.minimal_core` shrinks a violation):
    ``ignore_results`` ones must still take effect within their interval but
    may have returned anything; ``optional`` ones, in addition, may not have
    taken effect at all.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    search = _Search(key, list(operations), model, frozenset(ignore_results), frozenset(optional))
    return _schedule({key: search}, deadline, exhaustive=True)[key]


def _schedule(
    searches: dict[Hashable, _Search], deadline: float | None, exhaustive: bool
) -> dict[Hashable, KeyResult]:
    """Run the searches interleaved slice by slice until all finish, one fails, or time runs out."""
    running = deque((key, search.run()) for key, search in searches.items())
    results: dict[Hashable, KeyResult] = {}
    stop_reason = ""
    while running:
        key, gen = running.popleft()
        t0 = time.monotonic()
        try:
            next(gen)
        except StopIteration as done:
            searches[key].elapsed += time.monotonic() - t0
            results[key] = done.value
            done.value.elapsed = searches[key].elapsed
            if done.value.verdict is Verdict.NOT_LINEARIZABLE and not exhaustive:
                stop_reason = f"abandoned: key {key!r} is already not linearizable"
                break
            continue
        now = time.monotonic()
        searches[key].elapsed += now - t0
        running.append((key, gen))
        if deadline is not None and now > deadline:
            stop_reason = "time limit reached"
            break
    for key, gen in running:
        gen.close()
        results[key] = searches[key].partial(stop_reason)
    return results


class _Search:
    """One WGL search over a single key; entries live in parallel int arrays.

    Entry ``p`` (0 <= p < 2n, in time order) is a call if ``is_call[p]``, for
    operation ``op_of[p]``; ``match[p]`` is the return entry of a call. Two
    sentinels, HEAD = 2n and TAIL = 2n + 1, spare the list code any None checks.
    """

    def __init__(
        self,
        key: Hashable,
        ops: list[Operation],
        model: Model[Any],
        ignore_results: frozenset[int] = frozenset(),
        optional: frozenset[int] = frozenset(),
    ) -> None:
        # "fail" operations never happened: they take no part in the search at all.
        kept = [(i, op) for i, op in enumerate(ops) if op.status is not Status.FAIL]
        self.key = key
        self.ops = [op for _, op in kept]
        self.optional = [i in optional and op.status is Status.OK for i, op in kept]
        # What the model is stepped with: an op whose result is ignored is presented as indeterminate
        # (the model then accepts any result), while its entries keep the real interval.
        self.step_ops = [
            op.as_unknown() if (i in ignore_results or i in optional) and op.status is Status.OK else op
            for i, op in kept
        ]
        self.model = model
        self.elapsed = 0.0
        self.steps = 0
        # Best partial linearization so far, kept on self so an abandoned search can still report it.
        self.deepest = -1
        self.best: list[tuple[int, Any, int]] = []
        self.best_state: Any = None
        events = []
        for i, op in enumerate(self.ops):
            # kind 0 (call) sorts before 1 (return) at equal times, so operations that merely
            # touch are treated as concurrent: the permissive reading of a tie.
            events.append((op.invoke, 0, i))
            events.append((op.end, 1, i))
        events.sort()
        m = len(events)
        self.head, self.tail = m, m + 1
        self.is_call = [kind == 0 for _, kind, _ in events]
        self.op_of = [i for _, _, i in events]
        self.at_infinity = [kind == 1 and t == math.inf for t, kind, _ in events]
        self.call_pos = [0] * len(self.ops)
        self.ret_pos = [0] * len(self.ops)
        for p, (_, kind, i) in enumerate(events):
            (self.call_pos if kind == 0 else self.ret_pos)[i] = p
        self.match = [
            self.ret_pos[i] if call else -1 for call, i in zip(self.is_call, self.op_of, strict=True)
        ]
        # Doubly linked list over entries plus sentinels: head -> 0 -> 1 -> ... -> m-1 -> tail.
        self.nxt = list(range(1, m + 1)) + [0, -1]
        self.prv = [-1] * (m + 2)
        for p in range(m):
            self.prv[p] = p - 1 if p else self.head
        self.nxt[self.head] = 0 if m else self.tail
        if m:
            self.nxt[m - 1] = self.tail
        self.prv[self.tail] = m - 1 if m else self.head

    def run(self) -> Generator[None, None, KeyResult]:
        """The search as a generator: yields every ``_SLICE`` steps, returns the result."""
        ops, model = self.step_ops, self.model
        nxt, prv, is_call, op_of, match, at_inf = (
            self.nxt, self.prv, self.is_call, self.op_of, self.match, self.at_infinity,
        )
        head, tail = self.head, self.tail
        step = model.step
        bits = [1 << i for i in range(len(ops))]
        unknown = [op.status is Status.UNKNOWN for op in self.ops]
        two_passes = any(unknown)
        optional, call_pos = self.optional, self.call_pos

        state: Any = model.init()
        self.best_state = state
        linearized = 0
        seen: set[tuple[int, Any]] = set()  # Lowe's memo of (linearized set, state)
        # (call entry, state before it, how it was taken: _DEFINITE, _INDETERMINATE or _SKIPPED)
        stack: list[tuple[int, Any, int]] = []
        steps = 0

        # Candidates are tried in two passes: operations with a known outcome first, then the
        # indeterminate ones. Any order is complete; this one finds witnesses far sooner, since
        # applying a timed-out write early usually just leads into a large dead subtree.
        stage = _DEFINITE
        pos = nxt[head]
        while pos != tail:
            steps += 1
            if steps % _SLICE == 0:
                self.steps = steps
                yield
            if is_call[pos]:
                i = op_of[pos]
                if unknown[i] != stage:  # not this pass's kind of operation
                    pos = nxt[pos]
                    continue
                ok, new_state = step(state, ops[i])
                # An indeterminate op that leaves the state unchanged is dominated by not applying it.
                if ok and not (unknown[i] and new_state == state):
                    new_lin = linearized | bits[i]
                    memo = (new_lin, new_state)
                    if memo not in seen:
                        seen.add(memo)
                        stack.append((pos, state, stage))
                        state, linearized, stage = new_state, new_lin, _DEFINITE
                        # Lift the call and its return out of the list.
                        r = match[pos]
                        nxt[prv[pos]] = nxt[pos]
                        prv[nxt[pos]] = prv[pos]
                        nxt[prv[r]] = nxt[r]
                        prv[nxt[r]] = prv[r]
                        pos = nxt[head]
                        continue
                pos = nxt[pos]
                continue

            # A return entry: its operation should have been linearized by now.
            if at_inf[pos]:
                # Only indeterminate operations remain; they may never have happened.
                break
            if pos > self.deepest:
                self.deepest, self.best, self.best_state = pos, list(stack), state
            if stage == _DEFINITE and two_passes:
                stage = _INDETERMINATE
                pos = nxt[head]
                continue
            i = op_of[pos]
            if stage != _SKIPPED and optional[i]:
                # A relaxed operation whose interval is over may simply never have happened.
                new_lin = linearized | bits[i]
                memo = (new_lin, state)
                if memo not in seen:
                    seen.add(memo)
                    c = call_pos[i]
                    stack.append((c, state, _SKIPPED))
                    linearized, stage = new_lin, _DEFINITE
                    nxt[prv[c]] = nxt[c]
                    prv[nxt[c]] = prv[c]
                    nxt[prv[pos]] = nxt[pos]
                    prv[nxt[pos]] = prv[pos]
                    pos = nxt[head]
                    continue
            if not stack:
                self.steps = steps
                return self._result(Verdict.NOT_LINEARIZABLE, self.best, self.best_state)
            # Backtrack: undo the last choice and try the next candidate after it.
            pos, state, stage = stack.pop()
            linearized ^= bits[op_of[pos]]
            # Unlift in reverse order of lifting so the neighbours' links are valid again.
            r = match[pos]
            nxt[prv[r]] = r
            prv[nxt[r]] = r
            nxt[prv[pos]] = pos
            prv[nxt[pos]] = pos
            # Skipping is the last alternative at a node, so after undoing it the node is exhausted:
            # go back to the return entry, where stage _SKIPPED leads straight to backtracking again.
            pos = r if stage == _SKIPPED else nxt[pos]
        self.steps = steps
        return self._result(Verdict.LINEARIZABLE, list(stack), state)

    def partial(self, reason: str) -> KeyResult:
        """Result for a search stopped before a verdict (time limit or abandoned)."""
        res = self._result(Verdict.UNKNOWN, self.best, self.best_state)
        res.reason = reason
        return res

    def _result(self, verdict: Verdict, stack: list[tuple[int, Any, int]], final_state: Any) -> KeyResult:
        # stack holds the state *before* each op; the state after op k is the one before op k+1.
        after = [s for _, s, _ in stack[1:]] + [final_state]
        pairs = [
            (self.ops[self.op_of[p]], st)
            for (p, _, how), st in zip(stack, after, strict=False)  # after is 1 longer when stack is empty
            if how != _SKIPPED
        ]
        order = [op for op, _ in pairs]
        states = [st for _, st in pairs]
        res = KeyResult(self.key, verdict, self.ops, order, states, steps=self.steps, elapsed=self.elapsed)
        if verdict is Verdict.NOT_LINEARIZABLE and self.deepest >= 0:
            res.blocked = self.ops[self.op_of[self.deepest]]
            res.prefix = self._prefix(self.deepest)
        return res

    def _prefix(self, cut: int) -> list[Operation]:
        """The operations called before entry ``cut``, unchanged.

        No branch of the search ever scanned past ``cut``, so calls after it never
        mattered: searching just these operations retraces the same failing tree.
        (Operations still running at ``cut`` keep their results: turning them into
        unknowns would forget constraints the search relied on.)
        """
        return [op for i, op in enumerate(self.ops) if self.call_pos[i] < cut]

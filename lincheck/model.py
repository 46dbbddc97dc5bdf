"""Sequential specifications (models) that histories are checked against.

A model is a deterministic state machine over one key (the :class:`Model`
protocol): ``init()`` gives the state before any operation and
``step(state, op)`` says whether ``op`` could have returned what it returned
when applied to ``state`` and what the state is afterwards. The checker
splits histories per key, so a model never sees more than one key and a
multi-key store is simply "this model, once per key".

States must be hashable and compare by value: the checker memoises
``(set of linearized operations, state)`` pairs.

:class:`StoreModel` covers both data sets this package was built for:

* the Jepsen etcd register: ``read`` / ``write(v)`` / ``cas((old, new))``, initial ``None``;
* the kv store: ``get`` / ``put(v)`` / ``append(s)`` (string concatenation), initial ``""``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol, TypeVar

from lincheck.history import Operation, Status

S = TypeVar("S", bound=Hashable)

_READS = frozenset({"read", "get"})
_WRITES = frozenset({"write", "put"})


class Model(Protocol[S]):
    """What the checker needs from a sequential specification."""

    def init(self) -> S:
        """State of a key before any operation touched it."""
        ...

    def step(self, state: S, op: Operation) -> tuple[bool, S]:
        """Apply ``op`` to ``state``: (could it return ``op.result``?, next state).

        For ``op.status == UNKNOWN`` the result is unconstrained, so ``ok`` must
        be true whenever the call is applicable at all.
        """
        ...

    # Optional extra: ``describe_state(state) -> str`` for explanations (``repr`` otherwise).


class StoreModel:
    """A single value per key supporting register and kv-store operations.

    Functions: ``read``/``get`` (returns the value), ``write``/``put`` (sets it),
    ``append`` (string concatenation; a missing value counts as ``""``) and
    ``cas`` whose input is ``(old, new)`` and whose result is whether it swapped.
    """

    def __init__(self, initial: Any = None, name: str = "store") -> None:
        self.initial = initial
        self.name = name

    def __repr__(self) -> str:
        return f"StoreModel(initial={self.initial!r}, name={self.name!r})"

    def spec(self) -> dict[str, Any]:
        """JSON-able description, inverse of :func:`model_from_spec`."""
        return {"name": self.name, "initial": self.initial}

    def init(self) -> Any:
        return self.initial

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        f = op.f
        known = op.status is Status.OK
        if f in _READS:
            return (not known or op.result == state), state
        if f in _WRITES:
            return True, op.value
        if f == "cas":
            old, new = op.value
            swapped = state == old
            if known and bool(op.result) != swapped:
                return False, state
            return True, (new if swapped else state)
        if f == "append":
            return True, ("" if state is None else state) + op.value
        raise ValueError(f"{self.name} model does not know operation {f!r}")

    def describe_state(self, state: Any) -> str:
        return repr(state)


def register_model(initial: Any = None) -> StoreModel:
    """The etcd-style compare-and-set register (initial value absent)."""
    return StoreModel(initial, name="register")


def kv_model(initial: Any = "") -> StoreModel:
    """The get/put/append key-value store (every key starts as ``""``)."""
    return StoreModel(initial, name="kv")


def model_from_spec(spec: dict[str, Any] | str | None) -> StoreModel:
    """Build a built-in model from a name or a ``{"name", "initial"}`` dict.

    Names: ``register`` (initial ``None``), ``kv`` (initial ``""``) and
    ``store`` (initial ``None``); an explicit ``initial`` overrides the default.
    """
    if spec is None:
        return register_model()
    if isinstance(spec, str):
        spec = {"name": spec}
    name = spec.get("name", "register")
    defaults = {"register": None, "kv": "", "store": None}
    if name not in defaults:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(defaults)})")
    initial = spec["initial"] if "initial" in spec else defaults[name]
    return StoreModel(initial, name=name)

"""lincheck: a linearizability checker for histories of concurrent operations.

Record what concurrent clients did (:class:`Recorder`, or parse Jepsen output
with :mod:`lincheck.formats`), then ask whether some sequential order of those
operations, consistent with their real-time order, explains every result
(:func:`check`, Wing & Gong's search with Lowe's memoisation, split per key).
Histories can be saved to JSON and replayed with ``python -m lincheck FILE``.

Modules: :mod:`~lincheck.history` (data types), :mod:`~lincheck.model`
(sequential specifications), :mod:`~lincheck.checker` (the search),
:mod:`~lincheck.recorder` (live recording), :mod:`~lincheck.jsonio` (save and
load), :mod:`~lincheck.formats` (Jepsen parsers), :mod:`~lincheck.explain`
(minimal counterexamples and text), :mod:`~lincheck.cli` (command line).
"""

from lincheck.checker import CheckResult, KeyResult, Verdict, check, check_operations, is_linearizable
from lincheck.explain import Core, minimal_core, render
from lincheck.history import History, Operation, Status, partition_by_key
from lincheck.jsonio import load_history, save_history
from lincheck.model import Model, StoreModel, kv_model, model_from_spec, register_model
from lincheck.recorder import Recorder

__all__ = [
    "CheckResult",
    "Core",
    "History",
    "KeyResult",
    "Model",
    "Operation",
    "Recorder",
    "Status",
    "StoreModel",
    "Verdict",
    "check",
    "check_operations",
    "is_linearizable",
    "kv_model",
    "load_history",
    "minimal_core",
    "model_from_spec",
    "partition_by_key",
    "register_model",
    "render",
    "save_history",
]

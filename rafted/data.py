"""The replicated value's behaviour: what a user implements to be replicated by rafted.

A data module is any class, module or object with three functions, called
without an instance (``module.new()``, ``module.command(data, arg)``,
``module.query(data, arg)``); a class is never instantiated. Subclassing
:class:`Data` is optional and only documents intent::

    class JustAnInt(rafted.Data):
        def new():
            return 0
        def command(data, arg):
            if arg == "inc":
                return data, data + 1
            ...
        def query(data, arg):
            return data

All three must be pure and deterministic: every member re-executes the same
commands in the same order to reproduce the value, and only the leader's
results reach clients.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Data", "DataModule", "check_data_module"]


class Data:
    """Optional base class for data modules (the port of the ``RaftedValue.Data`` behaviour).

    It deliberately defines no ``new``/``command``/``query`` of its own, so that
    ``make_config`` can tell a subclass that forgot one of them.
    """

    __slots__ = ()


@runtime_checkable
class DataModule(Protocol):
    """Structural type of a data module (``new``, ``command``, ``query``)."""

    def new(self) -> Any: ...

    def command(self, data: Any, arg: Any) -> tuple[Any, Any]: ...

    def query(self, data: Any, arg: Any) -> Any: ...


def check_data_module(module: Any) -> None:
    """Raise TypeError unless ``module`` has callable ``new``, ``command`` and ``query``."""
    missing = [name for name in ("new", "command", "query") if not callable(getattr(module, name, None))]
    if missing:
        raise TypeError(
            f"data_module must be a module, class or object with callable new(), command(data, arg) "
            f"and query(data, arg); {module!r} lacks {', '.join(missing)}"
        )

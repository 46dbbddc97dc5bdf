"""The ``pynode`` shell: an interactive Python prompt that is itself a node's process.

The prompt shows the node name, like ``iex(1@host)1>``; ``nodes``, ``rafted``
and ``RaftedValue`` are preloaded (rafted by name, lazily, so that ``nodes`` does
not depend on it).  The prompt runs in the main thread, which is a process of
its own: ``nodes.self()`` and ``nodes.flush()`` work there.  Code typed here lives
in a ``__main__`` namespace, so classes and functions defined at the prompt
travel to other nodes by value (cloudpickle).
"""

from __future__ import annotations

import code
import importlib
import os
import sys
import types
from typing import Any

import nodes
from nodes import process as _process

BANNER = (
    "pynode {name} (Python {py})\n"
    "nodes, rafted and RaftedValue are loaded; nodes.connect(\"2@host\") joins another node.\n"
    "Ctrl-D leaves the shell and stops the node."
)


class _Prompt:
    """A prompt that counts like the Erlang shell: ``(1@host)3>``."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.count = 1

    def __str__(self) -> str:
        return self.fmt.format(name=nodes.node(), n=self.count)


def shell_namespace() -> dict[str, Any]:
    main = types.ModuleType("__main__")
    namespace = main.__dict__
    namespace["__builtins__"] = __builtins__
    namespace["nodes"] = nodes
    try:
        rafted = importlib.import_module("rafted")
        namespace["rafted"] = rafted
        namespace["RaftedValue"] = getattr(rafted, "RaftedValue", rafted)
    except Exception as exc:  # noqa: BLE001 - the runtime alone still makes a usable shell
        print(f"(rafted not loaded: {exc})", file=sys.stderr)
    # make the namespace the real __main__ so pickling by value recognises its classes
    sys.modules["__main__"] = main
    return namespace


def _readline(namespace: dict[str, Any]) -> None:
    try:
        import atexit
        import readline
        import rlcompleter
    except ImportError:  # pragma: no cover - no readline on this platform
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    readline.parse_and_bind("tab: complete")
    history = os.path.expanduser(os.environ.get("PYNODE_HISTORY", "~/.pynode_history"))
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    atexit.register(lambda: _save_history(readline, history))


def _save_history(readline: Any, path: str) -> None:
    try:
        readline.write_history_file(path)
    except OSError:
        pass


class _Console(code.InteractiveConsole):
    def __init__(self, namespace: dict[str, Any], prompt: _Prompt) -> None:
        super().__init__(namespace, filename="<pynode>")
        self.prompt = prompt

    def push(self, line: str, *args: Any, **kwargs: Any) -> bool:
        more = super().push(line, *args, **kwargs)
        if not more:
            self.prompt.count += 1
        return more

    def runcode(self, code: Any) -> None:
        try:
            super().runcode(code)  # reports any exception, KeyboardInterrupt (Ctrl-C) too
        finally:
            _process.abandon_sends()  # a Ctrl-C may have cut a send short: none is in progress now


def run_shell() -> None:
    namespace = shell_namespace()
    prompt = _Prompt("({name}){n}> ")
    sys.ps1 = prompt  # type: ignore[assignment]
    sys.ps2 = "... "
    _readline(namespace)
    nodes.self()  # the shell is a process from its first line on
    banner = BANNER.format(name=nodes.node(), py=sys.version.split()[0])
    _Console(namespace, prompt).interact(banner=banner, exitmsg="")

"""Command line: ``python -m lincheck FILE...`` replays saved histories through the checker.

FILE may be a lincheck JSON history (see :mod:`lincheck.jsonio`), a Jepsen
etcd log or a kv EDN file; the format is sniffed. The model comes from
``--model``/``--initial`` if given, else from the file's ``metadata["model"]``,
else the register with initial value ``None``.

Exit status: 0 if every file is linearizable, 1 if any is not, 2 if a verdict
could not be reached (time limit) or the input was unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lincheck.checker import Verdict, check
from lincheck.explain import render
from lincheck.formats import load_file
from lincheck.model import model_from_spec

EXIT_LINEARIZABLE = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_UNKNOWN = 2
# With several files, a definite violation outranks an undecided file.
_SEVERITY = {EXIT_LINEARIZABLE: 0, EXIT_UNKNOWN: 1, EXIT_NOT_LINEARIZABLE: 2}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lincheck", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", metavar="FILE", help="history file(s) to check")
    p.add_argument("--model", choices=["register", "kv", "store"], help="override the model in the file")
    p.add_argument("--initial", type=json.loads, metavar="JSON", default=argparse.SUPPRESS,
                   help='initial value of every key, as JSON (e.g. null or "\\"\\"")')
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="give up after S seconds per file")
    p.add_argument("--exhaustive", action="store_true",
                   help="keep checking the other keys after one is found not linearizable")
    p.add_argument("--minimize-timeout", type=float, default=10.0, metavar="S",
                   help="time budget for shrinking a violation to a minimal core (0 disables)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    worst = EXIT_LINEARIZABLE
    for name in args.files:
        try:
            history = load_file(name)
        except (OSError, ValueError, KeyError) as e:
            print(f"{name}: cannot load: {e}", file=sys.stderr)
            worst = max(worst, EXIT_UNKNOWN, key=_SEVERITY.__getitem__)
            continue
        spec: dict[str, Any] = dict(history.metadata.get("model") or {})
        if args.model:
            spec = {"name": args.model}
        if hasattr(args, "initial"):  # SUPPRESS default: present only if given (null is a valid value)
            spec["initial"] = args.initial
        model = model_from_spec(spec or None)
        statuses = Counter(op.status.value for op in history)
        print(f"{name}: {len(history)} operation(s) on {len(history.keys())} key(s) "
              f"({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}); model {model!r}")
        result = check(history, model, timeout=args.timeout, exhaustive=args.exhaustive)
        minimize = args.minimize_timeout if args.minimize_timeout > 0 else None
        print(render(result, model, minimize_timeout=minimize))
        code = {
            Verdict.LINEARIZABLE: EXIT_LINEARIZABLE,
            Verdict.NOT_LINEARIZABLE: EXIT_NOT_LINEARIZABLE,
            Verdict.UNKNOWN: EXIT_UNKNOWN,
        }[result.verdict]
        worst = max(worst, code, key=_SEVERITY.__getitem__)
    return worst

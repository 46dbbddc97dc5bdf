"""Reading Linux's ``/proc/<pid>/stat`` files, for the runtime's scheduling rooms
(``_sched``, ``_held_cpus``)."""

from __future__ import annotations


def stat_fields(path: str) -> list[bytes]:
    """The fields of a /proc ``stat`` file, numbered as in proc(5): ``fields[39]`` is field 39."""
    with open(path, "rb") as f:
        stat = f.read()
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return [b"", b"", b"", *stat[stat.rindex(b")") + 2:].split()]

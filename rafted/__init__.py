"""rafted: a value replicated with Raft across ``nodes`` processes; a port of Elixir's rafted_value.

``import rafted`` gives the functions of the original's ``RaftedValue``
module; ``from rafted import RaftedValue`` gives the same module under the
Elixir name, so examples port line by line::

    import rafted
    from rafted import RaftedValue

    class JustAnInt(rafted.Data):
        def new():
            return 0
        def command(data, arg):
            return data, data + 1      # (ret, new_data)
        def query(data, arg):
            return data

    config = RaftedValue.make_config(JustAnInt)
    ("ok", leader) = RaftedValue.start_link(("create_new_consensus_group", config), name="foo")
    ("ok", follower) = RaftedValue.start_link(("join_existing_consensus_group", ["foo"]), name="bar")
    RaftedValue.command("foo", "inc")      # ("ok", 0)
    RaftedValue.query("foo", "get")        # ("ok", 1)

Error reasons are the original's atoms as strings (``"not_member"``,
``"will_break_quorum"``, ...). ``command``, ``query`` and
``query_non_leader`` return ``("error", "noproc" | "timeout")`` when the
member is gone or slow; the other functions raise ``nodes.Exit`` then, as
the original exits.
"""

from __future__ import annotations

import os
import sys as _sys
from typing import Any

import nodes
from rafted import server as _server
from rafted import startup as _startup
from rafted.communication import Communication, RemoteMessageGateway
from rafted.communication import call_catching_exit as _call_catching_exit
from rafted.config import Config, make_config
from rafted.data import Data
from rafted.leader_hook import LeaderHook, NoOp
from rafted.persistence import DEFAULT_LOG_FILE_MIN_SIZE as _DEFAULT_LOG_FILE_MIN_SIZE
from rafted.persistence import PersistenceError
from rafted.persistence import read_last_log_index as _read_last_log_index
from rafted.persistence import read_last_log_term_and_index as _read_last_log_term_and_index

__all__ = [
    "RaftedValue",
    "Config",
    "Data",
    "LeaderHook",
    "NoOp",
    "Communication",
    "RemoteMessageGateway",
    "PersistenceError",
    "make_config",
    "start_link",
    "command",
    "query",
    "query_non_leader",
    "change_config",
    "remove_follower",
    "replace_leader",
    "force_remove_member",
    "status",
    "read_last_log_index",
    "read_last_log_term_and_index",
]

_GROUP_INFO_FORMS = (
    '("create_new_consensus_group", config) or ("join_existing_consensus_group", [server, ...]) '
    "where a server is a pid, a registered name or a (name, node) tuple"
)


def _check_server(what: str, server: Any) -> None:
    ok = (
        isinstance(server, nodes.Pid)
        or (isinstance(server, str) and server != "")
        or (
            type(server) is tuple
            and len(server) == 2
            and isinstance(server[0], str)
            and isinstance(server[1], str)
        )
    )
    if not ok:
        raise TypeError(
            f"{what}: expected a server (a pid, a registered name or a (name, node) tuple), got {server!r}"
        )
    if isinstance(server, nodes.Pid):
        # a pid made by hand: its node is checked as a (name, node) tuple's (below) is
        if not isinstance(server.node, str):
            raise TypeError(f"{what}: a pid's node must be a 'name@host' str, got {server!r}")
        try:
            nodes.split_node_name(server.node)
        except nodes.BadNodeName:
            raise nodes.BadNodeName(
                f"{what}: bad node name {server.node!r} in {server!r}: expected 'name@host'") from None
    if type(server) is tuple:
        # a node name that is not name@host is a wrong argument, here rather than later: start_link
        # would otherwise only report it from the new process, as a crashed init
        try:
            nodes.split_node_name(server[1])
        except nodes.BadNodeName:
            raise nodes.BadNodeName(
                f"{what}: bad node name {server[1]!r} in {server!r}: expected 'name@host'"
            ) from None


def _check_timeout(what: str, timeout: Any) -> None:
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise TypeError(f"{what}: timeout must be a non-negative int of ms or None, got {timeout!r}")
    if timeout is not None and timeout > nodes.MAX_TIMEOUT_MS:  # before the request goes out
        raise ValueError(f"{what}: timeout must be at most {nodes.MAX_TIMEOUT_MS} ms, got {timeout!r}")


def start_link(
    group_info: tuple,
    name: str | None = None,
    persistence_dir: str | None = None,
    log_file_expansion_factor: int = 10,
    join_timeout: int = _startup.JOIN_TIMEOUT,
    log_file_min_size: int = _DEFAULT_LOG_FILE_MIN_SIZE,
) -> tuple[str, Any]:
    """Start one member, linked to the caller: ``("ok", pid)`` or ``("error", reason)``.

    ``("create_new_consensus_group", config)`` makes a 1-member group whose
    sole member is the new (leader) process. ``("join_existing_consensus_group",
    known_members)`` asks the known members in turn to add the new process,
    following ``not_leader`` hints; while the leader is busy with another
    membership change it waits and retries for up to ``join_timeout`` ms.
    When no leader is found, start-up fails with ``("error",
    "no_leader_found")`` and no process is left behind. ``name`` registers
    the member locally.

    ``persistence_dir`` (created if missing) makes the member persist its log
    and snapshots there (see :mod:`rafted.persistence` and the README's
    "Persistence"). Creating a group in a directory that holds files recovers
    from them: a new 1-member group with the restored value and config (the
    ``config`` passed in is then ignored) that commits every entry found and
    calls the hook's ``on_restored_from_files``. Joining with a directory
    replaces whatever it held by the leader's snapshot. Damaged files that
    cannot be recovered without losing data fail start-up with ``("error",
    ("persistence_error", exc))``, ``str(exc)`` naming the file and offset.
    A directory is used by one member at a time (:mod:`rafted.dir_lock`): a
    second member started on it, in this node or another OS process, fails
    the same way, ``str(exc)`` saying it is in use.
    A new log file and snapshot are started when the log file grows beyond
    ``log_file_expansion_factor`` × the latest snapshot's size, as in the
    original; beyond it, ``log_file_min_size`` (bytes, default 0) also holds
    compaction back until the log file is that large: 1 MiB (``1 << 20``)
    spares a busy group with a small value a snapshot every few dozen commands.
    """
    if type(group_info) is not tuple or len(group_info) != 2:
        raise TypeError(f"start_link: group_info must be {_GROUP_INFO_FORMS}, got {group_info!r}")
    kind, arg = group_info
    if kind == "create_new_consensus_group":
        if not isinstance(arg, Config):
            raise TypeError(
                f"start_link: create_new_consensus_group needs a rafted.Config (make_config), got {arg!r}"
            )
    elif kind == "join_existing_consensus_group":
        # an empty list is a list that runs out at once: "no_leader_found", as in the original
        if not isinstance(arg, (list, tuple)):
            raise TypeError(
                f"start_link: join_existing_consensus_group needs a list of servers, got {arg!r}"
            )
        for m in arg:
            _check_server("start_link", m)
    else:
        raise TypeError(f"start_link: group_info must be {_GROUP_INFO_FORMS}, got {group_info!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"start_link: name must be a non-empty str or None, got {name!r}")
    factor = log_file_expansion_factor
    if not isinstance(factor, (int, float)) or isinstance(factor, bool):
        raise TypeError(f"start_link: log_file_expansion_factor must be a positive number, got {factor!r}")
    if not 0 < factor < float("inf"):  # NaN and infinity would silently turn compaction off
        raise ValueError(f"start_link: log_file_expansion_factor must be a positive number, got {factor!r}")
    if not isinstance(join_timeout, int) or isinstance(join_timeout, bool):
        raise TypeError(f"start_link: join_timeout must be a non-negative int of ms, got {join_timeout!r}")
    if not 0 <= join_timeout <= nodes.MAX_TIMEOUT_MS:
        raise ValueError(f"start_link: join_timeout must be a non-negative int of ms (at most "
                         f"{nodes.MAX_TIMEOUT_MS}), got {join_timeout!r}")
    if not isinstance(log_file_min_size, int) or isinstance(log_file_min_size, bool):
        raise TypeError(
            f"start_link: log_file_min_size must be a non-negative int of bytes, got {log_file_min_size!r}"
        )
    if log_file_min_size < 0:
        raise ValueError(
            f"start_link: log_file_min_size must be a non-negative int of bytes, got {log_file_min_size!r}"
        )
    if persistence_dir is not None:
        if not isinstance(persistence_dir, (str, os.PathLike)) or os.fspath(persistence_dir) == "":
            raise TypeError(
                f"start_link: persistence_dir must be a directory path or None, got {persistence_dir!r}"
            )
        persistence_dir = os.path.abspath(os.fspath(persistence_dir))
    options = {
        "persistence_dir": persistence_dir,
        "log_file_expansion_factor": log_file_expansion_factor,
        "join_timeout": join_timeout,
        "log_file_min_size": log_file_min_size,
    }
    return nodes.gen_statem.start_link(_server, (group_info, options), name=name)


def command(server: Any, arg: Any, timeout: int | None = 5000, id: Any = None) -> tuple:
    """Run a command on the leader's replicated value: ``("ok", ret)`` or ``("error", reason)``.

    ``id`` (default ``nodes.make_ref()``) identifies the command: retrying
    with the same id never applies it twice (the cached result comes back,
    as long as it is among the last ``max_retained_command_results``).
    Errors: ``"noproc"`` (the member does not exist: not applied), ``"timeout"``
    (outcome unknown -- also when the member was killed or its node was lost during
    the call: retry with the same id), ``("not_leader", leader_or_None)`` (not applied).
    """
    _check_server("command", server)
    _check_timeout("command", timeout)
    if id is None:
        # the call's own reference doubles as the command's id: a log entry then names one
        # ref twice, which is pickled and unpickled once (a batch of entries gets ~30 % cheaper)
        cmd_id = nodes.make_ref()
        return _call_catching_exit(server, ("command", arg, cmd_id), timeout, cmd_id)  # type: ignore[no-any-return]
    try:
        hash(id)
    except TypeError:
        raise TypeError(f"command: id must be hashable, got {id!r}") from None
    return _call_catching_exit(server, ("command", arg, id), timeout)  # type: ignore[no-any-return]


def query(server: Any, arg: Any, timeout: int | None = 5000) -> tuple:
    """A linearizable read on the leader: ``("ok", ret)`` or ``("error", reason)`` as for :func:`command`.

    With a valid leader lease the leader answers alone; otherwise the query
    goes through the log. A 1-member group answers at once.
    """
    _check_server("query", server)
    _check_timeout("query", timeout)
    return _call_catching_exit(server, ("query", arg), timeout)  # type: ignore[no-any-return]


def query_non_leader(server: Any, arg: Any, timeout: int | None = 5000) -> tuple:
    """A read on any member's (possibly stale) value.

    ``("ok", ret)`` or ``("error", "noproc" | "timeout")``; works in every state.
    """
    _check_server("query_non_leader", server)
    _check_timeout("query_non_leader", timeout)
    return _call_catching_exit(server, ("query_non_leader", arg), timeout)  # type: ignore[no-any-return]


def change_config(leader: Any, new_config: Config) -> Any:
    """Replicate ``new_config``; every member switches to it when the entry commits.

    ``"ok"`` or ``("error", ("not_leader", _))``.
    """
    _check_server("change_config", leader)
    if not isinstance(new_config, Config):
        raise TypeError(f"change_config: expected a rafted.Config, got {new_config!r}")
    return nodes.gen_statem.call(leader, ("change_config", new_config))


def _check_pid(what: str, pid: Any) -> None:
    if not isinstance(pid, nodes.Pid):
        raise TypeError(f"{what}: expected a member's pid (nodes.Pid), got {pid!r}")


def remove_follower(leader: Any, follower_pid: nodes.Pid) -> Any:
    """Remove one follower: ``"ok"`` or ``("error", reason)``.

    Reasons: ``("not_leader", _)``, ``"uncommitted_membership_change"``,
    ``"not_member"``, ``"pending_leader_change"``, ``"cannot_remove_leader"``,
    ``"will_break_quorum"``.
    """
    _check_server("remove_follower", leader)
    _check_pid("remove_follower", follower_pid)
    return nodes.gen_statem.call(leader, ("remove_follower", follower_pid))


def replace_leader(leader: Any, new_leader: nodes.Pid | None) -> Any:
    """Hand leadership to ``new_leader``; ``None`` cancels a pending hand-over.

    ``"ok"`` or ``("error", reason)``.
    The hand-over happens when the target next answers the leader. Reasons:
    ``("not_leader", _)``, ``"uncommitted_membership_change"``,
    ``"not_member"``, ``"already_leader"``, ``"new_leader_unresponsive"``.
    """
    _check_server("replace_leader", leader)
    if new_leader is not None:
        _check_pid("replace_leader", new_leader)
    return nodes.gen_statem.call(leader, ("replace_leader", new_leader))


def force_remove_member(member: Any, pid: nodes.Pid) -> Any:
    """Make ``member`` forget ``pid`` (unsafe, local, not replicated): ``"ok"``.

    Only to recover a group that lost its majority: call it on every
    surviving member for every dead one.
    """
    _check_server("force_remove_member", member)
    _check_pid("force_remove_member", pid)
    if member == pid:
        raise ValueError("force_remove_member: a member cannot remove itself")
    result = nodes.gen_statem.call(member, ("force_remove_member", pid))
    if result == ("error", "cannot_remove_self"):  # ``member`` named ``pid`` by a registered name
        raise ValueError(f"force_remove_member: a member cannot remove itself ({member!r} is {pid!r})")
    return result


def status(server: Any, timeout: int | None = 5000) -> dict:
    """A dict with keys ``"from"``, ``"members"``, ``"leader"``, ``"unresponsive_followers"``,
    ``"current_term"``, ``"state_name"``, ``"config"``."""
    _check_server("status", server)
    _check_timeout("status", timeout)
    return nodes.gen_statem.call(server, "status", timeout=timeout)  # type: ignore[no-any-return]


def read_last_log_index(dir: str) -> int | None:
    """Last log index in the newest log file of persistence directory ``dir``, read from its end.

    ``None`` without log files or when that last entry is damaged (a torn
    write, or damage that start-up refuses), as the original. To pick, among the
    directories of a stopped group, the one to restore from, compare
    :func:`read_last_log_term_and_index` instead: the highest index alone may be a
    deposed leader's, whose uncommitted entries of an older term outnumber the
    commands its successor acknowledged.
    """
    return _read_last_log_index(dir)


def read_last_log_term_and_index(dir: str) -> tuple[int, int] | None:
    """Beyond the original: ``(term, index)`` of the last entry of persistence directory ``dir``'s
    log, as a start-up would recover it; ``None`` when it holds nothing to recover.

    Among the directories of a group whose members all stopped, the one with the highest (as a
    tuple: term first, as Raft's elections compare logs) holds every acknowledged command:
    restore from it. Reads every file that matters, changes none, needs no lock; a damaged
    directory raises :class:`PersistenceError` naming the file.
    """
    return _read_last_log_term_and_index(dir)


# `from rafted import RaftedValue` gives this very module under the Elixir module's name.
RaftedValue = _sys.modules[__name__]

"""Persistence with members in this node: files, compaction, recovery, mixed groups, durability.

The upstream persistence scenarios (rafted_value's persistence_and_recovery_test, described in
the reference), then what this port adds: checksummed entries, damaged files, group commit,
snapshots written without stalling the member. Crashes of real OS processes are in
test_crash.py.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from persistence_support import (
    Wire,
    in_memory_and_disk_logs_same,
    is_ack,
    live_log_entries,
    log_firsts,
    recording_syncs,
    snapshot_indices,
)
from rafted_support import (
    CONF,
    HEARTBEAT,
    Cluster,
    JustAnInt,
    make_bag,
    state_of,
    wait_until,
    wait_until_member_change_completes,
    with_,
)

import nodes
import rafted
from rafted import RaftedValue
from rafted import persistence as P
from rafted.command_results import CommandResults
from rafted.members import Members
from rafted.snapshot import Snapshot, encode

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture
def wire() -> Iterator[type[Wire]]:
    Wire.reset()
    yield Wire
    Wire.reset()


def start(cluster: Cluster, dir: Any, config: rafted.Config = CONF, **kw: Any) -> Any:
    r = cluster.start(("create_new_consensus_group", config), persistence_dir=str(dir), **kw)
    assert r[0] == "ok", r
    return r[1]


def join(cluster: Cluster, leader: Any, dir: Any = None, **kw: Any) -> Any:
    r = cluster.start(("join_existing_consensus_group", [leader]),
                      persistence_dir=None if dir is None else str(dir), **kw)
    assert r[0] == "ok", r
    wait_until_member_change_completes(leader)
    return r[1]


def stop(member: Any) -> None:
    assert nodes.gen_statem.stop(member) == "ok"


def value(member: Any) -> Any:
    r = RaftedValue.query(member, "get")
    assert r[0] == "ok", r
    return r[1]


def incs(member: Any, first: int, last: int) -> None:
    for i in range(first, last + 1):
        assert RaftedValue.command(member, "inc") == ("ok", i)


#
# the format
#
def test_every_log_entry_type_round_trips(tmp_path: Path) -> None:
    me = nodes.self()
    client = (me, nodes.make_ref())
    local_config = RaftedValue.make_config(make_bag(), election_timeout=700)
    entries = [
        (0, 1, "leader_elected", [me]),
        (1, 2, "command", (client, ("set", {"k": [1, 2.5, None]}), nodes.make_ref())),
        (1, 3, "query", (client, "get")),
        (1, 4, "change_config", local_config),
        (2, 5, "add_follower", me),
        (2, 6, "remove_follower", me),
        (3, 7, "restore_from_files", me),
        (2**40, 2**50, "command", (client, b"x" * 200_000, "id-1")),
    ]
    path = tmp_path / "log_1"
    path.write_bytes(P.entries_to_binary(entries))
    read = P.read_log_file(str(path), first_index=1)
    assert read.entries == entries and read.torn_at is None
    assert read.entries[3][3].data_module.new() == ()  # the local class came back by value
    assert RaftedValue.read_last_log_index(str(tmp_path)) == 2**50
    # the documented layout: term, index, tag, size, payload, crc32(header + payload), size
    data = path.read_bytes()
    term, index, tag, n = struct.unpack_from(">QQBQ", data, 0)
    assert (term, index, tag) == (0, 1, 3)
    crc, n2 = struct.unpack_from(">IQ", data, 25 + n)
    assert n2 == n and crc == zlib.crc32(data[: 25 + n])
    tags = []
    off = 0
    while off < len(data):
        _t, _i, tag, n = struct.unpack_from(">QQBQ", data, off)
        tags.append(tag)
        off += 37 + n
    assert tags == [3, 0, 1, 2, 4, 5, 6, 0]


def _log_of_commands(tmp_path: Path, payload_size: int = 10) -> tuple[str, bytes, int]:
    """A newest log file of five commands: its path, its bytes, the last entry's offset."""
    me = nodes.self()
    entries = [(1, i, "command", ((me, nodes.make_ref()), b"v" * payload_size, i)) for i in range(1, 6)]
    path = str(tmp_path / "log_1")
    Path(path).write_bytes(P.entries_to_binary(entries))
    return path, Path(path).read_bytes(), P.read_log_file(path).offsets[-1]


def test_a_crash_cut_last_entry_is_a_torn_tail(tmp_path: Path) -> None:
    path, data, last = _log_of_commands(tmp_path, payload_size=3000)
    first_sector = -(-last // 512) * 512
    cases = {
        "cut short": data[:-5],
        "a block never written (zeros)": data[:first_sector] + bytes(512) + data[first_sector + 512:],
        "all zeros after the good entries": data[:last] + bytes(len(data) - last),
        "zeros appended past the end": data + bytes(700),
        "its end never written": data[:-12] + bytes(12),
    }
    for what, damaged in cases.items():
        Path(path).write_bytes(damaged)
        read = P.read_log_file(path, allow_torn_tail=True, first_index=1)
        expected = len(data) if what == "zeros appended past the end" else last
        assert (read.torn_at, [e[1] for e in read.entries]) == (
            expected, [1, 2, 3, 4, 5] if expected == len(data) else [1, 2, 3, 4]), what


@pytest.mark.parametrize("payload_size", [10, 3000])
@pytest.mark.parametrize("where", ["payload", "type tag", "first size", "second size", "checksum"])
def test_a_complete_last_entry_damaged_later_is_an_error_not_a_torn_tail(
        tmp_path: Path, payload_size: int, where: str) -> None:
    # Written whole and synced (perhaps acknowledged), then damaged: dropping it could undo a
    # commit this member counted towards, so start-up refuses and names the place.
    path, data, last = _log_of_commands(tmp_path, payload_size)
    flipped = bytearray(data)
    at = {"payload": -20, "type tag": last + 16, "first size": last + P.HEADER_SIZE - 1, "second size": -1,
          "checksum": -12}[where]
    flipped[at] ^= 0x40
    Path(path).write_bytes(bytes(flipped))
    with pytest.raises(rafted.PersistenceError, match="damaged after it was written") as excinfo:
        P.read_log_file(path, allow_torn_tail=True, first_index=1)
    assert (excinfo.value.path, excinfo.value.offset) == (path, last)
    assert path in str(excinfo.value) and f"offset {last}" in str(excinfo.value)


def test_a_lonely_leaders_heartbeat_never_commits_an_entry_before_it_is_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A heartbeat tick handled between a command's append and its flush made the lonely
    # leader commit and answer with the entry not yet written: a crash then lost a command it
    # had acknowledged. Driven message by message, so the tick comes there every time.
    import dataclasses
    from collections import deque

    from rafted_sim import Sim, SimComm

    from rafted import server, startup
    from rafted import state as member_state

    config = dataclasses.replace(CONF, communication_module=SimComm)
    with recording_syncs(monkeypatch) as syncs:
        sim = Sim()
        ctx = member_state.Ctx("A", sim.now, sim.rng)
        sim.members["A"] = ("leader", startup.initialize_leader_state(
            ctx, config, {"persistence_dir": str(tmp_path)}))
        sim.mailboxes["A"] = deque()
        caller = sim.call_nowait("A", ("command", "inc", ("id", 1)))
        sim.step("A")  # the append; its flush now waits in the mailbox
        assert sim.mailboxes["A"] == deque([("info", server.FLUSH)]) and caller not in sim.replies
        index = sim.members["A"][1].logs.i_max
        sim.now += 10 * HEARTBEAT  # the heartbeat is due: its tick comes first
        name, s = sim.members["A"]
        sim.members["A"] = (name, dataclasses.replace(s, timer=member_state.TimerHandle(-1, None, sim.now)))
        sim.dispatch("A", "info", (server.TICK, -1))
        if caller in sim.replies:
            assert syncs.durable_index(str(tmp_path)) >= index, "acknowledged before it was durable"
        sim.run()
        assert sim.replies[caller] == ("ok", 0)
        assert syncs.durable_index(str(tmp_path)) >= index
        sim.members["A"][1].persistence.log.close()


def test_read_last_log_index(tmp_path: Path) -> None:
    assert RaftedValue.read_last_log_index(str(tmp_path / "missing")) is None
    assert RaftedValue.read_last_log_index(str(tmp_path)) is None
    me = nodes.self()
    older = [(1, i, "add_follower", me) for i in range(10, 15)]
    (tmp_path / "log_10").write_bytes(P.entries_to_binary(older))
    newest = [(1, i, "command", ((me, nodes.make_ref()), i, i)) for i in range(15, 40)]
    blob = P.entries_to_binary(newest)
    (tmp_path / "log_15").write_bytes(blob)
    assert RaftedValue.read_last_log_index(str(tmp_path)) == 39
    (tmp_path / "log_40").write_bytes(b"")  # a log file just started: skipped
    assert RaftedValue.read_last_log_index(str(tmp_path)) == 39
    (tmp_path / "log_15").write_bytes(blob[:-5])  # torn final entry
    assert RaftedValue.read_last_log_index(str(tmp_path)) is None
    flipped = bytearray(blob)
    flipped[-20] ^= 0x40  # damaged payload of the last entry
    (tmp_path / "log_15").write_bytes(bytes(flipped))
    assert RaftedValue.read_last_log_index(str(tmp_path)) is None
    (tmp_path / "log_15").write_bytes(b"\x00" * 3)
    assert RaftedValue.read_last_log_index(str(tmp_path)) is None
    with pytest.raises(TypeError, match="directory"):
        RaftedValue.read_last_log_index(42)  # type: ignore[arg-type]
    with pytest.raises(NotADirectoryError, match="log_15"):
        RaftedValue.read_last_log_index(str(tmp_path / "log_15"))  # a file: named, not taken as empty


#
# the upstream scenarios
#
def test_persist_logs_and_snapshots_and_recover_across_restarts(cluster: Cluster, tmp_path: Path) -> None:
    d = str(tmp_path / "member")
    start(cluster, d, name="foo")
    assert os.path.isdir(d)  # created
    in_memory_and_disk_logs_same(state_of("foo")[1], d, 1, 1)
    stop("foo")
    snapshot1 = os.path.join(d, "snapshot_0_1")
    assert isinstance(P.read_snapshot_file(snapshot1), Snapshot)
    assert RaftedValue.read_last_log_index(d) == 1

    start(cluster, d, name="foo")
    in_memory_and_disk_logs_same(state_of("foo")[1], d, 1, 2)
    assert state_of("foo")[1].logs.map[2][2] == "restore_from_files"
    assert RaftedValue.command("foo", "inc") == ("ok", 0)
    in_memory_and_disk_logs_same(state_of("foo")[1], d, 1, 3)
    stop("foo")

    start(cluster, d, name="foo")
    in_memory_and_disk_logs_same(state_of("foo")[1], d, 1, 4)
    incs("foo", 1, 40)  # enough for the log to outgrow 10 × the snapshot: a new snapshot
    in_memory_and_disk_logs_same(state_of("foo")[1], d, 1, 44)
    stop("foo")
    newer = [c for c in snapshot_indices(d) if c > 1]
    assert len(newer) == 1, snapshot_indices(d)
    c2 = newer[0]
    assert RaftedValue.read_last_log_index(d) == 44

    start(cluster, d, name="foo")
    in_memory_and_disk_logs_same(state_of("foo")[1], d, c2, 45)
    assert RaftedValue.query("foo", "get") == ("ok", 41)
    stop("foo")

    # and once more, from what the last incarnation wrote
    start(cluster, d, name="foo")
    assert value("foo") == 41 and state_of("foo")[1].logs.i_max == 46


def test_uncommitted_entries_are_committed_by_the_lonely_leader_after_recovery(
    cluster: Cluster, tmp_path: Path
) -> None:
    leader = start(cluster, tmp_path)
    follower = join(cluster, leader)
    assert set(RaftedValue.status(leader)["members"]) == {leader, follower}
    stop(follower)
    # now incoming commands cannot be committed
    for _ in range(3):
        assert RaftedValue.command(leader, "inc", 100) == ("error", "timeout")
    stop(leader)
    restored = start(cluster, tmp_path, name="foo")
    assert value("foo") == 3
    assert RaftedValue.status(restored)["members"] == [restored]


def test_follower_stores_replicated_entries_without_duplicates(cluster: Cluster, tmp_path: Path) -> None:
    leader = start(cluster, tmp_path / "l")
    follower = join(cluster, leader, tmp_path / "f")
    for i in range(30):
        assert RaftedValue.command(leader, "inc") == ("ok", i)
    wait_until(lambda: state_of(follower)[1].logs.i_committed == state_of(leader)[1].logs.i_committed,
               what="the follower to catch up")
    # a leader re-sends entries a follower has not acknowledged yet; written once all the same
    written = []
    for first, path in P.list_log_files(str(tmp_path / "f")):
        entries = P.read_log_file(path).entries
        assert [e[1] for e in entries] == list(range(first, first + len(entries))), path
        written.extend(entries)
    assert [e[1] for e in written] == list(range(written[0][1], written[-1][1] + 1))
    st = state_of(follower)[1]
    assert all(st.logs.map[e[1]] == e for e in written if e[1] >= st.logs.i_min)


def test_follower_resets_its_members_on_a_restore_entry(cluster: Cluster, tmp_path: Path) -> None:
    dir_l, dir_f = tmp_path / "l", tmp_path / "f"
    l1 = start(cluster, dir_l)
    f1 = join(cluster, l1, dir_f)
    assert sorted(RaftedValue.status(l1)["members"]) == sorted([l1, f1])
    assert sorted(RaftedValue.status(f1)["members"]) == sorted([l1, f1])
    stop(f1)
    stop(l1)
    l2 = start(cluster, dir_l)
    f2 = join(cluster, l2, dir_f)  # the follower's old files are replaced by l2's snapshot
    assert sorted(RaftedValue.status(l2)["members"]) == sorted([l2, f2])
    wait_until(lambda: sorted(RaftedValue.status(f2)["members"]) == sorted([l2, f2]),
               what="the follower to see the restored membership")
    assert len(snapshot_indices(str(dir_f))) == 1 and len(log_firsts(str(dir_f))) == 1


def test_persisting_and_in_memory_members_interchange_snapshots(
    cluster: Cluster, tmp_path: Path, wire: type[Wire]
) -> None:
    config = with_(CONF, communication_module=wire)
    ok, n1 = cluster.start(("create_new_consensus_group", config))
    incs(n1, 0, 10)
    # in-memory leader -> persisting joiner: an InstallSnapshot, written to p1's directory
    p1 = join(cluster, n1, tmp_path)
    assert wire.types_sent_to(p1)[0] == "InstallSnapshot"
    assert len(snapshot_indices(str(tmp_path))) == 1
    incs(n1, 11, 20)
    wait_until(lambda: state_of(p1)[1].logs.i_committed == state_of(n1)[1].logs.i_committed,
               what="p1 to catch up")
    stop(p1)
    stop(n1)
    # recover from p1's files
    p2 = start(cluster, tmp_path, config)
    incs(p2, 21, 30)
    # persisting leader -> in-memory joiner: its snapshot file's bytes
    n2 = join(cluster, p2)
    assert wire.types_sent_to(n2)[0] == "InstallSnapshotCompressed"
    incs(p2, 31, 40)
    wait_until(lambda: RaftedValue.query_non_leader(n2, "get") == ("ok", 41), what="n2 to catch up")


#
# beyond the original
#
def test_recovery_uses_the_restored_config_and_calls_the_hook(cluster: Cluster, tmp_path: Path) -> None:
    nodes.register("rafted_restore_hook", nodes.self())
    try:
        config = with_(CONF, leader_hook_module=RestoreHook, max_retained_command_results=7)
        leader = start(cluster, tmp_path, config)
        incs(leader, 0, 4)
        assert RaftedValue.change_config(leader, with_(config, max_retained_command_results=5)) == "ok"
        wait_until(lambda: state_of(leader)[1].config.max_retained_command_results == 5, what="the config")
        stop(leader)
        restored = start(cluster, tmp_path, CONF)  # the config passed in is ignored
        st = state_of(restored)[1]
        assert st.config == with_(config, max_retained_command_results=5)
        assert st.data == 5 and st.logs.map[st.logs.i_max][2:] == ("restore_from_files", restored)
        msg = nodes.receive(timeout=5000, match=lambda m: type(m) is tuple and m[0] == "restored")
        assert msg == ("restored", restored, 5)
    finally:
        nodes.unregister("rafted_restore_hook")


def test_recovery_replays_commands_and_queries_through_the_hook_flagged_as_restoring(
    cluster: Cluster, tmp_path: Path
) -> None:
    # As the original: the replay runs on_command_committed / on_query_answered for every entry
    # it applies, with the process dictionary's "rafted_value_restoring" set meanwhile (RaftFleet's
    # hook tells replays from live commits by it), then on_restored_from_files.
    nodes.register("rafted_replay_hook", nodes.self())
    try:
        leader = start(cluster, tmp_path, with_(CONF, leader_hook_module=ReplayHook))
        incs(leader, 0, 4)
        live = [nodes.receive(5000, _from_replay_hook) for _ in range(5)]
        assert live == [("command", "inc", i, False) for i in range(5)]
        stop(leader)
        # a lonely leader answers queries alone: put a logged one (a bigger group's) at the end
        newest = _newest_log(tmp_path)
        term, index, _kind, _payload = P.read_log_file(newest).entries[-1]
        with open(newest, "ab") as f:
            query = (term, index + 1, "query", ((nodes.self(), nodes.make_ref()), "get"))
            f.write(P.entries_to_binary([query]))
        restored = start(cluster, tmp_path, CONF, name="replayed")
        replayed = [nodes.receive(5000, _from_replay_hook) for _ in range(7)]
        assert replayed == [*[("command", "inc", i, True) for i in range(5)], ("query", "get", 5, True),
                            ("restored", 5, False)]
        assert RaftedValue.command(restored, "inc") == ("ok", 5)
        assert nodes.receive(5000, _from_replay_hook) == ("command", "inc", 5, False)
        with pytest.raises(TimeoutError):
            nodes.receive(200, _from_replay_hook)  # each entry once
    finally:
        nodes.unregister("rafted_replay_hook")


def _from_replay_hook(m: Any) -> bool:
    return type(m) is tuple and len(m) in (3, 4) and m[0] in ("command", "query", "restored")


class ReplayHook(rafted.NoOp):
    @staticmethod
    def on_command_committed(data_before: Any, arg: Any, ret: Any, data_after: Any) -> None:
        nodes.send("rafted_replay_hook", ("command", arg, ret, nodes.get("rafted_value_restoring", False)))

    @staticmethod
    def on_query_answered(data: Any, arg: Any, ret: Any) -> None:
        nodes.send("rafted_replay_hook", ("query", arg, ret, nodes.get("rafted_value_restoring", False)))

    @staticmethod
    def on_restored_from_files(data: Any) -> None:
        nodes.send("rafted_replay_hook", ("restored", data, nodes.get("rafted_value_restoring", False)))


class RestoreHook(rafted.NoOp):
    @staticmethod
    def on_restored_from_files(data: Any) -> None:
        nodes.send("rafted_restore_hook", ("restored", nodes.self(), data))


def test_old_snapshots_and_committed_log_files_are_deleted(cluster: Cluster, tmp_path: Path) -> None:
    d = str(tmp_path)
    leader = start(cluster, d, log_file_expansion_factor=1)
    seen_snapshots: set[int] = set()
    for i in range(300):
        assert RaftedValue.command(leader, "inc") == ("ok", i)
        seen_snapshots.update(snapshot_indices(d))
        assert len(snapshot_indices(d)) <= 3  # the new one appears before the oldest goes
    wait_until(lambda: state_of(leader)[1].persistence.snapshot_writer is None, what="the writer to finish")
    snaps = snapshot_indices(d)
    assert len(seen_snapshots) > 5 and len(snaps) == 2, (seen_snapshots, snaps)
    # one previous snapshot is kept, with every log file it needs; older log files are gone
    older = snaps[0]
    files = P._with_last_indices(P.list_log_files(d))
    assert all(last >= older for _first, _path, last in files)
    assert files[0][0] <= older + 1
    assert state_of(leader)[1].persistence.latest_snapshot_metadata.last_committed_index == snaps[1]
    # memory is bounded by what the snapshot on disk covers
    st = state_of(leader)[1]
    assert st.logs.i_min >= snaps[0] - 100
    stop(leader)
    start(cluster, d, name="again")
    assert value("again") == 300


def test_no_compaction_below_the_minimum_log_file_size(cluster: Cluster, tmp_path: Path) -> None:
    leader = start(cluster, tmp_path, log_file_expansion_factor=1, log_file_min_size=20_000)
    incs(leader, 0, 59)  # about 9 KB of log: 16 × the snapshot, below the minimum
    assert snapshot_indices(str(tmp_path)) == [1] and log_firsts(str(tmp_path)) == [1]
    i = 60
    while snapshot_indices(str(tmp_path)) == [1]:
        assert RaftedValue.command(leader, "inc") == ("ok", i)
        i += 1
        assert i < 400, "no compaction after 20 KB of log"
    assert os.path.getsize(os.path.join(str(tmp_path), "log_1")) >= 20_000
    with pytest.raises(ValueError, match="log_file_min_size"):
        RaftedValue.start_link(("create_new_consensus_group", CONF), log_file_min_size=-1)


def test_a_graceful_stop_waits_for_the_snapshot_being_written(cluster: Cluster, tmp_path: Path) -> None:
    leader = start(cluster, tmp_path, SLOW_CONF, log_file_expansion_factor=1)
    while state_of(leader)[1].persistence.snapshot_writer is None:
        assert RaftedValue.command(leader, "inc")[0] == "ok"
    before = snapshot_indices(str(tmp_path))  # the writer spends SLOW_S pickling the value
    stop(leader)
    after = snapshot_indices(str(tmp_path))
    assert len(after) == len(before) + 1 and max(after) > max(before), (before, after)


class PickleWatch:
    """What happened in the member while a snapshot helper pickled a SlowToPickle."""

    def __init__(self) -> None:
        self.pickling = False
        self.applied_while_pickling = 0
        self.enough = threading.Event()  # set once ENOUGH commands were applied meanwhile
        self.pickled = False

    ENOUGH = 5


# None: pickling a SlowToPickle sleeps SLOW_S; a PickleWatch: it waits (at most 20 s) for the
# member to apply PickleWatch.ENOUGH commands, which it can only do if it is not the pickler.
PICKLE_WATCH: PickleWatch | None = None


class SlowToPickle:
    """A value whose pickling takes a while (only snapshots pickle the value)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> Any:
        watch = PICKLE_WATCH
        if watch is None:
            time.sleep(SLOW_S)
        else:
            watch.pickling = True
            watch.enough.wait(20)
            watch.pickling = False
            watch.pickled = True
        return (SlowToPickle, (self.n,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlowToPickle) and other.n == self.n

    __hash__ = None  # type: ignore[assignment]


SLOW_S = 0.6


class SlowData(rafted.Data):
    def new():
        return SlowToPickle(0)

    def command(data, arg):
        watch = PICKLE_WATCH
        if watch is not None and watch.pickling:
            watch.applied_while_pickling += 1
            if watch.applied_while_pickling >= watch.ENOUGH:
                watch.enough.set()
        return data.n, SlowToPickle(data.n + 1)

    def query(data, arg):
        return data.n


SLOW_CONF = with_(CONF, data_module=SlowData)


def test_snapshots_are_written_without_stalling_the_member(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No latency bound (a loaded disk can hold one command's fsync for a second): the value's
    # pickling waits until the member has applied commands meanwhile, which a member that
    # pickled its own snapshot could never do (its commands would time out instead).
    leader = start(cluster, tmp_path, SLOW_CONF, log_file_expansion_factor=1)
    watch = PickleWatch()
    monkeypatch.setitem(globals(), "PICKLE_WATCH", watch)
    n_before = len(snapshot_indices(str(tmp_path)))
    deadline = time.monotonic() + 40
    while len(snapshot_indices(str(tmp_path))) == n_before:
        assert RaftedValue.command(leader, "inc")[0] == "ok"
        assert time.monotonic() < deadline, "no snapshot appeared"
    assert watch.pickled and watch.applied_while_pickling >= watch.ENOUGH, vars(watch)
    stop(leader)


class TwoArgError(Exception):
    """Pickles, but cannot be read back: ``__init__`` does not take its own ``args``."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def test_a_command_that_cannot_be_persisted_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    leader = start(cluster, tmp_path)
    r = RaftedValue.command(leader, ("set", threading.Lock()))
    assert r[0] == "error" and r[1][0] == "command_failed" and "serialize" in r[1][1]
    # written, it would make the directory impossible to start from
    r = RaftedValue.command(leader, ("set", TwoArgError(1, "x")))
    assert r[0] == "error" and r[1][0] == "command_failed" and "cannot be read back" in r[1][1], r
    assert RaftedValue.command(leader, "inc") == ("ok", 0)
    stop(leader)
    start(cluster, tmp_path, name="again")
    assert value("again") == 1


def test_a_lagging_persisting_follower_gets_the_snapshot_file_and_writes_it(
    cluster: Cluster, tmp_path: Path, wire: type[Wire]
) -> None:
    # a long election time-out: the isolated follower does not disturb the leader when it is back
    config = with_(CONF, communication_module=wire, election_timeout=3000,
                   election_timeout_clock_drift_margin=3000)
    leader = start(cluster, tmp_path / "l", config, log_file_expansion_factor=1)
    f1 = join(cluster, leader, tmp_path / "f1", log_file_expansion_factor=1)
    f2 = join(cluster, leader, tmp_path / "f2")
    incs(leader, 0, 9)
    wire.isolate([f2])
    # enough entries for the leader to drop from memory what f2 lacks (snapshots on disk cover them)
    i = 10
    while state_of(leader)[1].logs.i_min <= state_of(f2)[1].logs.i_max:
        assert RaftedValue.command(leader, "inc") == ("ok", i)
        i += 1
    wire.isolate([])
    wait_until(lambda: RaftedValue.query_non_leader(f2, "get") == ("ok", i), what="f2 to catch up")
    assert "InstallSnapshotCompressed" in wire.types_sent_to(f2)
    f2_dir = str(tmp_path / "f2")
    assert len(snapshot_indices(f2_dir)) >= 1 and min(log_firsts(f2_dir)) > 11, (
        snapshot_indices(f2_dir), log_firsts(f2_dir), state_of(f2)[1].persistence,
        [t for t in wire.types_sent_to(f2) if "Append" not in t], state_of(f2)[1].logs.i_min)
    for m in (f2, f1, leader):
        stop(m)
    start(cluster, f2_dir, name="from_f2")
    assert value("from_f2") == i


def test_entries_are_on_disk_before_they_are_counted_or_acknowledged(
    cluster: Cluster, tmp_path: Path, wire: type[Wire], monkeypatch: pytest.MonkeyPatch
) -> None:
    violations: list[str] = []
    acks_checked = [0]
    with recording_syncs(monkeypatch) as syncs:
        dirs: dict[Any, str] = {}

        def check(sender: Any, dest: Any, msg: Any) -> None:
            d = dirs.get(sender)
            if d is not None and is_ack(msg):
                acks_checked[0] += 1
                durable = syncs.durable_index(d)
                if durable < (msg.i_replicated or 0):
                    violations.append(f"{sender} acknowledged {msg.i_replicated}, durable up to {durable}")

        # no election because a follower's fsync stalls on a loaded disk: every answer must be ok
        config = with_(CONF, communication_module=wire, election_timeout=1000)
        leader = start(cluster, tmp_path / "l", config, log_file_expansion_factor=1000)
        dirs[leader] = str(tmp_path / "l")
        for k in (1, 2):
            f = join(cluster, leader, tmp_path / f"f{k}")
            dirs[f] = str(tmp_path / f"f{k}")
        wire.on_cast = check
        results: list[Any] = []

        def client() -> None:
            for _ in range(15):
                r = RaftedValue.command(leader, "inc")
                results.append(r)
                if r[0] == "ok":
                    # the answer to the (v+1)-th 'inc' means v+1 of them are durable in the leader's log
                    durable = [e for e in syncs.durable_entries(dirs[leader]) if e[2] == "command"]
                    if len(durable) < r[1] + 1:
                        violations.append(f"answered inc #{r[1] + 1} with {len(durable)} durable")

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert all(r[0] == "ok" for r in results) and len(results) == 120, [
            r for r in results if r[0] != "ok"][:5]
        assert acks_checked[0] > 10
        assert not violations, violations[:5]
        # a reply means the command's entry is durable on the leader: every 'inc' answered is there
        commands = [e for e in live_log_entries(dirs[leader], 1) if e[2] == "command"]
        assert len(commands) == 120
        assert syncs.durable_index(dirs[leader]) >= commands[-1][1]


def test_group_commit_shares_fsyncs_under_concurrent_load(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = with_(CONF, election_timeout=1000)  # no election because a loaded follower is slow
    with recording_syncs(monkeypatch) as syncs:
        leader = start(cluster, tmp_path / "l", config)
        join(cluster, leader, tmp_path / "f1")
        join(cluster, leader, tmp_path / "f2")
        before = syncs.calls
        n_clients, per_client = 32, 20
        results: list[Any] = []

        def client() -> None:
            for _ in range(per_client):
                results.append(RaftedValue.command(leader, "inc", 10_000))

        threads = [threading.Thread(target=client) for _ in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        n = n_clients * per_client
        assert len(results) == n and all(r[0] == "ok" for r in results), [r for r in results if r[0] != "ok"]
        syncs_used = syncs.calls - before
        print(f"group commit: {syncs_used} fsyncs for {n} commands on 3 members")
        # one fsync per command on each of the 3 members would be 3 n
        assert syncs_used < 3 * n / 3, f"{syncs_used} fsyncs for {n} commands on 3 members"
        assert value(leader) == n


#
# damaged files
#
def _group_with_history(cluster: Cluster, d: Path, n: int, **kw: Any) -> None:
    leader = start(cluster, d, **kw)
    incs(leader, 0, n - 1)
    stop(leader)


def _newest_log(d: Path) -> str:
    return P.list_log_files(str(d))[-1][1]


def test_a_torn_final_entry_is_dropped_with_a_warning(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _group_with_history(cluster, tmp_path, 10)
    path = _newest_log(tmp_path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 7)  # the last command's entry was torn while being written
    with caplog.at_level("WARNING", logger="rafted"):
        start(cluster, tmp_path, name="again")
    assert value("again") == 9
    assert any("torn" in r.getMessage() and path in r.getMessage() for r in caplog.records)
    stop("again")
    # the file was cut at the last good entry: the next start is clean
    caplog.clear()
    with caplog.at_level("WARNING", logger="rafted"):
        start(cluster, tmp_path, name="again2")
    assert value("again2") == 9 and not [r for r in caplog.records if "torn" in r.getMessage()]


def test_a_bit_flip_in_the_last_entry_stops_start_up_and_loses_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    _group_with_history(cluster, tmp_path, 10)
    path = _newest_log(tmp_path)
    last = P.read_log_file(path).offsets[-1]
    data = bytearray(Path(path).read_bytes())
    data[-20] ^= 0x01  # the last acknowledged command's entry, written whole, damaged since
    Path(path).write_bytes(bytes(data))
    r = RaftedValue.start_link(("create_new_consensus_group", CONF), persistence_dir=str(tmp_path))
    assert r[0] == "error" and r[1][0] == "persistence_error", r
    assert (r[1][1].path, r[1][1].offset) == (path, last)
    assert Path(path).read_bytes() == bytes(data)  # not cut: an operator can still look at it


def test_a_corrupt_entry_in_the_middle_stops_start_up_naming_file_and_offset(
    cluster: Cluster, tmp_path: Path
) -> None:
    _group_with_history(cluster, tmp_path, 10)
    path = _newest_log(tmp_path)
    contents = P.read_log_file(path)
    victim = contents.offsets[5]
    data = bytearray(Path(path).read_bytes())
    data[victim + 30] ^= 0xFF  # a flipped bit in the payload of an entry with valid ones after it
    Path(path).write_bytes(bytes(data))
    r = RaftedValue.start_link(("create_new_consensus_group", CONF), persistence_dir=str(tmp_path))
    assert r[0] == "error" and r[1][0] == "persistence_error", r
    err = r[1][1]
    assert isinstance(err, rafted.PersistenceError)
    assert err.path == path and err.offset == victim
    assert path in str(err) and f"offset {victim}" in str(err)
    # nothing was changed: the same error next time
    r2 = RaftedValue.start_link(("create_new_consensus_group", CONF), persistence_dir=str(tmp_path))
    assert r2[0] == "error" and r2[1][1].offset == victim


def test_a_damaged_entry_at_the_end_of_an_older_log_file_is_an_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    _group_with_history(cluster, tmp_path, 60)  # compaction: several log files
    first, older = P.list_log_files(str(tmp_path))[-2]
    last_off = P.read_log_file(older).offsets[-1]
    with open(older, "r+b") as f:
        f.truncate(os.path.getsize(older) - 3)
    r = RaftedValue.start_link(("create_new_consensus_group", CONF), persistence_dir=str(tmp_path))
    assert r[0] == "error" and r[1][1].path == older and r[1][1].offset == last_off, r


def test_a_corrupt_newest_snapshot_falls_back_to_the_previous_one(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _group_with_history(cluster, tmp_path, 120, log_file_expansion_factor=2)
    snaps = P.list_snapshot_files(str(tmp_path))
    assert len(snaps) == 2, snaps
    newest = snaps[-1][2]
    data = bytearray(Path(newest).read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 16):
        data[k] ^= 0xFF  # damaged in the middle of the compressed stream
    Path(newest).write_bytes(bytes(data))
    with pytest.raises(P.PersistenceError, match="corrupt"):
        P.read_snapshot_file(newest)
    with caplog.at_level("WARNING", logger="rafted"):
        start(cluster, tmp_path, name="again")
    assert value("again") == 120
    assert any(newest in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records]
    assert os.path.exists(newest + ".corrupt") and not os.path.exists(newest)


def test_a_corrupt_only_snapshot_stops_start_up(cluster: Cluster, tmp_path: Path) -> None:
    _group_with_history(cluster, tmp_path, 5)
    [(_c, _t, only)] = P.list_snapshot_files(str(tmp_path))
    Path(only).write_bytes(Path(only).read_bytes()[:-10])  # truncated
    r = RaftedValue.start_link(("create_new_consensus_group", CONF), persistence_dir=str(tmp_path))
    assert r[0] == "error" and r[1][0] == "persistence_error", r
    assert only in str(r[1][1]) and "no older snapshot" in str(r[1][1])
    assert os.path.exists(only)  # left for inspection


def test_log_files_without_a_snapshot_or_an_unusable_dir_stop_start_up(
    cluster: Cluster, tmp_path: Path
) -> None:
    _group_with_history(cluster, tmp_path / "a", 3)
    for _c, _t, p in P.list_snapshot_files(str(tmp_path / "a")):
        os.unlink(p)
    r = RaftedValue.start_link(("create_new_consensus_group", CONF), persistence_dir=str(tmp_path / "a"))
    assert r[0] == "error" and "no snapshot" in str(r[1][1]), r
    (tmp_path / "file").write_text("not a directory")
    r = RaftedValue.start_link(("create_new_consensus_group", CONF), persistence_dir=str(tmp_path / "file"))
    assert r[0] == "error" and r[1][0] == "persistence_error", r


def test_a_fresh_start_ignores_left_over_temporary_files(cluster: Cluster, tmp_path: Path) -> None:
    tmp = tmp_path / "snapshot_3_40.123-456.tmp"  # a snapshot write interrupted before its rename
    tmp.write_bytes(b"partial")
    start(cluster, tmp_path, name="fresh")
    assert value("fresh") == 0 and not tmp.exists()
    assert snapshot_indices(str(tmp_path)) == [1]


#
# one member per directory
#
def _dir_listing(d: Path) -> dict[str, int]:
    return {name: os.path.getsize(d / name) for name in os.listdir(d)}


def test_a_second_member_on_a_directory_in_use_is_refused_and_changes_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    leader = start(cluster, tmp_path)
    incs(leader, 0, 4)
    files = _dir_listing(tmp_path)
    for group_info in (("create_new_consensus_group", CONF), ("join_existing_consensus_group", [leader])):
        r = RaftedValue.start_link(group_info, persistence_dir=str(tmp_path))
        assert r[0] == "error" and r[1][0] == "persistence_error", r
        err = r[1][1]
        assert isinstance(err, rafted.PersistenceError) and err.path == str(tmp_path)
        assert "in use by member" in str(err) and str(tmp_path) in str(err), err
    assert _dir_listing(tmp_path) == files  # nothing read into, written or removed
    assert RaftedValue.status(leader)["members"] == [leader]  # the refused joiner never asked
    incs(leader, 5, 7)  # the holder goes on as before
    stop(leader)  # and lets go when it stops
    again = start(cluster, tmp_path, name="again")
    assert value(again) == 8


def test_a_killed_member_hands_its_directory_to_the_next_one(cluster: Cluster, tmp_path: Path) -> None:
    leader = start(cluster, tmp_path)
    incs(leader, 0, 9)
    nodes.exit(leader, "kill")  # no terminate, so no release: the next member takes over
    again = start(cluster, tmp_path, name="again")
    assert value(again) == 10
    r = RaftedValue.start_link(("create_new_consensus_group", CONF), persistence_dir=str(tmp_path))
    assert r[0] == "error" and "in use" in str(r[1][1]), r  # and holds it in turn


def test_a_killed_members_lock_goes_when_another_directory_is_taken(cluster: Cluster, tmp_path: Path) -> None:
    import fcntl

    first, second = tmp_path / "first", tmp_path / "second"
    leader = start(cluster, first)
    nodes.exit(leader, "kill")  # no terminate, so no release
    wait_until(lambda: not nodes.is_alive(leader), what="the member to die")
    start(cluster, second, name="other")  # any directory taken lets go of dead holders' locks
    fd = os.open(first, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another OS process could take it now
    finally:
        os.close(fd)


def test_a_killed_members_snapshot_writer_puts_nothing_into_a_directory_taken_over(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Killed (no terminate), the member leaves its snapshot writer running. A member of another
    # group took the directory over; the writer's late snapshot, renamed in beside that
    # member's log, made the next start combine the two groups' data and lose acknowledged ones.
    writing = threading.Event()
    go_on = threading.Event()
    finished = threading.Event()
    real_writer = P._snapshot_writer

    def held_writer(*args: Any) -> None:
        writing.set()
        go_on.wait(30)
        try:
            real_writer(*args)
        finally:
            finished.set()

    monkeypatch.setattr(P, "_snapshot_writer", held_writer)
    bag = with_(CONF, data_module=make_bag())
    killed = start(cluster, tmp_path, bag, log_file_min_size=0, log_file_expansion_factor=1)
    i = 0
    while not writing.is_set():
        assert RaftedValue.command(killed, ("old", i))[0] == "ok"
        i += 1
    nodes.exit(killed, "kill")
    wait_until(lambda: not nodes.is_alive(killed), what="the member's death")
    other_leader = cluster.new_leader(bag)
    taker = join(cluster, other_leader, tmp_path)
    for k in range(3):
        assert RaftedValue.command(other_leader, ("new", k)) == ("ok", k)
    wait_until(lambda: RaftedValue.query_non_leader(taker, None)[1] == (("new", 0), ("new", 1), ("new", 2)),
               what="the new member to apply")
    go_on.set()
    assert finished.wait(30)
    stop(taker)
    stop(other_leader)
    start(cluster, tmp_path, bag, name="from_the_taker")
    assert RaftedValue.query("from_the_taker", None) == ("ok", (("new", 0), ("new", 1), ("new", 2)))


def test_a_snapshot_writer_of_a_member_still_holding_its_directory_renames_its_snapshot_in(
        tmp_path: Path) -> None:
    from rafted import dir_lock

    me = nodes.self()
    snap = Snapshot(Members(me, {me}), 1, (1, 3, "command", ((me, 1), "inc", 1)), CONF, 3, CommandResults())
    dir_lock.acquire(str(tmp_path), me)
    try:
        guard = dir_lock.rename_guard(str(tmp_path), me)
        assert P.write_snapshot_file(str(tmp_path), 1, 3, encode(snap), guard).endswith("snapshot_1_3")
    finally:
        dir_lock.release(str(tmp_path), me)
    with pytest.raises(P.DirectoryTakenOver, match="passed to another member"):  # released since
        P.write_snapshot_file(str(tmp_path), 1, 4, encode(snap), guard)
    assert sorted(os.listdir(tmp_path)) == ["snapshot_1_3"]  # no temporary file left either


def test_a_command_whose_member_dies_on_a_failing_disk_has_an_unknown_outcome(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    leader = start(cluster, tmp_path)
    incs(leader, 0, 0)

    def failing_sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(P, "_datasync", failing_sync)
    # the member crashes while the command waits: maybe logged, so "timeout", not an exception
    assert RaftedValue.command(leader, "inc") == ("error", "timeout")
    exit_ = nodes.receive(10_000, match=lambda m: type(m) is tuple and m[:2] == ("EXIT", leader))
    assert exit_[2][0] == "exception" and isinstance(exit_[2][1], OSError)  # (the crash, seen)
    assert RaftedValue.command(leader, "inc") == ("error", "noproc")
    monkeypatch.undo()
    start(cluster, tmp_path, name="after_the_disk_failed")
    assert value("after_the_disk_failed") in (1, 2)  # the unknown outcome: either is right


def test_a_member_that_fails_to_join_lets_go_of_its_directory(cluster: Cluster, tmp_path: Path) -> None:
    r = RaftedValue.start_link(("join_existing_consensus_group", [("nobody_here", nodes.node())]),
                               persistence_dir=str(tmp_path))
    assert r[0] == "error" and r[1] == "no_leader_found", r
    leader = start(cluster, tmp_path)
    incs(leader, 0, 0)


def test_recovery_reads_only_what_it_needs(tmp_path: Path) -> None:
    """Log files replay in order of their first index; a later file supersedes from its first index
    (a follower that overwrote uncommitted entries)."""
    me = nodes.self()
    snap = Snapshot(Members(me, {me}), 1, (1, 3, "command", ((me, 1), "inc", 1)), CONF, 3, CommandResults())
    P.write_snapshot_file(str(tmp_path), 1, 3, encode(snap))
    old = [(1, i, "command", ((me, i), "inc", i)) for i in range(1, 9)]  # 7, 8 of a deposed leader
    new = [(2, i, "command", ((me, i), "inc", 100 + i)) for i in range(7, 11)]
    (tmp_path / "log_1").write_bytes(P.entries_to_binary(old))
    (tmp_path / "log_7").write_bytes(P.entries_to_binary(new))
    r = P.read_latest_snapshot_and_logs_if_available(str(tmp_path), repair=False)
    assert r is not None and r.metadata.last_committed_index == 3
    assert [e[1] for e in r.entries] == [4, 5, 6, 7, 8, 9, 10]
    assert [e[0] for e in r.entries] == [1, 1, 1, 2, 2, 2, 2]
    # a gap after the snapshot is an error, never silently skipped
    os.unlink(tmp_path / "log_1")
    with pytest.raises(P.PersistenceError, match="missing"):
        P.read_latest_snapshot_and_logs_if_available(str(tmp_path), repair=False)


@pytest.mark.parametrize("c", [5, 8])
@pytest.mark.parametrize("old_log", ["lagging", "deposed leader", "deposed leader that compacted"])
def test_a_start_finishes_an_install_of_the_leaders_snapshot_that_a_crash_cut_short(
        tmp_path: Path, old_log: str, c: int) -> None:
    # A follower wrote the leader's snapshot at c, then died before deleting its old log files
    # (the newest first: whatever is left is the oldest). They must neither stop the start with
    # a false gap nor be replayed after the snapshot; the start deletes them, and then a second
    # start finds what the first wrote after the snapshot.
    me = nodes.self()
    entry = (2, c, "command", ((me, c), "inc", c))
    P.write_snapshot_file(str(tmp_path), 2, c, encode(
        Snapshot(Members(me, {me}), 2, entry, CONF, c, CommandResults())))
    own = [(1, i, "command", ((me, i), "inc", i)) for i in range(1, 12)]  # entries of its own term
    if old_log == "lagging":  # it had entries up to 3 only
        (tmp_path / "log_1").write_bytes(P.entries_to_binary(own[:3]))
    elif old_log == "deposed leader":  # 1..11 of its own term, which lost
        (tmp_path / "log_1").write_bytes(P.entries_to_binary(own))
    else:  # its own compaction at 4 had started log_10 (a file after the snapshot, left over too)
        P.write_snapshot_file(str(tmp_path), 1, 4, encode(
            Snapshot(Members(me, {me}), 1, own[3], CONF, 4, CommandResults())))
        (tmp_path / "log_1").write_bytes(P.entries_to_binary(own[:9]))
        (tmp_path / "log_10").write_bytes(P.entries_to_binary(own[9:]))
    for repair in (False, True):
        r = P.read_latest_snapshot_and_logs_if_available(str(tmp_path), repair=repair)
        assert r is not None and r.metadata.last_committed_index == c and r.entries == []
    assert P.list_log_files(str(tmp_path)) == []  # the install finished
    assert RaftedValue.read_last_log_term_and_index(str(tmp_path)) == (2, c)
    acknowledged = [(2, i, "command", ((me, i), "inc", 100 + i)) for i in range(c + 1, c + 4)]
    (tmp_path / f"log_{c + 1}").write_bytes(P.entries_to_binary(acknowledged))  # what a start writes
    r = P.read_latest_snapshot_and_logs_if_available(str(tmp_path), repair=True)
    assert r is not None and r.entries == acknowledged


def test_an_install_deletes_the_old_log_files_newest_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # so that a crash part-way leaves only the oldest files, which a start knows for leftovers
    me = nodes.self()
    first_entry = (0, 1, "leader_elected", [me])
    p = P.Persistence.new_with_initial_snapshot(str(tmp_path), 10, Snapshot(
        Members(me, {me}), 0, first_entry, CONF, 0, CommandResults()), 0)
    own = [(1, i, "command", ((me, i), "inc", i)) for i in range(2, 12)]
    p = p.write_log_entries(own[:5]).sync()
    (tmp_path / "log_7").write_bytes(P.entries_to_binary(own[5:]))  # as a compaction would start it
    unlinked: list[str] = []

    def crash_on_the_second(path: str) -> None:
        if len(unlinked) == 1:
            raise RuntimeError("crash")
        unlinked.append(os.path.basename(path))
        os.unlink(path)

    monkeypatch.setattr(P, "_unlink", crash_on_the_second)
    leaders = Snapshot(Members(me, {me}), 2, (2, 20, "command", ((me, 20), "inc", 20)), CONF, 20,
                       CommandResults())
    with pytest.raises(RuntimeError, match="crash"):
        p.install_snapshot(leaders)
    assert unlinked == ["log_7"] and [f for f, _ in P.list_log_files(str(tmp_path))] == [1]
    monkeypatch.undo()
    r = P.read_latest_snapshot_and_logs_if_available(str(tmp_path), repair=True)
    assert r is not None and r.metadata.last_committed_index == 20 and r.entries == []


def test_a_log_that_holds_the_snapshots_entry_is_kept_and_replayed(tmp_path: Path) -> None:
    # what the member's own compaction leaves: the snapshot at 5 was taken from this log
    me = nodes.self()
    log = [(1, i, "command", ((me, i), "inc", i)) for i in range(1, 9)]
    snap = Snapshot(Members(me, {me}), 1, log[4], CONF, 5, CommandResults())
    P.write_snapshot_file(str(tmp_path), 1, 5, encode(snap))
    (tmp_path / "log_1").write_bytes(P.entries_to_binary(log))
    r = P.read_latest_snapshot_and_logs_if_available(str(tmp_path), repair=True)
    assert r is not None and r.entries == log[5:]
    assert P.list_log_files(str(tmp_path)) == [(1, str(tmp_path / "log_1"))]


def test_the_directory_to_restore_a_stopped_group_from_is_the_most_up_to_date_log(tmp_path: Path) -> None:
    # A deposed leader logged 4..12 in term 1 that never committed; its successor committed
    # 4..7 in term 2 with the other follower. The highest last index is the deposed leader's;
    # the directory holding every acknowledged command is the one with the highest (term, index).
    me = nodes.self()
    snap = Snapshot(Members(me, {me}), 1, (1, 3, "command", ((me, 3), "inc", 3)), CONF, 3, CommandResults())
    logs = {"deposed": [(1, i, "command", ((me, i), "inc", i)) for i in range(1, 13)],
            "successor": [*[(1, i, "command", ((me, i), "inc", i)) for i in range(1, 4)],
                          *[(2, i, "command", ((me, i), "X", i)) for i in range(4, 8)]]}
    for name, entries in logs.items():
        (tmp_path / name).mkdir()
        P.write_snapshot_file(str(tmp_path / name), 1, 3, encode(snap))
        (tmp_path / name / "log_1").write_bytes(P.entries_to_binary(entries))
    dirs = [str(tmp_path / name) for name in logs]
    assert max(dirs, key=RaftedValue.read_last_log_index).endswith("deposed")
    assert RaftedValue.read_last_log_term_and_index(dirs[1]) == (2, 7)
    assert max(dirs, key=RaftedValue.read_last_log_term_and_index).endswith("successor")
    # a snapshot with no entry after it; nothing at all; a damaged log named
    os.unlink(tmp_path / "successor" / "log_1")
    assert RaftedValue.read_last_log_term_and_index(dirs[1]) == (1, 3)
    assert RaftedValue.read_last_log_term_and_index(str(tmp_path / "nothing")) is None
    (tmp_path / "empty").mkdir()
    assert RaftedValue.read_last_log_term_and_index(str(tmp_path / "empty")) is None
    damaged = bytearray((tmp_path / "deposed" / "log_1").read_bytes())
    damaged[40] ^= 0x40
    (tmp_path / "deposed" / "log_1").write_bytes(bytes(damaged))
    with pytest.raises(rafted.PersistenceError, match="log_1"):
        RaftedValue.read_last_log_term_and_index(dirs[0])
    with pytest.raises(TypeError, match="directory path"):
        RaftedValue.read_last_log_term_and_index(None)  # type: ignore[arg-type]


def test_a_snapshot_that_cannot_be_read_for_now_is_neither_skipped_nor_renamed_corrupt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # out of descriptors, say: the newest snapshot was renamed *.corrupt for good and an older
    # one used instead, though nothing was damaged
    import builtins
    import errno

    me = nodes.self()
    log = [(1, i, "command", ((me, i), "inc", i)) for i in range(1, 9)]
    for c in (3, 5):
        snap = Snapshot(Members(me, {me}), 1, log[c - 1], CONF, c, CommandResults())
        P.write_snapshot_file(str(tmp_path), 1, c, encode(snap))
    (tmp_path / "log_1").write_bytes(P.entries_to_binary(log))
    newest = str(tmp_path / "snapshot_1_5")

    def out_of_descriptors(path: Any, *args: Any, **kw: Any) -> Any:
        if path == newest:
            raise OSError(errno.EMFILE, "Too many open files")
        return builtins.open(path, *args, **kw)

    monkeypatch.setattr(P, "open", out_of_descriptors, raising=False)
    with pytest.raises(P.PersistenceError, match="snapshot_1_5.*Too many open files.*refusing to start"):
        P.read_latest_snapshot_and_logs_if_available(str(tmp_path), repair=True)
    monkeypatch.undo()
    assert os.path.exists(newest)
    r = P.read_latest_snapshot_and_logs_if_available(str(tmp_path), repair=True)
    assert r is not None and r.metadata.last_committed_index == 5


def test_recovered_state_round_trips_a_local_data_module(cluster: Cluster, tmp_path: Path) -> None:
    config = RaftedValue.make_config(make_bag(), heartbeat_timeout=30, election_timeout=200)
    leader = start(cluster, tmp_path, config, log_file_expansion_factor=1)
    for i in range(30):
        assert RaftedValue.command(leader, ("item", i)) == ("ok", i)
    stop(leader)
    again = start(cluster, tmp_path, CONF)
    assert RaftedValue.query(again, None) == ("ok", tuple(("item", i) for i in range(30)))
    assert state_of(again)[1].config.data_module is not JustAnInt


def test_recovery_in_the_same_process_leaves_local_classes_as_they_are(
    cluster: Cluster, tmp_path: Path
) -> None:
    # A class defined in a function (or a shell) is stored by value. Reading it back in the
    # process that defined it must give that class untouched: cloudpickle would otherwise
    # overwrite its functions with copies, cutting them off from their closures and globals.
    calls: list = []

    class Hook(rafted.LeaderHook):
        def on_restored_from_files(data: Any) -> None:
            calls.append(data)

    original = Hook.__dict__["on_restored_from_files"]
    bag = make_bag()
    config = RaftedValue.make_config(bag, leader_hook_module=Hook)
    leader = start(cluster, tmp_path, config)
    for i in range(3):
        assert RaftedValue.command(leader, i) == ("ok", i)
    stop(leader)
    again = start(cluster, tmp_path, CONF)
    restored = state_of(again)[1].config
    assert restored.leader_hook_module is Hook and restored.data_module is bag
    assert Hook.__dict__["on_restored_from_files"] is original
    assert calls == [(0, 1, 2)]  # the hook ran, and its closure is the test's list

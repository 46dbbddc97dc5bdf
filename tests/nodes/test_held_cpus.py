"""The board on which the nodes of one port-mapper tell each other the CPUs they hold."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes._held_cpus import HoldBoard, _start_time

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc"),
]


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not this one: stands in for another node."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def write_entry(board: HoldBoard, pid: int, cpu: int, started: str | None) -> Path:
    os.makedirs(board.dir, mode=0o700, exist_ok=True)
    path = Path(board.dir) / str(pid)
    path.write_text(f"{cpu} {started}\n")
    return path


def test_a_hold_is_seen_by_the_others_and_not_by_its_own_node(tmp_path: Path, other_process) -> None:
    mine = HoldBoard(4370, base=str(tmp_path))
    mine.announce(1)
    assert mine.others() == frozenset()  # its own hold is not another's
    write_entry(mine, other_process.pid, 0, _start_time(other_process.pid))
    assert mine.others() == {0}
    mine.announce(None)
    assert mine.others() == {0}  # the other one still holds: the board stays
    assert os.listdir(mine.dir) == [str(other_process.pid)]


def test_the_last_one_out_leaves_no_board_behind(tmp_path: Path) -> None:
    board = HoldBoard(4370, base=str(tmp_path))
    board.announce(0)
    assert os.path.isdir(board.dir)
    board.announce(None)
    assert not os.path.exists(board.dir)


def test_entries_of_gone_or_reused_pids_are_ignored_and_removed(tmp_path: Path, other_process) -> None:
    board = HoldBoard(4370, base=str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = write_entry(board, dead.pid, 0, "12345")
    # the live pid with another start time: a node that died and whose pid was reused since
    reused = write_entry(board, other_process.pid, 1, "1")
    assert board.others() == frozenset()
    assert not gone.exists() and not reused.exists()


def test_a_board_of_another_port_mapper_is_not_read(tmp_path: Path, other_process) -> None:
    ours, theirs = HoldBoard(4370, base=str(tmp_path)), HoldBoard(4371, base=str(tmp_path))
    write_entry(theirs, other_process.pid, 0, _start_time(other_process.pid))
    assert ours.others() == frozenset() and theirs.others() == {0}


def test_a_link_in_place_of_the_board_is_not_followed(tmp_path: Path, other_process) -> None:
    elsewhere = HoldBoard(1, base=str(tmp_path / "elsewhere"))
    write_entry(elsewhere, other_process.pid, 0, _start_time(other_process.pid))
    board = HoldBoard(4370, base=str(tmp_path))
    os.symlink(elsewhere.dir, board.dir)
    assert board.others() == frozenset()
    board.announce(1)  # nothing is written through the link
    assert os.listdir(elsewhere.dir) == [str(other_process.pid)]


def test_a_sweep_clears_boards_whose_nodes_are_all_gone(tmp_path: Path, other_process) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = HoldBoard(4371, base=str(tmp_path))
    write_entry(abandoned, dead.pid, 0, "12345")
    (Path(abandoned.dir) / f"{dead.pid}.tmp").write_text("0 1")  # a write cut short by a kill
    alive = HoldBoard(4372, base=str(tmp_path))
    write_entry(alive, other_process.pid, 1, _start_time(other_process.pid))
    HoldBoard(4370, base=str(tmp_path)).sweep()
    assert not os.path.exists(abandoned.dir)
    assert os.listdir(alive.dir) == [str(other_process.pid)]


def test_the_last_live_node_out_also_removes_the_entries_of_killed_holders(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    board = HoldBoard(4370, base=str(tmp_path))
    board.announce(0)
    killed = write_entry(board, dead.pid, 1, "12345")  # a holder SIGKILLed meanwhile
    cut_short = Path(board.dir) / f"{dead.pid}.tmp"  # or killed while writing its entry
    cut_short.write_text("1 2")
    board.leave()
    assert not killed.exists() and not cut_short.exists()
    assert not os.path.exists(board.dir)


def test_leaving_keeps_the_board_of_nodes_still_holding(tmp_path: Path, other_process) -> None:
    board = HoldBoard(4370, base=str(tmp_path))
    write_entry(board, other_process.pid, 1, _start_time(other_process.pid))
    board.announce(0)
    board.leave()
    assert os.listdir(board.dir) == [str(other_process.pid)]

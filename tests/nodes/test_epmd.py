"""nodes.epmd: the port mapper as a real OS process, its protocol, and its clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes import epmd

try:
    from . import transport_support as support
except ImportError:
    import transport_support as support  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def port() -> Iterator[int]:
    """A free port for this test's epmd; whatever epmd answers there at the end is killed."""
    p = support.free_port()
    started: list[int] = []
    yield p
    for pid in started:
        support.kill_pid(pid)
    try:
        support.kill_pid(epmd.pid("127.0.0.1", p))
    except OSError:
        pass
    support.wait_until(lambda: not epmd.is_running(p), 5.0, "epmd to die")


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes to epmd and read until it closes or answers a line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        chunks = []
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass  # epmd dropped us mid-way (reset, not connected, broken pipe): no answer
        return b"".join(chunks)


def test_ensure_running_starts_a_detached_epmd_that_answers(port: int) -> None:
    assert not epmd.is_running(port)
    epmd.ensure_running(port)
    assert epmd.is_running(port)
    pid = epmd.pid("127.0.0.1", port)
    assert pid != os.getpid()
    assert os.getsid(pid) == pid  # its own session: a Ctrl-C or a killed process group spares it
    assert epmd.names("127.0.0.1", port) == []
    epmd.ensure_running(port)  # already running: nothing new
    assert epmd.pid("127.0.0.1", port) == pid


def test_kill_stops_the_epmd_on_a_port_and_says_whether_one_ran(port: int) -> None:
    assert epmd.kill(port) is False  # none answers there
    epmd.ensure_running(port)
    pid = epmd.pid("127.0.0.1", port)
    assert epmd.kill(port) is True
    support.wait_until(lambda: not epmd.is_running(port), 5.0, "epmd to die")
    # the process itself is gone, not only its answers (a zombie until this process, which
    # started it, reaps it)
    def ended() -> bool:
        return not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"

    support.wait_until(ended, 5.0, "epmd's process to end")
    assert epmd.kill(port) is False


def test_register_lookup_names_and_unregister(port: int) -> None:
    epmd.ensure_running(port)
    reg = epmd.register("1", 5001, 77, port)
    try:
        assert epmd.lookup("127.0.0.1", "1", port) == (5001, 77)
        assert epmd.lookup("127.0.0.1", "2", port) is None
        assert epmd.names("127.0.0.1", port) == [("1", 5001, 77)]
        with pytest.raises(epmd.NameTaken):
            epmd.register("1", 5002, 78, port)
        assert epmd.lookup("127.0.0.1", "1", port) == (5001, 77)  # the first one is untouched
    finally:
        reg.close()
    support.wait_until(lambda: epmd.lookup("127.0.0.1", "1", port) is None, 5.0, "the entry to go")
    epmd.register("1", 5003, 79, port).close()  # the name is free again


def test_lookup_raises_when_epmd_is_unreachable() -> None:
    with pytest.raises(epmd.EpmdError):
        epmd.lookup("127.0.0.1", "1", support.free_port(), timeout=1.0)


REGISTER_AND_WAIT = """
import sys, time
from nodes import epmd
reg = epmd.register(sys.argv[1], int(sys.argv[2]), 1, int(sys.argv[3]))
print("registered", flush=True)
time.sleep(120)
"""


def test_entry_disappears_when_the_node_is_killed(port: int) -> None:
    epmd.ensure_running(port)
    child = subprocess.Popen([sys.executable, "-c", REGISTER_AND_WAIT, "victim", "6000", str(port)],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"registered"
        assert epmd.lookup("127.0.0.1", "victim", port) == (6000, 1)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        support.wait_until(lambda: epmd.lookup("127.0.0.1", "victim", port) is None, 5.0,
                           "the dead node's entry to go")
    finally:
        support.kill_pid(child.pid)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def test_epmd_outlives_the_process_that_started_it(port: int) -> None:
    code = f"from nodes import epmd; epmd.ensure_running({port})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert epmd.is_running(port)


def test_two_starters_racing_leave_exactly_one_epmd(port: int) -> None:
    before = list(epmd._started)  # references, not ids: a pruned Popen's id can be reused
    errors: list[BaseException] = []

    def start() -> None:
        try:
            epmd.ensure_running(port)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    pid = epmd.pid("127.0.0.1", port)
    mine = [p for p in epmd._started if all(p is not q for q in before)]
    assert pid in [p.pid for p in mine]
    # Any epmd of ours that is not the one answering has exited after failing to bind.
    for proc in mine:
        if proc.pid != pid:
            assert proc.wait(10) == 1


def test_registration_survives_an_epmd_restart(port: int) -> None:
    epmd.ensure_running(port)
    reg = epmd.register("survivor", 7000, 3, port)
    try:
        first = epmd.pid("127.0.0.1", port)
        support.kill_pid(first)
        support.wait_until(lambda: epmd.is_running(port) and epmd.pid("127.0.0.1", port) != first, 10.0,
                           "a new epmd")
        support.wait_until(lambda: epmd.lookup("127.0.0.1", "survivor", port) == (7000, 3), 10.0,
                           "the registration to come back")
        support.wait_until(lambda: reg.reregistrations == 1, 5.0, "the registration to count it")
    finally:
        reg.close()


def test_module_entry_point_and_a_second_epmd_on_the_same_port(port: int) -> None:
    server = subprocess.Popen([sys.executable, "-m", "nodes.epmd", "--port", str(port)],
                              stderr=subprocess.DEVNULL)
    try:
        support.wait_until(lambda: epmd.is_running(port), 20.0, "epmd to answer")
        assert epmd.pid("127.0.0.1", port) == server.pid
        second = subprocess.run([sys.executable, "-m", "nodes.epmd", "--port", str(port)],
                                capture_output=True, timeout=60)
        assert second.returncode == 1
        assert b"cannot listen" in second.stderr
    finally:
        server.kill()
        server.wait(10)


def test_garbage_input_drops_the_client_and_keeps_serving(port: int) -> None:
    epmd.ensure_running(port)
    reg = epmd.register("steady", 7100, 1, port)
    try:
        bad_inputs = [
            b"\x00\xff\xfe garbage\n",
            b"not json at all\n",
            b"[1, 2, 3]\n",
            b'{"op": "explode"}\n',
            b'{"op": "register", "name": ["x"], "port": "no", "creation": null}\n',
            b'{"op": "port", "name": {"a": 1}}\n',
            b"x" * (epmd.MAX_LINE * 4),  # an endless line
            os.urandom(10_000),
        ]
        for data in bad_inputs:
            reply = raw_exchange(port, data)
            if reply:
                answer = json.loads(reply.splitlines()[0])
                assert "error" in answer, (data[:40], answer)
            assert epmd.is_running(port)
        assert epmd.lookup("127.0.0.1", "steady", port) == (7100, 1)
    finally:
        reg.close()


def start_epmd(port: int, log_path: Path, *args: str, nofile: int | None = None) -> subprocess.Popen[bytes]:
    """``python -m nodes.epmd`` on ``port``, its stderr in ``log_path``; answering when this returns."""
    def limit_descriptors() -> None:
        if nofile is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "nodes.epmd", "--port", str(port), *args],
                                  stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_descriptors)
    try:
        support.wait_until(lambda: epmd.is_running(port), 20.0, "epmd to answer")
    except BaseException:
        server.kill()
        server.wait(10)
        raise
    return server


def test_a_client_that_has_not_registered_leaves_after_the_packet_timeout_however_chatty(
        port: int, tmp_path: Path) -> None:
    server = start_epmd(port, tmp_path / "epmd.log", "--packet-timeout", "0.5")
    try:
        reg = epmd.register("steady", 7100, 1, port)
        started = time.monotonic()
        answers = 0
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rwb")
            try:
                while time.monotonic() - started < 10:
                    f.write(b'{"op": "ping"}\n')
                    f.flush()
                    line = f.readline()
                    if not line:
                        break
                    assert json.loads(line) == {"ok": True}
                    answers += 1
                    time.sleep(0.05)  # a request every 50 ms: never idle for long
            except OSError:
                pass  # reset while writing: dropped, as wanted
        lasted = time.monotonic() - started
        assert answers > 0 and 0.5 <= lasted < 10, (answers, lasted)
        # the registered connection is older than that and stays
        assert epmd.lookup("127.0.0.1", "steady", port) == (7100, 1)
        assert json.loads(raw_exchange(port, b"[" * 4000 + b"\n")) == {"error": "bad_request"}
        assert epmd.is_running(port)
        reg.close()
    finally:
        server.kill()
        server.wait(10)
    assert b"Traceback" not in (tmp_path / "epmd.log").read_bytes()


def test_epmd_out_of_file_descriptors_pauses_instead_of_ending(port: int, tmp_path: Path) -> None:
    nofile = 48
    server = start_epmd(port, tmp_path / "epmd.log", "--packet-timeout", "60", nofile=nofile)
    clients: list[socket.socket] = []
    try:
        for _ in range(nofile + 16):  # more than it may hold: the rest wait in the backlog
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))

        def full_or_gone() -> bool:
            try:
                return server.poll() is not None or len(os.listdir(f"/proc/{server.pid}/fd")) >= nofile
            except FileNotFoundError:
                return True

        support.wait_until(full_or_gone, 20.0, "epmd to run out of descriptors")
        for c in clients:
            c.close()
        clients.clear()
        support.wait_until(lambda: server.poll() is not None or epmd.is_running(port), 20.0, "epmd to answer")
        assert server.poll() is None, "epmd ended when it ran out of descriptors"
        assert epmd.pid("127.0.0.1", port) == server.pid
    finally:
        for c in clients:
            c.close()
        server.kill()
        server.wait(10)


def test_one_connection_registers_one_name_and_queries_work_on_it(port: int) -> None:
    epmd.ensure_running(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rwb")

        def ask(msg: dict[str, object]) -> dict[str, object]:
            f.write(json.dumps(msg).encode() + b"\n")
            f.flush()
            return dict(json.loads(f.readline()))

        assert ask({"op": "register", "name": "a", "port": 1, "creation": 2}) == {"ok": True}
        assert ask({"op": "port", "name": "a"}) == {"port": 1, "creation": 2}
        assert ask({"op": "register", "name": "b", "port": 1, "creation": 2}) == {"error": "not_allowed"}
    support.wait_until(lambda: epmd.lookup("127.0.0.1", "a", port) is None, 5.0, "the entry to go")


def test_only_loopback_clients_may_register() -> None:
    assert epmd._is_loopback("127.0.0.1")
    assert epmd._is_loopback("::1")
    assert epmd._is_loopback("::ffff:127.0.0.1")
    assert not epmd._is_loopback("192.0.2.7")
    assert not epmd._is_loopback("::ffff:192.0.2.7")
    assert not epmd._is_loopback("garbage")

"""Hostile input against a real ``python -m nodes --noshell`` node.

An attacker who does not have the cookie finds the node's port through epmd and talks to it
from a raw ZeroMQ DEALER socket (as a node would) and from a raw TCP socket (below ZeroMQ):
random bytes, truncated frames, wrong part counts, handshake garbage, a session-looking
frame with a bad MAC, a wrong-cookie handshake.  Several of these carry a pickle whose
loading would create a file.  The node must never unpickle any of it, must keep running,
and authenticated traffic (rpc from the pytest node) must go on working.

Wire format (see nodes/transport.py and nodes/codec.py): handshake messages are ``[kind,
JSON]`` with kinds ``h`` (hello) ``c`` ``r`` ``a`` ``k`` ``n`` ``x``; session frames are
``[kind + 8-byte sequence, payload..., 32-byte HMAC]``.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

import nodes
from nodes import codec, epmd
from nodes.transport import PROTOCOL_VERSION

try:
    from . import dist_peer_helpers as h
    from .frames import frame_like
except ImportError:
    import dist_peer_helpers as h  # type: ignore[no-redef]
    from frames import frame_like  # type: ignore[no-redef]

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(90)]


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the file appearing means a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def evil_pickle(path: Path) -> bytes:
    return pickle.dumps(CreatesFile(str(path)), protocol=5)


def transport_stats() -> dict[str, int]:
    """(runs on the peer) its transport's counters."""
    from nodes import dist

    return dict(dist._transport.stats)


class Intruder:
    """A DEALER socket talking to the node's ROUTER without the cookie."""

    def __init__(self, ctx: zmq.Context[Any], port: int, routing_id: bytes) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def send(self, parts: list[bytes]) -> None:
        self.sock.send_multipart(parts)

    def recv(self, timeout_ms: int = 5000) -> list[bytes] | None:
        if self.sock.poll(timeout_ms, zmq.POLLIN):
            return self.sock.recv_multipart()
        return None

    def recv_handshake(self, kind: bytes, timeout_s: float = 5.0) -> dict[str, Any]:
        """Read replies until one of ``kind`` (RESETs for earlier junk may come first)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            parts = self.recv(100)
            if parts is None:
                continue
            if len(parts) == 2 and parts[0] == kind:
                return dict(json.loads(parts[1]))
        raise AssertionError(f"no {kind!r} answer within {timeout_s} s")

    def hello(self, node_name: str, claimed: str, creation: int = 1) -> dict[str, Any]:
        self.send(codec.encode_handshake(b"h", {"v": PROTOCOL_VERSION, "from": claimed, "to": node_name,
                                                "creation": creation}))
        return self.recv_handshake(b"c")

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def target(node_cluster: Any) -> Any:
    peer = h.start_peer(node_cluster)
    short = peer.name.partition("@")[0]
    found = epmd.lookup("127.0.0.1", short, int(os.environ["NODES_EPMD_PORT"]))
    assert found is not None
    peer.port = found[0]
    return peer


def assert_healthy(peer: Any, *evil_paths: Path) -> None:
    for path in evil_paths:
        assert not path.exists(), f"a pickle from an unauthenticated source was loaded: {path} exists"
    assert peer.alive(), f"the node died:\n{peer.log()}"
    assert nodes.rpc.call(peer.name, nodes.node, timeout=10_000) == peer.name
    assert nodes.rpc.call(peer.name, nodes.list_nodes, timeout=10_000) == [nodes.node()]
    assert peer.name in nodes.list_nodes()
    log = peer.log()
    assert "Traceback" not in log and "crashed" not in log, log


def test_the_evil_pickle_is_really_evil(tmp_path: Path) -> None:
    """The payload the other tests send does create its file when loaded (no vacuous test)."""
    path = tmp_path / "created"
    pickle.loads(evil_pickle(path)).close()
    assert path.exists()


def test_garbage_and_forged_frames_from_a_dealer(target: Any, tmp_path: Path) -> None:
    peer = target
    paths = [tmp_path / f"pwned{i}" for i in range(8)]
    evil = [evil_pickle(p) for p in paths]
    before = nodes.rpc.call(peer.name, transport_stats, timeout=10_000)
    ctx: zmq.Context[Any] = zmq.Context()
    intruder = Intruder(ctx, peer.port, b"intruder-1")
    try:
        junk: list[list[bytes]] = [
            [os.urandom(64)],
            [os.urandom(1) for _ in range(7)],  # wrong part count
            [b""],
            [b"h"],  # a hello with no body
            [b"h", b"{not json"],
            [b"h", b"[1, 2, 3]"],
            [b"h", b"{" + b" " * 10_000 + b"}"],  # over the handshake size limit
            [b"h", b"[" * 4000],  # JSON nested deeper than the decoder's recursion limit
            [b"h", json.dumps({"v": PROTOCOL_VERSION, "from": 7, "to": peer.name, "creation": "x"}).encode()],
            [b"h", json.dumps({"v": 99, "from": "a@b", "to": peer.name, "creation": 1}).encode()],
            [b"h", evil[0]],  # a pickle where JSON is expected
            [evil[1]],  # a bare pickle
            [b"D"],  # truncated header
            [frame_like(b"D", 0, [], b"")],  # header only
            [frame_like(b"D", 0, [evil[2]], b"")],  # no MAC
            [frame_like(b"D", 0, [evil[3]], os.urandom(32))],  # valid-looking, bad MAC
            [frame_like(b"D", 1, [evil[3], evil[3]], os.urandom(32))],
            [frame_like(b"Z", 0, [evil[4]], os.urandom(32))],  # unknown kind
            [frame_like(b"D", 0, [b""] * 10_001, os.urandom(32))],  # too many payloads
            [frame_like(b"D", 0, [evil[3]], os.urandom(32)), evil[3]],  # a frame and one part more
            [b"r", json.dumps({"nonce": "00" * 32, "digest": "00" * 32}).encode()],  # reply, no hello
            [b"a", json.dumps({"digest": "00" * 32}).encode()],
            [b"x"],
        ]
        for parts in junk:
            intruder.send(parts)
        # frames on one connection are handled in order: once a hello is answered, all the
        # junk before it has been looked at
        challenge = intruder.hello(peer.name, "intruder@elsewhere")
        assert challenge["name"] == peer.name

        # a wrong-cookie handshake is refused, and what follows it is not unpickled either
        wrong = codec.Transcript("intruder@elsewhere", peer.name, 1, challenge["creation"],
                                 codec.new_nonce(), bytes.fromhex(challenge["nonce"]))
        intruder.send(codec.encode_handshake(b"r", {"nonce": wrong.initiator_nonce.hex(),
                                                    "digest": wrong.initiator_proof(b"guess").hex()}))
        assert intruder.recv_handshake(b"n") == {"reason": "cookie"}
        # frames sealed with a session key derived from the wrong cookie
        forged = wrong.session(b"guess", initiator=True)
        intruder.send(forged.seal(b"D", [evil[5]]))
        intruder.send(forged.seal(b"D", [evil[5]]))
        intruder.send([frame_like(b"D", 0, [evil[6]], os.urandom(32))])
        challenge = intruder.hello(peer.name, "intruder@elsewhere")  # barrier again
    finally:
        intruder.close()
        ctx.term()
    after = nodes.rpc.call(peer.name, transport_stats, timeout=10_000)
    assert after.get("dropped_frames", 0) - before.get("dropped_frames", 0) >= 10, after
    assert after.get("undecodable", 0) == before.get("undecodable", 0)
    assert_healthy(peer, *paths)


def test_a_hello_claiming_a_connected_node_does_not_disturb_it(target: Any, tmp_path: Path) -> None:
    peer = target
    path = tmp_path / "pwned"
    me = nodes.node()
    ctx: zmq.Context[Any] = zmq.Context()
    intruders = [Intruder(ctx, peer.port, f"claims-{i}".encode()) for i in range(3)]
    try:
        # claims to be the pytest node, which is connected and authenticated
        challenge = intruders[0].hello(peer.name, me, creation=12345)
        assert challenge["name"] == peer.name
        # while that handshake is pending, the real connection keeps working
        assert nodes.rpc.call(peer.name, nodes.node, timeout=10_000) == peer.name
        intruders[0].send(codec.encode_handshake(b"r", {"nonce": "00" * 32, "digest": "00" * 32}))
        assert intruders[0].recv_handshake(b"n") == {"reason": "cookie"}
        # a session frame on an unfinished handshake is handshake garbage: the attempt is dropped
        intruders[1].hello(peer.name, me, creation=1)
        intruders[1].send([frame_like(b"D", 0, [evil_pickle(path)], os.urandom(32))])
        intruders[1].send(codec.encode_handshake(b"r", {"nonce": "00" * 32, "digest": "00" * 32}))
        assert intruders[1].recv(5000) == [b"x"]  # "I do not know this connection"
        intruders[2].send(codec.encode_handshake(b"h", {"v": PROTOCOL_VERSION, "from": peer.name,
                                                        "to": peer.name, "creation": 1}))
        assert intruders[2].recv_handshake(b"n")["reason"] == "bad_name"
        intruders[2].send(codec.encode_handshake(b"h", {"v": PROTOCOL_VERSION, "from": "x@y",
                                                        "to": "someone@else", "creation": 1}))
        assert intruders[2].recv_handshake(b"n")["reason"] == "wrong_node"
        # a node that frames messages as before (protocol 1: a part per payload) is told why
        intruders[2].send(codec.encode_handshake(b"h", {"v": 1, "from": "old@y", "to": peer.name,
                                                        "creation": 1}))
        assert intruders[2].recv_handshake(b"n")["reason"] == "version"
        # left pending until the node gives up on it (the handshake timeout, 5 s): the real
        # connection is neither replaced nor reported down meanwhile or after
        intruders[1].hello(peer.name, me, creation=2)
        assert h.stays(lambda: peer.name in nodes.list_nodes(), 6.0)
    finally:
        for intruder in intruders:
            intruder.close()
        ctx.term()
    assert nodes.rpc.call(peer.name, nodes.list_nodes, timeout=10_000) == [me]
    assert_healthy(peer, path)


def test_hellos_claiming_two_nodes_do_not_keep_them_from_connecting(node_cluster: Any) -> None:
    """A stranger claims each node's name to the other, a hello every millisecond: it cannot
    prove the cookie, so it may not settle their simultaneous connect or cancel their attempts."""
    import threading

    peer = h.start_peer(node_cluster, connect=False)
    epmd_port = int(os.environ["NODES_EPMD_PORT"])
    peer_port, _ = h.wait_registered(peer.name.partition("@")[0])
    my_port = epmd.lookup("127.0.0.1", nodes.node().partition("@")[0], epmd_port)[0]
    ctx: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()

    def claim(port: int, claimed: str, to: str, rid: bytes) -> None:
        intruder = Intruder(ctx, port, rid)
        try:
            while not stop.is_set():
                intruder.send(codec.encode_handshake(b"h", {"v": PROTOCOL_VERSION, "from": claimed, "to": to,
                                                            "creation": 1}))
                while intruder.recv(0) is not None:
                    pass
                time.sleep(0.001)
        finally:
            intruder.close()

    threads = [threading.Thread(target=claim, args=(peer_port, nodes.node(), peer.name, b"claims-me")),
               threading.Thread(target=claim, args=(my_port, peer.name, nodes.node(), b"claims-peer"))]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)  # the claims are under way (this test is about their going on)
        # both connect at once, as a new mesh does: the ties are settled by proven hellos only
        assert nodes.rpc.call(peer.name, nodes.connect, nodes.node(), timeout=20_000) is True
        assert nodes.connect(peer.name) is True
        assert nodes.rpc.call(peer.name, nodes.node, timeout=10_000) == peer.name
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        ctx.term()
    assert_healthy(peer)


def test_a_flood_of_unfinished_handshakes(target: Any) -> None:
    peer = target
    ctx: zmq.Context[Any] = zmq.Context()
    intruders = [Intruder(ctx, peer.port, f"flood-{i}".encode()) for i in range(150)]
    try:
        for i, intruder in enumerate(intruders):
            intruder.send(codec.encode_handshake(b"h", {"v": PROTOCOL_VERSION, "from": f"f{i}@x",
                                                        "to": peer.name, "creation": 1}))
        answered = sum(1 for intruder in intruders if intruder.recv(5000) is not None)
        assert answered == len(intruders)
        assert nodes.rpc.call(peer.name, nodes.node, timeout=10_000) == peer.name
    finally:
        for intruder in intruders:
            intruder.close()
        ctx.term()
    assert_healthy(peer)


def answers_to_a_stream(peer: Any, messages: list[list[bytes]], dropped: int) -> list[list[bytes]]:
    """Send ``messages`` from one stranger's connection without reading, wait until the node has
    dropped ``dropped`` frames (it looked at them all), then read what it answered."""
    before = nodes.rpc.call(peer.name, transport_stats, timeout=10_000)
    ctx: zmq.Context[Any] = zmq.Context()
    intruder = Intruder(ctx, peer.port, b"streamer")
    try:
        for parts in messages:
            intruder.send(parts)

        def all_handled() -> bool:
            after = nodes.rpc.call(peer.name, transport_stats, timeout=10_000)
            return after.get("dropped_frames", 0) - before.get("dropped_frames", 0) >= dropped

        h.wait_until_true(all_handled, 20, "the node to look at every message")
        answers = []
        while (parts := intruder.recv(1000)) is not None:  # whatever was sent has arrived by then
            answers.append(parts)
        return answers
    finally:
        intruder.close()
        ctx.term()


def test_a_stream_of_hellos_on_one_connection_gets_one_challenge_at_a_time(target: Any) -> None:
    """Each answer waits in ZeroMQ for a reader that may never read: a stranger that sends
    hellos without reading must not make the node queue an answer per hello."""
    hellos = [codec.encode_handshake(b"h", {"v": PROTOCOL_VERSION, "from": f"s{i}@x", "to": target.name,
                                            "creation": 1}) for i in range(1000)]
    answers = answers_to_a_stream(target, hellos, 999)
    assert [a[0] for a in answers].count(b"c") == 1
    assert_healthy(target)


def test_a_stream_of_frames_from_a_stranger_gets_few_resets(target: Any) -> None:
    """A frame that looks like ours from an unknown connection is answered with a reset (a peer
    of ours then knows at once that we lost its connection), but not every one of a stream."""
    frames = [[frame_like(b"D", i, [b"x"], os.urandom(32))] for i in range(1000)]
    resets = answers_to_a_stream(target, frames, 1000).count([b"x"])
    assert 1 <= resets <= 25, resets  # one a second at most, however slow the machine
    assert_healthy(target)


def zmtp_greeting() -> bytes:
    """A ZMTP 3.0 greeting with the NULL mechanism (64 bytes)."""
    return b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31


def zmtp_ready(socket_type: bytes = b"DEALER") -> bytes:
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return b"\x04" + bytes([len(body)]) + body


def zmtp_open(port: int) -> socket.socket:
    """A TCP connection through the ZMTP handshake as a DEALER (waits for the server's greeting:
    libzmq drops a client that sends READY before it has answered the greeting)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(zmtp_greeting())
    greeting = b""
    while len(greeting) < 64:
        chunk = s.recv(64 - len(greeting))
        assert chunk, f"the node closed the connection during the greeting (got {greeting!r})"
        greeting += chunk
    s.sendall(zmtp_ready())
    return s


def closed_by_peer(sock: socket.socket, timeout_s: float = 10.0) -> bool:
    """True once the other side closes the connection (reads drain whatever it sent first)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def test_raw_tcp_garbage_below_zeromq(target: Any, tmp_path: Path) -> None:
    peer = target
    path = tmp_path / "pwned"
    # random bytes instead of a ZMTP greeting (ZeroMQ may take them for ZMTP 1.0 and wait)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as s:
            s.sendall(os.urandom(4096))
    # a valid signature, then garbage where the version and mechanism go: dropped. The major
    # version is drawn from 3 up (ZMTP 3): after a 0, ZeroMQ speaks ZMTP 1.0, takes the rest
    # for frames (which the node drops, as from a stranger) and keeps the connection, so this
    # step failed when a random byte was 0, about one run in 256
    with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as s:
        s.sendall(zmtp_greeting()[:10] + bytes([random.randrange(3, 256)]) + os.urandom(4095))
        assert closed_by_peer(s)
    # a correct greeting and READY, then a frame that claims to be 2**62 bytes long
    with zmtp_open(peer.port) as s:
        s.sendall(b"\x02" + struct.pack(">Q", 2**62) + b"x" * 1000)
        assert closed_by_peer(s)
    # a correct greeting, a real hello (answered: the framing here is right), then
    # well-formed messages carrying a pickle
    with zmtp_open(peer.port) as s:
        payload = evil_pickle(path)
        hello = json.dumps({"v": PROTOCOL_VERSION, "from": "raw@elsewhere", "to": peer.name,
                            "creation": 1}).encode()
        s.sendall(b"\x01\x01h" + b"\x00" + bytes([len(hello)]) + hello)
        received = b""
        deadline = time.monotonic() + 5
        while b'"nonce"' not in received and time.monotonic() < deadline:
            received += s.recv(65536)
        assert b'"nonce"' in received, received
        s.sendall(b"\x01\x01h" + b"\x02" + struct.pack(">Q", len(payload)) + payload)  # [b"h", pickle]
        s.sendall(b"\x02" + struct.pack(">Q", len(payload)) + payload)  # [pickle]
    # a half greeting, then silence and a close
    with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as s:
        s.sendall(zmtp_greeting()[:5])
    # many connections opened and dropped at once
    socks = [socket.create_connection(("127.0.0.1", peer.port), timeout=5) for _ in range(50)]
    for s in socks:
        s.close()
    assert_healthy(peer, path)

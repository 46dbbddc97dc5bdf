"""Serialization and authenticated framing for traffic between nodes.

Two jobs, both pure (no sockets, no threads):

* **Objects ↔ bytes.** :func:`dumps` tries plain :mod:`pickle` first (fast: well under a
  microsecond for the small tuples on Raft's hot path) and falls back to :mod:`cloudpickle`
  when plain pickle cannot do it (lambdas, local classes, ...) *or* when the result refers to
  ``__main__``: plain pickle stores a class defined in a script or an interactive shell by
  reference to ``__main__``, which succeeds here but cannot be loaded by another node, so such
  objects must travel by value.  The check is a substring search for ``b"__main__"`` in the
  plain pickle: cheap (~0.2 µs) and conservative (a mere *string* ``"__main__"`` in a message
  only costs one cloudpickle round).  :func:`loads` is :func:`pickle.loads`, except that a
  class this node defined and gets back by value is kept as it is (:mod:`nodes.unpickling`).
  Never call :func:`loads` on bytes that did not pass
  :meth:`Session.open` (or a trusted file): unpickling runs code.

* **Handshake proofs and frame MACs.** Two nodes sharing a cookie prove it to each other
  without sending it (:class:`Transcript`), then derive one key per direction from the cookie
  and both handshake nonces.  Every frame after the handshake is sealed by a
  :class:`Session` into one ZeroMQ message part::

      frame = kind (1 byte, b"D" data | b"T" tick | b"N" node list | b"B" bye)
              + sequence number (8 bytes, big endian, per direction, starting at 0)
              + n, the number of payloads (4 bytes) + n payload lengths (4 bytes each)
              + payload_1 + ... + payload_n
              + mac = HMAC-SHA256(direction key, everything before it)

  The sequence number inside the MAC stops replays, reordering and silent loss; the per
  direction key stops reflection of a frame back to its sender; the lengths inside the MAC
  stop shifting bytes between payloads.  :meth:`Session.open` checks the shape and sizes
  first, then the MAC (with :func:`hmac.compare_digest`), then the sequence number, and only
  then hands the payloads out, so nothing from an unauthenticated source is ever unpickled.
  One part rather than a part per payload: each part costs a call into ZeroMQ on both sides,
  and a frame of a hundred small messages was a hundred parts (one-way messages between two
  nodes went from about 210,000 to about 270,000 a second on a 2-core VM).

  Handshake messages (before a session exists) are ``[kind (1 byte), JSON object]`` and are
  encoded and bounded by :func:`encode_handshake` / :func:`decode_handshake`; JSON, never
  pickle, because the other side is not yet trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from . import unpickling
from .terms import PLAIN_TYPES, Pickled

PICKLE_PROTOCOL = 5
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
"""Largest sum of payload sizes accepted in one frame (a bigger declared frame is refused)."""
MAX_PAYLOADS = 10_000
"""Largest number of payloads in one frame (the transport's batches are split well below this)."""
MAC_SIZE = 32
NONCE_SIZE = 32
MAX_HANDSHAKE_BODY = 4096

DATA = b"D"
TICK = b"T"
NODE_LIST = b"N"
BYE = b"B"
FRAME_KINDS = frozenset((DATA, TICK, NODE_LIST, BYE))

_FRAME_HEAD = struct.Struct(">cQI")  # kind, sequence number, number of payloads
_LENGTH = struct.Struct(">I")
MIN_FRAME_SIZE = _FRAME_HEAD.size + MAC_SIZE
_MAIN_MARKER = b"__main__"


def max_message_size(max_frame_size: int) -> int:
    """The largest ZeroMQ message a frame carrying at most ``max_frame_size`` payload bytes is."""
    return MIN_FRAME_SIZE + _LENGTH.size * MAX_PAYLOADS + max_frame_size


def looks_like_frame(parts: Sequence[bytes]) -> bool:
    """Whether ``parts`` has the shape of a session frame (nothing checked beyond that)."""
    return len(parts) == 1 and len(parts[0]) >= MIN_FRAME_SIZE and parts[0][:1] in FRAME_KINDS


class EncodeError(TypeError):
    """The object cannot be serialized (neither by pickle nor by cloudpickle)."""


class FrameError(ValueError):
    """A frame was refused: malformed, too large, or its MAC does not verify."""


class SequenceError(FrameError):
    """A frame with a valid MAC arrived out of sequence: frames were lost or replayed."""


# --------------------------------------------------------------------------- serialization


def dumps(obj: object) -> bytes:
    """Serialize ``obj``: plain pickle when it can be loaded elsewhere, else cloudpickle.

    Raises :class:`EncodeError` when neither can serialize it (a lock, a socket, ...).
    """
    try:
        data = pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    except Exception as plain_error:  # PicklingError, AttributeError (local objects), TypeError, ...
        return _cloud_dumps(obj, plain_error)
    if _MAIN_MARKER in data:
        # Refers to something defined in __main__ (a script, the shell): ship it by value.
        return _cloud_dumps(obj, None)
    return data


def _cloud_dumps(obj: object, plain_error: BaseException | None) -> bytes:
    try:
        return cloudpickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    except Exception as error:
        raise EncodeError(f"cannot serialize {type(obj).__qualname__} object: {error}") from (
            plain_error or error
        )


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Deserialize bytes made by :func:`dumps`.  Only for authenticated input: it runs code."""
    return unpickling.loads(data)


def apart(value: Any, text: str | None = None) -> Any:
    """``value`` ready to ride inside a message to another node.

    As it is when every node rebuilds its type (:data:`~nodes.terms.PLAIN_TYPES`), else pickled
    apart beside a text that stands for it there (:class:`~nodes.terms.Pickled`; ``text``, or
    the name of its type): a value the receiver cannot rebuild then fails alone, where the whole
    frame would fail to unpickle and be dropped.  Raises :class:`EncodeError` when it cannot be
    pickled at all.
    """
    if type(value) in PLAIN_TYPES:
        return value
    if text is None:
        text = f"a {type(value).__module__}.{type(value).__qualname__}"
    return Pickled(dumps(value), text)


# --------------------------------------------------------------------------- handshake


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


@dataclass(frozen=True)
class Transcript:
    """What both sides of one handshake agreed on; proofs and keys are bound to all of it."""

    initiator: str
    acceptor: str
    initiator_creation: int
    acceptor_creation: int
    initiator_nonce: bytes
    acceptor_nonce: bytes

    def _encoded(self, label: bytes) -> bytes:
        return _fields(label, self.initiator.encode(), self.acceptor.encode(),
                       str(self.initiator_creation).encode(), str(self.acceptor_creation).encode(),
                       self.initiator_nonce, self.acceptor_nonce)

    def initiator_proof(self, cookie: bytes) -> bytes:
        """Sent by the initiator: answers the acceptor's fresh nonce, so it cannot be replayed."""
        return hmac.digest(cookie, self._encoded(b"nodes-initiator-proof"), "sha256")

    def acceptor_proof(self, cookie: bytes) -> bytes:
        """Sent by the acceptor, only after it verified the initiator (no oracle for strangers)."""
        return hmac.digest(cookie, self._encoded(b"nodes-acceptor-proof"), "sha256")

    def session(self, cookie: bytes, *, initiator: bool, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
                ) -> Session:
        """The session for this side: one key to send with, the other to check with."""
        secret = hmac.digest(cookie, self._encoded(b"nodes-session"), "sha256")
        i_to_a = hmac.digest(secret, b"initiator->acceptor", "sha256")
        a_to_i = hmac.digest(secret, b"acceptor->initiator", "sha256")
        if initiator:
            return Session(i_to_a, a_to_i, max_frame_size=max_frame_size)
        return Session(a_to_i, i_to_a, max_frame_size=max_frame_size)


def _fields(*fields: bytes) -> bytes:
    """Length-prefixed fields: no two different lists of fields encode alike."""
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def hello_proof(cookie: bytes, initiator: str, acceptor: str, creation: int, nonce: bytes) -> bytes:
    """Carried by the initiator's hello: shows the acceptor that the hello comes from a node with
    the cookie before the hello may touch the acceptor's other handshakes (a stranger claiming a
    node's name must not cancel that node's real attempts). Replays are refused by nonce; the
    acceptor answers a hello without it all the same, so a node with a wrong cookie still
    learns why it is refused."""
    return hmac.digest(cookie, _fields(b"nodes-hello", initiator.encode(), acceptor.encode(),
                                       str(creation).encode(), nonce), "sha256")


def verify_proof(expected: bytes, received: bytes) -> bool:
    return hmac.compare_digest(expected, received)


def encode_handshake(kind: bytes, body: dict[str, Any]) -> list[bytes]:
    return [kind, json.dumps(body, separators=(",", ":")).encode()]


def decode_handshake(parts: Sequence[bytes]) -> tuple[bytes, dict[str, Any]]:
    """Parse ``[kind, JSON object]``; raises :class:`FrameError` on anything else."""
    if len(parts) != 2:
        raise FrameError(f"handshake message with {len(parts)} parts, expected 2")
    kind, body = parts
    if len(kind) != 1:
        raise FrameError("handshake kind must be one byte")
    if len(body) > MAX_HANDSHAKE_BODY:
        raise FrameError(f"handshake body of {len(body)} bytes exceeds {MAX_HANDSHAKE_BODY}")
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly nested JSON
        raise FrameError(f"handshake body is not JSON: {error}") from None
    if not isinstance(decoded, dict):
        raise FrameError("handshake body is not a JSON object")
    return kind, decoded


# --------------------------------------------------------------------------- sessions


def _keyed_mac(key: bytes) -> Any:
    """An HMAC-SHA256 object keyed once and copied per frame (cheaper than ``hmac.new`` each time).

    With OpenSSL, ``hmac.HMAC`` wraps a C object (``_hmac``) that has the same ``copy``,
    ``update`` and ``digest``: using it directly saves the wrapper's Python frames, about
    0.7 µs per frame in a loop and several times that in a thread just woken.
    """
    mac = hmac.new(key, digestmod=hashlib.sha256)
    return getattr(mac, "_hmac", None) or mac


class Session:
    """Seals outgoing and opens incoming frames of one authenticated connection.

    Not thread-safe: one connection is driven by one thread.
    """

    __slots__ = ("_send_mac", "_recv_mac", "send_seq", "recv_seq", "max_frame_size")

    def __init__(self, send_key: bytes, recv_key: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE):
        self._send_mac = _keyed_mac(send_key)
        self._recv_mac = _keyed_mac(recv_key)
        self.send_seq = 0
        self.recv_seq = 0
        self.max_frame_size = max_frame_size

    def seal(self, kind: bytes, payloads: Sequence[bytes] = ()) -> list[bytes]:
        """The next frame of ``kind`` carrying ``payloads``, as ZeroMQ message parts (one)."""
        n = len(payloads)
        head = _FRAME_HEAD.pack(kind, self.send_seq, n)
        self.send_seq += 1
        # n == 1 is the common case (a direct send): no struct format to build for it
        lengths = _LENGTH.pack(len(payloads[0])) if n == 1 else struct.pack(f">{n}I", *map(len, payloads))
        # one join and one MAC update: a batch of many payloads costs one call each, not n
        body = b"".join((head, lengths, *payloads))
        mac = self._send_mac.copy()
        mac.update(body)
        return [body + mac.digest()]

    def open(self, parts: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
        """Check a received frame; return ``(kind, payloads)``.

        Raises :class:`FrameError` (nothing consumed: the next frame may still be good) or
        :class:`SequenceError` (MAC good but frames were lost or replayed: the connection is
        no longer trustworthy).
        """
        if len(parts) != 1:
            raise FrameError(f"frame in {len(parts)} parts, expected 1")
        frame = parts[0]
        size = len(frame)
        if size < MIN_FRAME_SIZE:
            raise FrameError(f"frame of {size} bytes, shorter than a header and a MAC")
        kind, seq, n = _FRAME_HEAD.unpack_from(frame)
        if kind not in FRAME_KINDS:
            raise FrameError(f"unknown frame kind {kind!r}")
        if n > MAX_PAYLOADS:
            raise FrameError(f"frame with {n} payloads exceeds {MAX_PAYLOADS}")
        start, end = _FRAME_HEAD.size + _LENGTH.size * n, size - MAC_SIZE
        if start > end:
            raise FrameError(f"frame of {size} bytes, shorter than its {n} payload lengths")
        if end - start > self.max_frame_size:
            raise FrameError(f"frame of {end - start} bytes exceeds the limit of {self.max_frame_size}")
        lengths = struct.unpack_from(f">{n}I", frame, _FRAME_HEAD.size)
        if sum(lengths) != end - start:
            raise FrameError(f"payload lengths adding up to {sum(lengths)} in a frame of {end - start} "
                             "payload bytes")
        mac = self._recv_mac.copy()
        mac.update(memoryview(frame)[:end])
        if not hmac.compare_digest(mac.digest(), frame[end:]):
            raise FrameError("bad frame MAC")
        if seq != self.recv_seq:
            raise SequenceError(f"frame sequence number {seq}, expected {self.recv_seq}")
        self.recv_seq += 1
        payloads = []
        for length in lengths:
            payloads.append(frame[start:start + length])
            start += length
        return kind, payloads

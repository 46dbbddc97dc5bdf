"""Session frames taken apart and put together by hand, for tests that forge or inspect them.

The layout is the one :mod:`nodes.codec` documents: one ZeroMQ part holding kind (1 byte),
sequence number (8), n (4), n payload lengths (4 each), the payloads, then a 32-byte MAC.
"""

from __future__ import annotations

import struct


def frame_like(kind: bytes, seq: int, payloads: list[bytes], mac: bytes,
               lengths: list[int] | None = None) -> bytes:
    """A frame of that layout made without the key: its MAC (and, if given, its lengths) are as given."""
    lengths = [len(p) for p in payloads] if lengths is None else lengths
    return struct.pack(f">cQI{len(lengths)}I", kind, seq, len(lengths), *lengths) + b"".join(payloads) + mac


def frame_fields(frame: bytes) -> tuple[bytes, int, list[bytes], bytes]:
    """``(kind, sequence number, payloads, MAC)`` of a well-formed frame."""
    kind, seq, n = struct.unpack_from(">cQI", frame)
    lengths = struct.unpack_from(f">{n}I", frame, 13)
    payloads, at = [], 13 + 4 * n
    for length in lengths:
        payloads.append(frame[at:at + length])
        at += length
    return kind, seq, payloads, frame[at:]

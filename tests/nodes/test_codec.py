"""nodes.codec: pickle fast path with cloudpickle fallback, handshake proofs, frame MACs."""

from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nodes
from nodes import Pid, Ref, codec

try:
    from .frames import frame_fields, frame_like
except ImportError:
    from frames import frame_fields, frame_like  # type: ignore[no-redef]


def one_part(kind: bytes, seq: int, payloads: list[bytes], mac: bytes, lengths: list[int] | None = None
             ) -> list[bytes]:
    return [frame_like(kind, seq, payloads, mac, lengths)]

# --------------------------------------------------------------------------- serialization

plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=5) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=30,
)


@given(plain_values)
def test_round_trip_of_plain_data_uses_plain_pickle(value: object) -> None:
    data = codec.dumps(value)
    assert codec.loads(data) == value
    if "__main__" not in repr(value):
        assert data == pickle.dumps(value, protocol=5)  # the fast path, no cloudpickle


def load_in_fresh_interpreter(data: bytes, expr: str) -> str:
    """Unpickle in another Python process (where nothing of this test exists) and eval expr."""
    code = f"import pickle, sys; obj = pickle.loads(sys.stdin.buffer.read()); print({expr})"
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def test_lambda_and_local_class_fall_back_to_cloudpickle() -> None:
    class Local:
        def __init__(self, value: int):
            self.value = value

        def double(self) -> int:
            return self.value * 2

    fn = codec.loads(codec.dumps(lambda x: x + 1))
    assert fn(1) == 2
    obj = codec.loads(codec.dumps(Local(21)))
    assert obj.double() == 42
    assert load_in_fresh_interpreter(codec.dumps(Local(21)), "obj.double()") == "42"


def test_class_from_a_dynamic_module_travels_by_value() -> None:
    module = types.ModuleType("not_importable_anywhere")
    exec("class Point:\n    def __init__(self, x): self.x = x\n    def norm(self): return abs(self.x)\n",
         module.__dict__)
    data = codec.dumps(module.Point(-3))
    assert load_in_fresh_interpreter(data, "obj.norm()") == "3"


def test_class_defined_in_main_travels_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a class typed into a script or the shell looks like: plain pickle *succeeds* here
    # (it stores a reference to __main__.Greeter) but another process has no such thing.
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("class Greeter:\n    def __init__(self, who): self.who = who\n"
         "    def greet(self): return 'hello ' + self.who\n", namespace)
    greeter_class = namespace["Greeter"]
    monkeypatch.setattr(sys.modules["__main__"], "Greeter", greeter_class, raising=False)
    obj = greeter_class("node")  # type: ignore[operator]
    plain = pickle.dumps(obj, protocol=5)
    assert b"__main__" in plain  # the trap
    data = codec.dumps(obj)
    assert data != plain
    assert load_in_fresh_interpreter(data, "obj.greet()") == "hello node"


def test_a_class_coming_back_to_the_process_that_defined_it_is_left_as_it_is() -> None:
    # cloudpickle would reuse the class and overwrite its methods with copies that have their
    # own globals and closure cells: the class would stop writing to the list it closes over.
    seen: list[int] = []

    class Recorder:
        def __init__(self, value: int):
            self.value = value

        def record(self) -> None:
            seen.append(self.value)

        class Inner:  # a nested class is rebuilt by value too
            def hello(self) -> str:
                return "hi"

    record_fn, inner = Recorder.__dict__["record"], Recorder.Inner
    data = codec.dumps((Recorder(1), Recorder, Recorder.Inner))
    obj, cls, inner_back = codec.loads(data)
    assert cls is Recorder and type(obj) is Recorder and inner_back is inner
    assert Recorder.__dict__["record"] is record_fn
    obj.record()
    Recorder(2).record()
    assert seen == [1, 2]
    # another process still rebuilds the class from the bytes
    assert load_in_fresh_interpreter(data, "obj[0].value, obj[1].Inner().hello()") == "1 hi"


def test_two_threads_loading_a_new_class_at_once_both_get_it_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # cloudpickle tracks a class before it fills it in: a second load meanwhile must not take
    # the empty class for one this process already has
    code = ("import cloudpickle, sys\n"
            "class Data:\n    def a(self): return 1\n    def b(self): return 2\n"
            "sys.stdout.buffer.write(cloudpickle.dumps(Data))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    data = out.stdout
    from cloudpickle import cloudpickle as cp

    original = cp._class_setstate
    filling = threading.Event()

    def slow_setstate(obj: object, state: object) -> object:
        filling.set()
        time.sleep(0.2)  # the point: a thread switch in the middle of filling the class in
        return original(obj, state)

    monkeypatch.setattr(cp, "_class_setstate", slow_setstate)
    first: list = []
    loader = threading.Thread(target=lambda: first.append(codec.loads(data)))
    loader.start()
    assert filling.wait(10)
    second = codec.loads(data)
    assert second().a() == 1 and second().b() == 2  # whole now, not only once the first load ends
    loader.join(10)
    assert second is first[0]


def pickled_as_before_refs_were_tuples(value: object, pickler: type[pickle.Pickler]) -> bytes:
    """``value`` pickled with its refs as builds before 112a5ef wrote them: ``Ref(prefix, n)``."""

    class OldRefs(pickler):  # type: ignore[misc, valid-type]
        def reducer_override(self, obj: object) -> object:
            if type(obj) is Ref:
                return (Ref, (obj[0], obj[1]))
            return super().reducer_override(obj) if hasattr(super(), "reducer_override") else NotImplemented

    buf = io.BytesIO()
    OldRefs(buf, protocol=5).dump(value)
    return buf.getvalue()


def test_refs_pickled_by_earlier_builds_still_load() -> None:
    # a log entry or a snapshot written before refs were tuples must still be read back
    ref = nodes.make_ref()
    entry = (3, 7, "command", ((Pid("1@h", 5, 2), ref), "inc", ref))
    old = pickled_as_before_refs_were_tuples(entry, pickle.Pickler)
    with pytest.raises(TypeError):
        pickle.loads(old)
    loaded = codec.loads(old)
    assert loaded == entry and type(loaded[3][2]) is Ref

    class Local:  # defined in a function: travels by value, through cloudpickle
        def __eq__(self, other: object) -> bool:
            return type(other).__name__ == "Local"

    old = pickled_as_before_refs_were_tuples((Local(), ref), cloudpickle.CloudPickler)
    assert b"cloudpickle" in old
    loaded = codec.loads(old)
    assert loaded == (Local(), ref) and type(loaded[1]) is Ref


def test_unpicklable_object_raises_encode_error() -> None:
    with pytest.raises(codec.EncodeError, match="lock"):
        codec.dumps({"lock": threading.Lock()})
    assert issubclass(codec.EncodeError, TypeError)


# --------------------------------------------------------------------------- handshake proofs


def make_transcript(**changes: object) -> codec.Transcript:
    fields: dict[str, object] = dict(initiator="a@h", acceptor="b@h", initiator_creation=1,
                                     acceptor_creation=2, initiator_nonce=b"i" * 32, acceptor_nonce=b"a" * 32)
    fields.update(changes)
    return codec.Transcript(**fields)  # type: ignore[arg-type]


def test_proofs_depend_on_cookie_role_and_every_field() -> None:
    t = make_transcript()
    assert t.initiator_proof(b"c") == make_transcript().initiator_proof(b"c")
    assert t.initiator_proof(b"c") != t.initiator_proof(b"other")
    assert t.initiator_proof(b"c") != t.acceptor_proof(b"c")  # no reflection
    for change in ({"initiator": "x@h"}, {"acceptor": "x@h"}, {"initiator_creation": 9},
                   {"acceptor_creation": 9}, {"initiator_nonce": b"j" * 32}, {"acceptor_nonce": b"b" * 32}):
        assert make_transcript(**change).initiator_proof(b"c") != t.initiator_proof(b"c"), change
    # Length-prefixed fields: moving bytes between names changes the proof.
    assert make_transcript(initiator="a@hb", acceptor="@h").initiator_proof(b"c") != t.initiator_proof(b"c")
    assert codec.verify_proof(t.acceptor_proof(b"c"), t.acceptor_proof(b"c"))
    assert not codec.verify_proof(t.acceptor_proof(b"c"), t.acceptor_proof(b"d"))


def session_pair(cookie: bytes = b"cookie", max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE
                 ) -> tuple[codec.Session, codec.Session]:
    t = make_transcript()
    return (t.session(cookie, initiator=True, max_frame_size=max_frame_size),
            t.session(cookie, initiator=False, max_frame_size=max_frame_size))


def test_handshake_messages_are_bounded_json_objects() -> None:
    assert codec.decode_handshake(codec.encode_handshake(b"h", {"a": 1})) == (b"h", {"a": 1})
    bad = [[b"h"], [b"h", b"{}", b"x"], [b"hh", b"{}"], [b"h", b"not json"], [b"h", b"[1, 2]"],
           [b"h", b"\xff\xfe"], [b"h", b"{" + b" " * codec.MAX_HANDSHAKE_BODY + b"}"]]
    for parts in bad:
        with pytest.raises(codec.FrameError):
            codec.decode_handshake(parts)


# --------------------------------------------------------------------------- sessions


def test_session_round_trip_both_directions() -> None:
    a, b = session_pair()
    for i in range(3):
        kind, payloads = b.open(a.seal(codec.DATA, [codec.dumps(("msg", i)), b"second"]))
        assert kind == codec.DATA and codec.loads(payloads[0]) == ("msg", i) and payloads[1] == b"second"
        assert b.open(a.seal(codec.TICK)) == (codec.TICK, [])
        assert a.open(b.seal(codec.DATA, [b"back"])) == (codec.DATA, [b"back"])


def test_a_frame_is_one_part_laid_out_as_documented() -> None:
    a, b = session_pair()
    parts = a.seal(codec.DATA, [b"payload-one", b"two"])
    assert len(parts) == 1
    assert frame_fields(parts[0])[:3] == (codec.DATA, 0, [b"payload-one", b"two"])
    assert len(frame_fields(parts[0])[3]) == codec.MAC_SIZE
    assert frame_fields(a.seal(codec.TICK)[0])[:3] == (codec.TICK, 1, [])
    assert codec.looks_like_frame(parts) and not codec.looks_like_frame([b"h", b"{}"])


def test_tampering_is_rejected_before_anything_is_used() -> None:
    a, b = session_pair()
    frame = a.seal(codec.DATA, [b"payload-one", b"payload-two"])[0]
    for pos in range(len(frame)):  # every single bit flip of every byte's lowest bit
        tampered = bytearray(frame)
        tampered[pos] ^= 0x01
        with pytest.raises(codec.FrameError):
            b.open([bytes(tampered)])
    # Moving a byte from one payload to the next keeps the concatenation but not the MAC.
    kind, seq, payloads, mac = frame_fields(frame)
    with pytest.raises(codec.FrameError, match="MAC"):
        b.open(one_part(kind, seq, payloads, mac, lengths=[10, 12]))
    # ZeroMQ parts are not a way around it either: the same bytes split in two are refused
    with pytest.raises(codec.FrameError, match="parts"):
        b.open([frame[:20], frame[20:]])
    assert b.open([frame])[1] == [b"payload-one", b"payload-two"]  # the original is still good


def test_replay_reorder_and_reflection_are_rejected() -> None:
    a, b = session_pair()
    first, second = a.seal(codec.DATA, [b"1"]), a.seal(codec.DATA, [b"2"])
    with pytest.raises(codec.SequenceError):
        b.open(second)  # reordered
    b.open(first)
    with pytest.raises(codec.SequenceError):
        b.open(first)  # replayed
    b.open(second)
    with pytest.raises(codec.FrameError, match="MAC"):
        a.open(a.seal(codec.DATA, [b"mine"]))  # reflected back to its sender: other key
    other_a, other_b = session_pair(b"another cookie")
    with pytest.raises(codec.FrameError, match="MAC"):
        b.open(other_a.seal(codec.DATA, [b"x"]))


def test_malformed_frames_are_rejected() -> None:
    a, b = session_pair(max_frame_size=100)
    good = a.seal(codec.DATA, [b"x"])
    _, _, _, mac = frame_fields(good[0])
    cases = {
        "parts": [good[0], b""],
        "shorter than a header": [good[0][:codec.MIN_FRAME_SIZE - 1]],
        "kind": [b"Z" + good[0][1:]],
        "payloads exceeds": one_part(codec.DATA, 0, [], mac, lengths=[0] * (codec.MAX_PAYLOADS + 1)),
        "shorter than its 3 payload lengths": [struct.pack(">cQI", codec.DATA, 0, 3) + mac],
        "exceeds the limit": one_part(codec.DATA, 0, [b"x" * 101], mac),
        "adding up to 2": one_part(codec.DATA, 0, [b"x"], mac, lengths=[2]),
        "MAC": one_part(codec.DATA, 0, [b"y"], mac),
    }
    for match, parts in cases.items():
        with pytest.raises(codec.FrameError, match=match):
            b.open(parts)
    assert b.open(good) == (codec.DATA, [b"x"])


def test_a_malicious_pickle_with_a_bad_mac_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    evil = pickle.dumps(Evil())
    a, b = session_pair()
    kind, seq, _, mac = frame_fields(a.seal(codec.DATA, [b"innocent"])[0])
    with pytest.raises(codec.FrameError, match="MAC"):
        b.open(one_part(kind, seq, [evil], mac))
    assert not marker.exists()


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_random_parts_never_open(parts: list[bytes]) -> None:
    _, b = session_pair()
    with pytest.raises(codec.FrameError):
        b.open(parts)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64), max_size=6), st.sampled_from(sorted(codec.FRAME_KINDS)))
def test_random_frames_of_the_right_layout_never_open(payloads: list[bytes], kind: bytes) -> None:
    _, b = session_pair()
    with pytest.raises(codec.FrameError, match="MAC"):
        b.open(one_part(kind, 0, payloads, bytes(codec.MAC_SIZE)))


def test_term_to_binary_is_the_codec_in_the_public_face() -> None:
    import nodes

    class Local:
        def __init__(self, value: int):
            self.value = value

    term = ("msg", nodes.make_ref(), [1, 2.5, "x"], Local(7))
    data = nodes.term_to_binary(term)
    assert type(data) is bytes
    back = nodes.binary_to_term(memoryview(data))
    assert back[:3] == term[:3] and type(back[3]) is Local and back[3].value == 7
    assert load_in_fresh_interpreter(data, "obj[3].value") == "7"  # the local class went by value
    with pytest.raises(nodes.EncodeError, match="lock"):
        nodes.term_to_binary([threading.Lock()])
    assert nodes.EncodeError is codec.EncodeError
    with pytest.raises(TypeError, match="bytes"):
        nodes.binary_to_term("not bytes")  # type: ignore[arg-type]

"""Sans-I/O tests of the frame codec and message schemas (no sockets, no event loop)."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quic_transport.errors import FrameError, MessageTooLarge
from quic_transport.framing import (
    KIND_DATA,
    KIND_MSG,
    DataPiece,
    FrameDecoder,
    MessageFrame,
    encode_header,
    encode_message_frame,
)
from quic_transport.messages import (
    Auth,
    AuthOk,
    Credit,
    End,
    Err,
    Message,
    Ok,
    Open,
    Request,
    decode_message,
    encode_message,
)

LIMIT = 4096


def dec() -> FrameDecoder:
    return FrameDecoder(max_message=LIMIT, max_data=LIMIT)


def collect(events: list[DataPiece | MessageFrame]) -> list[tuple[str, bytes]]:
    """Merge adjacent data pieces so splitting does not change the result."""
    out: list[tuple[str, bytes]] = []
    for ev in events:
        if isinstance(ev, DataPiece):
            if out and out[-1][0] == "d":
                out[-1] = ("d", out[-1][1] + ev.data)
            else:
                out.append(("d", ev.data))
        else:
            out.append(("m", ev.payload))
    return out


frames = st.lists(
    st.tuples(st.sampled_from([KIND_MSG, KIND_DATA]), st.binary(min_size=1, max_size=300)),
    max_size=8,
)


@given(frames, st.lists(st.integers(min_value=1, max_value=64), max_size=50))
def test_any_split_decodes_the_same(fs: list[tuple[int, bytes]], cuts: list[int]) -> None:
    wire = b"".join(encode_header(k, len(p)) + p for k, p in fs)
    expected: list[tuple[str, bytes]] = []
    for k, p in fs:
        if k == KIND_DATA and expected and expected[-1][0] == "d":
            expected[-1] = ("d", expected[-1][1] + p)
        else:
            expected.append(("d" if k == KIND_DATA else "m", p))
    d = dec()
    events: list[DataPiece | MessageFrame] = []
    pos = 0
    for c in cuts:
        events += d.feed(wire[pos : pos + c])
        pos += c
    events += d.feed(wire[pos:])
    d.finish()
    assert collect(events) == expected
    assert d.buffered == 0


@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(data: bytes) -> None:
    d = dec()
    try:
        d.feed(data)
        d.finish()
    except FrameError:
        pass
    assert d.buffered <= LIMIT + 5


@given(frames, st.data())
def test_truncated_stream_is_detected(fs: list[tuple[int, bytes]], data: st.DataObject) -> None:
    wire = b"".join(encode_header(k, len(p)) + p for k, p in fs)
    if not wire:
        return
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    boundaries = set()
    pos = 0
    for _, p in fs:
        boundaries.add(pos)
        pos += 5 + len(p)
    d = dec()
    d.feed(wire[:cut])
    if cut in boundaries:
        d.finish()
    else:
        with pytest.raises(FrameError, match="truncated"):
            d.finish()


def test_oversized_frame_refused_before_buffering() -> None:
    d = dec()
    with pytest.raises(FrameError, match="exceeds the limit"):
        d.feed(encode_header(KIND_MSG, LIMIT + 1) + b"x" * 10)
    assert d.buffered == 0
    with pytest.raises(FrameError):  # dead after an error
        d.feed(b"")


def test_unknown_kind_and_zero_length() -> None:
    with pytest.raises(FrameError, match="unknown frame kind"):
        dec().feed(b"\x07\x00\x00\x00\x01x")
    with pytest.raises(FrameError, match="zero-length"):
        dec().feed(b"\x01\x00\x00\x00\x00")


def test_data_pieces_are_not_reassembled() -> None:
    d = dec()
    assert d.feed(encode_header(KIND_DATA, 10) + b"abc") == [DataPiece(b"abc")]
    assert d.feed(b"defghij") == [DataPiece(b"defghij")]
    assert d.at_boundary


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
names = st.from_regex(r"\A[A-Za-z0-9_.\-]{1,64}\Z")
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Auth, st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)),
    st.just(AuthOk()),
    st.builds(Request, names, values),
    st.builds(Open, names, values, st.sampled_from(["up", "down"])),
    st.builds(Ok, values),
    st.builds(Err, names, st.text(max_size=100)),
    st.builds(Credit, st.integers(min_value=1, max_value=2**40)),
    st.builds(End, st.integers(min_value=0, max_value=2**40)),
)


@given(messages)
def test_message_round_trip(msg: Message) -> None:
    frame = encode_message(msg, limit=1 << 20)
    (ev,) = dec_big().feed(frame)
    assert isinstance(ev, MessageFrame)
    assert decode_message(ev.payload) == msg


def dec_big() -> FrameDecoder:
    return FrameDecoder(max_message=1 << 20, max_data=1 << 20)


@given(st.binary(max_size=500))
def test_decode_message_random_bytes(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_message(data)


@given(messages, st.data())
def test_decode_message_truncated(msg: Message, data: st.DataObject) -> None:
    payload = encode_message(msg, limit=1 << 20)[5:]
    cut = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    with pytest.raises(FrameError):
        decode_message(payload[:cut])


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([1, 2], "not a CBOR map"),
        ({"t": "nope"}, "unknown"),
        ({"t": "req", "m": "x"}, "wrong set of keys"),
        ({"t": "req", "m": "x", "b": 1, "extra": 2}, "wrong set of keys"),
        ({"t": "req", "m": 5, "b": 1}, "wrong type"),
        ({"t": "req", "m": "bad name!", "b": 1}, "method"),
        ({"t": "credit", "n": 0}, "out of range"),
        ({"t": "credit", "n": True}, "wrong type"),
        ({"t": "end", "n": -1}, "out of range"),
        ({"t": "open", "m": "x", "h": 1, "d": "sideways"}, "direction"),
        ({"t": "auth", "v": 1, "pk": b"x", "sig": b"y"}, "32 bytes"),
        ({"t": "err", "c": "x", "e": "y" * 2000}, "at most"),
        ({"t": "ok", "r": cbor2.CBORTag(999, 1)}, "not allowed"),
        ({"t": "ok", "r": {1.5: 1}}, "map keys"),
    ],
)
def test_schema_violations(obj: object, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_message(cbor2.dumps(obj))


def test_trailing_bytes_refused() -> None:
    with pytest.raises(FrameError, match="trailing"):
        decode_message(cbor2.dumps({"t": "auth-ok"}) + b"\x00")


def test_deep_nesting_refused() -> None:
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(FrameError, match="deeper"):
        decode_message(cbor2.dumps({"t": "ok", "r": deep}))


def test_encode_limits() -> None:
    with pytest.raises(MessageTooLarge):
        encode_message(Ok(b"x" * 5000), limit=4096)
    with pytest.raises(ValueError, match="not allowed"):
        encode_message(Ok({1, 2}), limit=4096)
    assert encode_message_frame(b"ab") == b"\x01\x00\x00\x00\x02ab"

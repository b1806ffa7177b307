"""Stream credit flow control against a fake connection (no sockets, no QUIC)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quic_transport.errors import FrameError, RpcTimeout, StreamClosedError
from quic_transport.framing import KIND_DATA, encode_header
from quic_transport.messages import Credit, End, Ok, encode_message
from quic_transport.streams import ERR_FLOW, INITIAL_CREDIT, SEND_BACKLOG, Stream

WINDOW = 1 << 20


class Pipe:
    """Owner that records what a stream sends; ``peer`` receives it if set."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.resets: list[int] = []
        self.stops: list[int] = []
        self.released = False
        self.peer: Stream | None = None
        self.waiting: list[Stream] = []

    def send_stream_data(self, stream_id: int, data: bytes | memoryview, end: bool = False) -> None:
        data = bytes(data)  # like aioquic: copied at once
        self.sent.append((data, end))
        if self.peer is not None:
            self.peer.on_data(data, end)

    def reset_stream(self, stream_id: int, code: int) -> None:
        self.resets.append(code)

    def stop_stream(self, stream_id: int, code: int) -> None:
        self.stops.append(code)

    def stream_released(self, stream_id: int) -> None:
        self.released = True

    budget = 1 << 40
    buffered = 0

    def credit_left(self) -> int:
        return self.budget - self.buffered

    def credit_delta(self, stream: Stream, delta: int) -> None:
        self.buffered += delta

    def starving(self, stream: Stream) -> None:
        pass

    def add_receiver(self, stream: Stream) -> None:
        pass

    def misbehaved(self, reason: str) -> None:
        self.misbehaving = reason

    def fair_share(self) -> int:
        return self.budget

    backlog = 0  # bytes "handed to QUIC and not yet sent"

    def unsent(self, stream_id: int) -> int:
        return self.backlog

    def backlogged(self, stream: Stream) -> None:
        self.waiting.append(stream)


def pair() -> tuple[Stream, Stream, Pipe, Pipe]:
    pa, pb = Pipe(), Pipe()
    a = Stream(pa, 0, max_message=4096, max_data_frame=1 << 20, window=WINDOW)
    b = Stream(pb, 0, max_message=4096, max_data_frame=1 << 20, window=WINDOW)
    pa.peer, pb.peer = b, a
    return a, b, pa, pb


async def test_sender_blocks_without_credit_and_resumes() -> None:
    a, b, _, _ = pair()
    data = b"x" * (INITIAL_CREDIT + 1000)
    send = asyncio.ensure_future(a.send_data(data, 5.0))
    await asyncio.sleep(0.01)
    assert not send.done() and a.bytes_sent == INITIAL_CREDIT
    assert b.buffered == INITIAL_CREDIT
    b.open_window()  # receiver grants its window
    await asyncio.wait_for(send, 1)
    assert a.bytes_sent == len(data)


async def test_receiver_memory_bounded_by_window() -> None:
    a, b, _, _ = pair()
    b.open_window()
    send = asyncio.ensure_future(a.send_data(b"y" * (5 * WINDOW), 5.0))
    await asyncio.sleep(0.01)
    assert b.buffered == WINDOW  # a fast sender cannot push more than the window
    got = 0
    while got < 5 * WINDOW:
        item = await b.next_item(1.0)
        assert isinstance(item, bytes)
        got += len(item)
        assert b.buffered <= WINDOW
    await asyncio.wait_for(send, 1)


async def test_sender_timeout_without_credit() -> None:
    a, _, _, _ = pair()
    with pytest.raises(RpcTimeout):
        await a.send_data(b"z" * (INITIAL_CREDIT + 1), 0.05)


def test_data_beyond_credit_resets_stream() -> None:
    p = Pipe()
    s = Stream(p, 4, max_message=4096, max_data_frame=1 << 20, window=WINDOW)
    s.on_data(encode_header(KIND_DATA, INITIAL_CREDIT) + bytes(INITIAL_CREDIT), False)
    assert s.failed is None
    s.on_data(encode_header(KIND_DATA, 1) + b"!", False)
    assert isinstance(s.failed, FrameError)
    assert p.resets == [ERR_FLOW] and p.stops == [ERR_FLOW]


async def test_messages_keep_order_and_credit_is_consumed_silently() -> None:
    p = Pipe()
    s = Stream(p, 4, max_message=4096, max_data_frame=1 << 20, window=WINDOW)
    wire = (
        encode_message(Credit(10), limit=4096)
        + encode_header(KIND_DATA, 3)
        + b"abc"
        + encode_message(End(3), limit=4096)
    )
    s.on_data(wire, True)
    assert await s.next_item(1) == b"abc"
    assert await s.next_item(1) == End(3)
    assert await s.next_item(1) is None


async def test_garbage_aborts_and_wakes_reader() -> None:
    p = Pipe()
    s = Stream(p, 4, max_message=4096, max_data_frame=1 << 20, window=WINDOW)
    reader = asyncio.ensure_future(s.next_item(5))
    await asyncio.sleep(0)
    s.on_data(b"\x09garbage", False)
    with pytest.raises(FrameError):
        await reader
    assert p.resets and p.stops


async def test_reset_fails_waiters_and_release_cleans_up() -> None:
    p = Pipe()
    s = Stream(p, 4, max_message=4096, max_data_frame=1 << 20, window=WINDOW)
    reader = asyncio.ensure_future(s.next_message(5))
    await asyncio.sleep(0)
    s.on_reset(7)
    with pytest.raises(StreamClosedError):
        await reader
    s.release()
    assert p.released and p.resets  # our sending side was reset too


def test_send_after_finish_refused() -> None:
    p = Pipe()
    s = Stream(p, 4, max_message=4096, max_data_frame=1 << 20, window=WINDOW)
    s.send_message(Ok(1), end=True)
    with pytest.raises(StreamClosedError):
        s.send_message(Ok(2))


def test_message_flood_on_one_stream_is_refused() -> None:
    p = Pipe()
    s = Stream(p, 4, max_message=4096, max_data_frame=1 << 20, window=WINDOW)
    one = encode_message(Ok(b"x" * 1000), limit=4096)
    s.on_data(one * 4, False)
    assert s.failed is None
    s.on_data(one, False)
    assert isinstance(s.failed, FrameError) and p.resets


@settings(max_examples=40)
@given(
    st.lists(st.integers(min_value=1, max_value=300_000), min_size=1, max_size=12),
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=30),
    st.sampled_from([1 << 18, 1 << 19, 1 << 20]),
)
def test_credit_invariants_under_random_schedules(
    chunks: list[int], pauses: list[int], window: int
) -> None:
    """Whatever the chunk sizes and reader pauses: bytes arrive in order, exactly once,
    and the receiver never holds more than its window."""

    async def run() -> None:
        pa, pb = Pipe(), Pipe()
        a = Stream(pa, 0, max_message=4096, max_data_frame=1 << 20, window=window)
        b = Stream(pb, 0, max_message=4096, max_data_frame=1 << 20, window=window)
        pa.peer, pb.peer = b, a
        b.open_window()
        payload = b"".join(bytes([i % 251]) * n for i, n in enumerate(chunks))

        async def send() -> None:
            pos = 0
            for n in chunks:
                await a.send_data(payload[pos : pos + n], 5.0)
                pos += n

        sender = asyncio.ensure_future(send())
        got = bytearray()
        i = 0
        while len(got) < len(payload):
            for _ in range(pauses[i % len(pauses)]):
                await asyncio.sleep(0)
            i += 1
            assert b.buffered <= window
            item = await b.next_item(5.0)
            assert isinstance(item, bytes)
            got += item
        await sender
        assert bytes(got) == payload and b.failed is None and a.failed is None

    asyncio.run(run())


async def test_sender_waits_while_its_backlog_is_unsent() -> None:
    """Bytes handed to QUIC but not yet sent stay below SEND_BACKLOG (plus one frame):
    a slow link holds the caller back instead of aioquic's buffer growing."""
    a, b, pa, _ = pair()
    pa.backlog = SEND_BACKLOG
    send = asyncio.ensure_future(a.send_data(b"x" * 1000, 5.0))
    await asyncio.sleep(0.01)
    assert not send.done() and a.bytes_sent == 0 and pa.waiting == [a]
    pa.backlog = SEND_BACKLOG - 1  # the connection sent some
    a.wake()
    await asyncio.wait_for(send, 1.0)
    assert a.bytes_sent == 1000 and b.buffered == 1000


async def test_a_backlog_that_never_drains_is_no_progress() -> None:
    a, _, pa, _ = pair()
    pa.backlog = 10 * SEND_BACKLOG
    with pytest.raises(RpcTimeout, match="no progress"):
        await a.send_data(b"x" * 10, 0.05)

"""The reference reader over a source with ``readv`` (a ``RangesSource``): the same
shares regenerated and the same reports, every byte flip still caught, in far fewer
calls, and with an executor the k shares and the proof of a segment read at once."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

import p2pstore.immutable.reader as reader
from p2pstore.immutable import (
    EncodedSegment,
    EncodingParams,
    MemoryShares,
    ReadCap,
    ShareTrailer,
    check_shares,
    encode_bytes,
    regenerate_shares,
)
from p2pstore.immutable.errors import NotEnoughSharesError

P = EncodingParams.create(3, 10, 4096)
T = TypeVar("T")


class Ranged(MemoryShares):
    """In-memory shares with ``readv``, counting the calls of each kind."""

    def __init__(self, shares: dict[int, bytes], delay: float = 0.0) -> None:
        super().__init__(shares)
        self.calls: Counter[str] = Counter()
        self.delay = delay
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.reading = self.most_reading = 0  # ``read`` calls alone (the headers)

    def _enter(self, kind: str) -> None:
        with self.lock:
            self.calls[kind] += 1
            self.now += 1
            self.most = max(self.most, self.now)
            if kind == "read":
                self.reading += 1
                self.most_reading = max(self.most_reading, self.reading)

    def _leave(self, kind: str) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
            self.reading -= kind == "read"

    def read(self, share_number: int, offset: int, length: int) -> bytes:
        self._enter("read")
        try:
            return super().read(share_number, offset, length)
        finally:
            self._leave("read")

    def readv(self, share_number: int, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self._enter("readv")
        try:
            return [super(Ranged, self).read(share_number, o, n) for o, n in ranges]
        finally:
            self._leave("readv")


def encoded(size: int) -> tuple[ReadCap, list[bytes]]:
    cap, shares = encode_bytes(os.urandom(size), P)
    assert isinstance(cap, ReadCap)
    return cap, shares


def regenerated(cap: ReadCap, source: MemoryShares, have: list[int], **kw: object) -> list[bytes]:
    return assembled(regenerate_shares(cap.verify_cap(), source, have, **kw))  # type: ignore[arg-type]


def assembled(items: Iterable[EncodedSegment | tuple[ShareTrailer, ...]]) -> list[bytes]:
    """The N whole shares from ``regenerate_shares``' segments and trailers."""
    out = [bytearray(72) for _ in range(P.n)]
    for item in items:
        if isinstance(item, EncodedSegment):
            for i, b in enumerate(item.blocks):
                out[i] += b
        else:
            for t in item:
                out[t.share_number] += t.trailer
                out[t.share_number][:72] = t.header
    return [bytes(b) for b in out]


def test_regenerating_reads_a_segment_in_one_call_per_share() -> None:
    cap, shares = encoded(60_000)  # 15 segments, 4-hash uncle chains
    have = [2, 5, 9]
    src = Ranged({i: shares[i] for i in have})
    assert regenerated(cap, src, have) == shares
    segments = 15
    # per share: its header, then its other opening pieces; per segment: the
    # ciphertext proof, then each share's block with its uncles
    assert src.calls == {"read": 3, "readv": 3 + segments * (1 + 3)}
    plain = MemoryShares({i: shares[i] for i in have})
    assert regenerated(cap, plain, have) == shares  # a source without readv: the same


def test_with_an_executor_a_segment_s_reads_run_at_once() -> None:
    cap, shares = encoded(40_000)
    have = [0, 4, 7, 8]
    src = Ranged({i: shares[i] for i in have}, delay=0.002)
    with ThreadPoolExecutor(P.k + 1) as pool:
        assert regenerated(cap, src, have, executor=pool) == shares
    assert src.most == P.k + 1  # three blocks and the proof
    assert src.most_reading >= 2  # the shares' headers at once (one at a time before)


def test_checking_whole_shares_reads_runs_of_blocks() -> None:
    cap, shares = encoded(300_000)  # 74 segments of 1,366-byte blocks
    bad = list(shares)
    flipped = bytearray(bad[6])
    flipped[72 + 1366 * 40 + 7] ^= 1  # segment 40's block of share 6
    bad[6] = bytes(flipped)
    plain = check_shares(cap.verify_cap(), MemoryShares(dict(enumerate(bad))), range(P.n))
    src = Ranged(dict(enumerate(bad)))
    with ThreadPoolExecutor(4) as pool:
        ranged = check_shares(cap.verify_cap(), src, range(P.n), executor=pool)
    assert ranged == plain
    assert plain[6] == "block fails its hash check"
    assert all(plain[i] is None for i in range(P.n) if i != 6)
    assert src.calls["readv"] < 3 * P.n  # opening pieces and the blocks, per share


def test_the_next_segment_is_read_while_the_caller_holds_this_one() -> None:
    """With an executor, the next READ_AHEAD segments' reads run while the caller
    works on segment j (repair sends it meanwhile): the caller holds the first
    segment and, without asking for more, sees the next four segments' proofs and
    blocks read, and no more."""
    cap, shares = encoded(40_000)  # 10 segments
    have = [1, 3, 6]
    src = Ranged({i: shares[i] for i in have})
    opening, per_segment = 3, 1 + 3  # readv calls: opening pieces; a proof and 3 blocks
    with ThreadPoolExecutor(P.k + 1) as pool:
        gen = regenerate_shares(cap.verify_cap(), src, have, executor=pool)
        first = next(gen)
        assert isinstance(first, EncodedSegment)
        deadline = time.monotonic() + 10
        ahead = opening + (1 + reader.READ_AHEAD) * per_segment
        while src.calls["readv"] < ahead and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
        assert src.calls["readv"] == ahead  # and not further ahead
        rest = list(gen)
    assert assembled([first, *rest]) == shares


def _damaged(shares: list[bytes], damage: dict[int, int]) -> dict[int, bytes]:
    """Copies of ``shares`` with one byte flipped in the block of segment
    ``damage[i]`` of each share i named (a 40,000-byte file's 1,366-byte blocks)."""
    out = {i: bytearray(b) for i, b in enumerate(shares)}
    for i, j in damage.items():
        out[i][72 + 1366 * j + 5] ^= 1
    return {i: bytes(b) for i, b in out.items()}


class SlowFirst(Ranged):
    """Segment 0's block reads take 0.3 s: the segments read ahead check theirs first."""

    def readv(self, share_number: int, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if ranges[0][0] == 72:
            time.sleep(0.3)
        return super().readv(share_number, ranges)


def test_a_block_bad_ahead_does_not_cost_its_share_the_segments_before() -> None:
    """Five shares each have one damaged block, at segments 0, 1, 1, 0 and 6; every
    segment still has three good blocks among the seven shares. Read in order, and
    with segment 0 slow while the read-ahead finds the damage further on, the
    regeneration succeeds and gives the original shares: a share is passed over only
    at the segment where its block failed (it was dropped for every segment, and
    whether a segment could be rebuilt depended on the order reads finished in)."""
    cap, shares = encoded(40_000)
    have = [0, 1, 2, 3, 4, 5, 6]
    data = _damaged(shares, {1: 0, 2: 1, 3: 1, 4: 0, 5: 6})
    assert regenerated(cap, SlowFirst({i: data[i] for i in have}), have) == shares
    with ThreadPoolExecutor(P.k + 1) as pool:
        src = SlowFirst({i: data[i] for i in have})
        assert regenerated(cap, src, have, executor=pool) == shares


def test_a_segment_without_k_good_blocks_fails_where_it_comes() -> None:
    """Two of three shares are bad in segment 3: the regeneration yields segments
    0-2 (those shares are good there) and then fails, never yielding the trailers."""
    cap, shares = encoded(40_000)
    have = [0, 2, 5]
    data = _damaged(shares, {0: 3, 2: 3})
    got: list[object] = []
    with ThreadPoolExecutor(P.k + 1) as pool, pytest.raises(NotEnoughSharesError) as failed:
        src = Ranged({i: data[i] for i in have})
        for item in regenerate_shares(cap.verify_cap(), src, have, executor=pool):
            got.append(item)
    assert failed.value.segment == 3
    assert len(got) == 3 and all(isinstance(x, EncodedSegment) for x in got)


def test_stopping_early_leaves_no_read_ahead_waiting() -> None:
    """A caller that stops after one segment (a repair that failed elsewhere): the
    read-ahead ends with the fetch it had begun, and nothing reads after that."""
    cap, shares = encoded(40_000)
    have = [0, 1, 2]
    src = Ranged({i: shares[i] for i in have}, delay=0.01)
    before = set(_read_ahead_threads())
    with ThreadPoolExecutor(P.k + 1) as pool:
        gen = regenerate_shares(cap.verify_cap(), src, have, executor=pool)
        next(gen)
        gen.close()
        deadline = time.monotonic() + 10
        while set(_read_ahead_threads()) - before and time.monotonic() < deadline:
            time.sleep(0.01)
        done = src.calls["readv"]
        time.sleep(0.1)
    assert src.calls["readv"] == done <= 3 + (1 + reader.READ_AHEAD) * (1 + 3)
    assert not set(_read_ahead_threads()) - before


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("p2ps-read-ahead")]


class _Counting(ThreadPoolExecutor):
    """A pool that says when ``expected`` jobs have been handed to it."""

    def __init__(self, workers: int, expected: int) -> None:
        super().__init__(workers)
        self.expected = expected
        self.submitted = 0
        self.all_in = threading.Event()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut = super().submit(fn, *args, **kwargs)
        self.submitted += 1
        if self.submitted >= self.expected:
            self.all_in.set()
        return fut


def test_a_fetch_whose_pool_is_shut_down_ends() -> None:
    """The repair's pool shut down with its queue cancelled (a repair that failed)
    while a segment's reads wait in that queue: the fetch ends at once. It used to
    wait for ever for its cancelled proof read, and the process could not exit."""
    cap, shares = encoded(40_000)
    have = [0, 1, 2]
    src = Ranged({i: shares[i] for i in have})
    s = reader.open_shares(cap.verify_cap(), src, have)
    gate = threading.Event()
    pool = _Counting(1, expected=1 + 1 + P.k)  # the gate, the proof, k blocks
    pool.submit(gate.wait)  # the one worker is busy: the fetch's reads queue
    outcome: list[BaseException | None] = []

    def fetch() -> None:
        try:
            reader._fetch_segment(s, 0, pool)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    assert pool.all_in.wait(10)
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    t.join(10)
    assert not t.is_alive(), "the fetch still waits for its cancelled proof read"
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledError)

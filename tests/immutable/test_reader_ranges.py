"""The reference reader over a source with ``readv`` (a ``RangesSource``): the same
shares regenerated and the same reports, every byte flip still caught, in far fewer
calls, and with an executor the k shares and the proof of a segment read at once."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from p2pstore.immutable import (
    EncodedSegment,
    EncodingParams,
    MemoryShares,
    ReadCap,
    check_shares,
    encode_bytes,
    regenerate_shares,
)

P = EncodingParams.create(3, 10, 4096)


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
    out = [bytearray(72) for _ in range(P.n)]
    for item in regenerate_shares(cap.verify_cap(), source, have, **kw):  # type: ignore[arg-type]
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

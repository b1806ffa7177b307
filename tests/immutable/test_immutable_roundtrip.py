"""Round-trip properties of the whole pipeline: any k of N shares reproduce the
plaintext, fewer fail clearly, range reads, convergence, streaming, repair."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.immutable import (
    LITERAL_MAX,
    EncodedSegment,
    Encoder,
    EncodingParams,
    LiteralCap,
    MemoryShares,
    NotEnoughSharesError,
    ReadCap,
    UsageError,
    check_shares,
    encode_bytes,
    read_bytes,
    read_ciphertext,
    read_plaintext,
    regenerate_shares,
)
from p2pstore.immutable.crypto import ConvergenceHasher, convergent_key, keystream_cipher

SECRET = bytes(range(32))


@st.composite
def cases(draw: st.DrawFn) -> tuple[EncodingParams, int]:
    k = draw(st.integers(1, 7))
    n = draw(st.integers(k, 12))
    seg = draw(st.integers(1, 200))
    p = EncodingParams.create(k, n, seg)
    s = p.segment_size
    size = draw(
        st.sampled_from([0, 1, LITERAL_MAX - 1, LITERAL_MAX, LITERAL_MAX + 1, s, s + 1, 2 * s - 1])
        | st.integers(0, 25 * s)
    )
    return p, max(size, 0)


@given(cases(), st.randoms(use_true_random=False))
@settings(max_examples=60)
def test_any_k_shares_reproduce_plaintext(
    case: tuple[EncodingParams, int], rnd: random.Random
) -> None:
    p, size = case
    data = rnd.randbytes(size)
    cap, shares = encode_bytes(data, p, convergence_secret=SECRET)
    if size <= LITERAL_MAX:
        assert isinstance(cap, LiteralCap) and shares == []
        assert read_bytes(cap, {}) == data
        return
    assert isinstance(cap, ReadCap) and len(shares) == p.n
    chosen = rnd.sample(range(p.n), p.k)
    assert read_bytes(cap, {i: shares[i] for i in chosen}) == data
    if p.k > 1:
        fewer = rnd.sample(range(p.n), p.k - 1)
        with pytest.raises(NotEnoughSharesError, match=f"need {p.k} good shares, have {p.k - 1}"):
            read_bytes(cap, {i: shares[i] for i in fewer})
    off = rnd.randrange(0, size + 2)
    length = rnd.randrange(0, size + 2)
    got = read_bytes(cap, {i: shares[i] for i in chosen}, offset=off, length=length)
    assert got == data[off : off + length]


def test_every_k_subset_small() -> None:
    p = EncodingParams.create(3, 6, 30)
    data = os.urandom(200)
    cap, shares = encode_bytes(data, p)
    for subset in itertools.combinations(range(6), 3):
        assert read_bytes(cap, {i: shares[i] for i in subset}) == data


def test_extreme_parameters() -> None:
    data = os.urandom(3000)
    for k, n in [(1, 1), (1, 256), (256, 256), (255, 256)]:
        cap, shares = encode_bytes(data, EncodingParams.create(k, n, 1024))
        pick = random.sample(range(n), k)
        assert read_bytes(cap, {i: shares[i] for i in pick}) == data


def test_convergence() -> None:
    p = EncodingParams.create(3, 10, 64)
    data = os.urandom(500)
    a, sa = encode_bytes(data, p, convergence_secret=SECRET)
    b, sb = encode_bytes(data, p, convergence_secret=SECRET)
    assert a == b and sa == sb
    c, _ = encode_bytes(data, p, convergence_secret=bytes(32))
    assert isinstance(a, ReadCap) and isinstance(c, ReadCap)
    assert a.key != c.key and a.storage_index != c.storage_index
    d, _ = encode_bytes(data, EncodingParams.create(3, 9, 64), convergence_secret=SECRET)
    assert isinstance(d, ReadCap) and d.key != a.key
    r1, _ = encode_bytes(data, p)
    r2, _ = encode_bytes(data, p)
    assert isinstance(r1, ReadCap) and isinstance(r2, ReadCap) and r1.key != r2.key


def test_ciphertext_is_aes_ctr_of_plaintext() -> None:
    p = EncodingParams.create(2, 3, 64)
    data = os.urandom(300)
    cap, shares = encode_bytes(data, p)
    assert isinstance(cap, ReadCap)
    ct = b"".join(
        c
        for _, c in read_ciphertext(
            cap.verify_cap(), MemoryShares(dict(enumerate(shares))), range(3)
        )
    )
    assert ct == keystream_cipher(cap.key, 0).update(data)
    assert data[:16] not in b"".join(shares)


@given(st.lists(st.integers(0, 300), max_size=12), st.integers(1, 120))
@settings(max_examples=30)
def test_streaming_chunking_does_not_change_output(chunks: list[int], seg: int) -> None:
    p = EncodingParams.create(2, 4, seg)
    data = os.urandom(sum(chunks))
    key = bytes(32)
    cap, shares = encode_bytes(data, p, key=key)
    enc = Encoder(key, p)
    seen: list[EncodedSegment] = []
    pos = 0
    for c in chunks:
        seen += enc.feed(data[pos : pos + c])
        pos += c
        # nothing is emitted while the file could still be a literal
        if pos <= LITERAL_MAX:
            assert not seen
        else:  # segments emitted during feed are full; less than one segment is buffered
            assert 0 <= pos - len(seen) * p.segment_size < p.segment_size
    res = enc.finish()
    assert res.cap == cap
    seen += res.segments
    assert [s.index for s in seen] == list(range(len(seen)))
    for s in seen:
        for i in range(p.n):
            off = s.share_offset
            assert shares[i][off : off + len(s.blocks[i])] == s.blocks[i]
    for t in res.trailers:
        assert shares[t.share_number][: len(t.header)] == t.header
        assert shares[t.share_number][t.trailer_offset :] == t.trailer
        assert len(shares[t.share_number]) == t.share_length


def test_encoder_misuse() -> None:
    p = EncodingParams.create(2, 4, 64)
    enc = Encoder.convergent(SECRET, [b"x" * 100], p)
    enc.feed(b"x" * 99)
    with pytest.raises(UsageError, match="computed over 100 bytes but 99"):
        enc.finish()
    with pytest.raises(UsageError, match="feed"):
        enc.feed(b"x")


@pytest.mark.parametrize("size", [40, 1000])  # a literal file and a coded one
def test_encoder_recheck_refuses_a_second_pass_with_other_bytes(size: int) -> None:
    p = EncodingParams.create(2, 4, 64)
    first, other = os.urandom(size), os.urandom(size)
    key = convergent_key(SECRET, p, first)
    same = Encoder(key, p, expected_size=size, recheck=ConvergenceHasher(SECRET, p))
    same.feed(first[:17])
    same.feed(first[17:])
    assert same.finish().cap == encode_bytes(first, p, convergence_secret=SECRET)[0]
    changed = Encoder(key, p, expected_size=size, recheck=ConvergenceHasher(SECRET, p))
    changed.feed(other)
    with pytest.raises(UsageError, match="changed while it was uploaded"):
        changed.finish()


def test_repair_regenerates_identical_shares() -> None:
    p = EncodingParams.create(3, 7, 90)
    data = os.urandom(1000)
    cap, shares = encode_bytes(data, p)
    assert isinstance(cap, ReadCap)
    vc = cap.verify_cap()
    have = {i: shares[i] for i in (1, 4, 6)}
    rebuilt = [bytearray(72) for _ in range(p.n)]
    for item in regenerate_shares(vc, MemoryShares(have), have):
        if isinstance(item, EncodedSegment):
            for i, b in enumerate(item.blocks):
                rebuilt[i] += b
        else:
            for t in item:
                rebuilt[t.share_number] += t.trailer
                rebuilt[t.share_number][:72] = t.header
    assert [bytes(b) for b in rebuilt] == shares
    report = check_shares(vc, MemoryShares(dict(enumerate(shares))), range(p.n))
    assert report == dict.fromkeys(range(p.n))


@pytest.mark.slow
def test_large_file_default_params_all_subsets() -> None:
    """20 MiB at the defaults (20 segments): every 3-of-10 subset for the first and
    last segments' ranges, and a full read from check shares only."""
    data = os.urandom(20 << 20)
    cap, shares = encode_bytes(data, convergence_secret=SECRET)
    assert isinstance(cap, ReadCap)
    assert read_bytes(cap, {i: shares[i] for i in (7, 8, 9)}) == data
    s = EncodingParams().segment_size
    for subset in itertools.combinations(range(10), 3):
        got = read_bytes(cap, {i: shares[i] for i in subset}, offset=s - 10, length=20)
        assert got == data[s - 10 : s + 10]
    assert check_shares(cap.verify_cap(), MemoryShares(dict(enumerate(shares))), range(10)) == (
        dict.fromkeys(range(10))
    )


def test_range_read_touches_only_covering_segments() -> None:
    p = EncodingParams.create(2, 3, 100)
    data = os.urandom(1000)  # 10 segments
    cap, shares = encode_bytes(data, p)
    assert isinstance(cap, ReadCap)
    reads: list[tuple[int, int, int]] = []

    class Counting(MemoryShares):
        def read(self, share_number: int, offset: int, length: int) -> bytes:
            reads.append((share_number, offset, length))
            return super().read(share_number, offset, length)

    src = Counting(dict(enumerate(shares)))
    got = b"".join(read_plaintext(cap, src, range(3), offset=250, length=100))
    assert got == data[250:350]
    block_reads = {(off - 72) // 50 for _, off, n in reads if n == 50 and 72 <= off < 572}
    assert block_reads == {2, 3}


@pytest.mark.parametrize(("k", "n"), [(3, 10), (2, 3), (1, 4), (4, 4)])
def test_worker_thread_gives_identical_output(k: int, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    p = EncodingParams.create(k, n, 999)
    data = os.urandom(5000)
    key = bytes(range(32))
    serial = encode_bytes(data, p, key=key)
    with ThreadPoolExecutor(2) as pool:
        threaded = encode_bytes(data, p, key=key, executor=pool)
        assert threaded == serial
        cap = serial[0]
        assert isinstance(cap, ReadCap)
        shares = dict(enumerate(serial[1]))
        src = MemoryShares(shares)
        got = b"".join(read_plaintext(cap, src, range(n), executor=pool))
        assert got == data


def test_decoder_orders_segments_and_bounds_pending() -> None:
    from p2pstore.immutable import Decoder, FileVerifier, open_shares
    from p2pstore.immutable.reader import _fetch_segment

    p = EncodingParams.create(2, 3, 10)
    data = os.urandom(100)  # 10 segments
    cap, shares = encode_bytes(data, p)
    assert isinstance(cap, ReadCap)
    s = open_shares(cap, MemoryShares(dict(enumerate(shares))), range(3))
    dec = Decoder(cap, s.verifier, offset=15, length=50, max_pending=3)
    assert list(dec.segments) == [1, 2, 3, 4, 5, 6]
    fetched = {j: _fetch_segment(s, j, None) for j in dec.segments}
    assert dec.add_segment(*fetched[3]) == []
    assert dec.add_segment(*fetched[2]) == []
    with pytest.raises(UsageError, match="too far ahead"):
        dec.add_segment(*fetched[4])
    with pytest.raises(UsageError, match="not wanted"):
        dec.add_segment(*fetched[3])
    out = dec.add_segment(*fetched[1])
    assert b"".join(out) == data[15:40]
    for j in (4, 5, 6):
        out += dec.add_segment(*fetched[j])
    assert dec.done and b"".join(out) == data[15:65]
    other, _ = encode_bytes(os.urandom(100), p)
    assert isinstance(other, ReadCap)
    with pytest.raises(UsageError, match="another cap"):
        Decoder(other, s.verifier)
    with pytest.raises(UsageError, match="accept_share_root"):
        FileVerifier(cap).verify_block(0, 0, b"", b"")

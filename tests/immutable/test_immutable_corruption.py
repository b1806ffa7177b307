"""Tamper detection: every single-byte flip of any share, extension block or cap is
detected; reads still succeed from the remaining good shares."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import p2pstore.immutable.encoder as encoder_mod
import p2pstore.immutable.reader as reader_mod
from p2pstore.immutable import (
    HEADER_SIZE,
    BadShareError,
    CapError,
    EncodingParams,
    FileVerifier,
    ImmutableError,
    InconsistentEncodingError,
    MemoryShares,
    NotEnoughSharesError,
    ReadCap,
    ShareLayout,
    check_shares,
    encode_bytes,
    parse_cap,
    read_bytes,
)


def _flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    b = bytearray(data)
    b[pos] ^= mask
    return bytes(b)


def _encode(size: int, p: EncodingParams) -> tuple[bytes, ReadCap, list[bytes]]:
    data = os.urandom(size)
    cap, shares = encode_bytes(data, p)
    assert isinstance(cap, ReadCap)
    return data, cap, shares


def _flips(shares: list[bytes]) -> Iterator[tuple[int, int]]:
    for i, s in enumerate(shares):
        for pos in range(len(s)):
            yield i, pos


def test_every_byte_of_every_share_is_detected() -> None:
    p = EncodingParams.create(2, 4, 30)
    data, cap, shares = _encode(100, p)  # 4 segments, a padded 4-slot tree
    vc = cap.verify_cap()
    for i, pos in _flips(shares):
        bad = list(shares)
        bad[i] = _flip(shares[i], pos)
        report = check_shares(vc, MemoryShares(dict(enumerate(bad))), range(p.n))
        assert report[i] is not None, (i, pos)
        assert all(report[x] is None for x in range(p.n) if x != i), (i, pos, report)
        # the share is dropped and the file still reads, with the bad share first in line
        others = [x for x in range(p.n) if x != i][: p.k]
        assert read_bytes(cap, {x: bad[x] for x in [i, *others]}) == data


def test_bad_block_names_share_and_segment() -> None:
    p = EncodingParams.create(3, 5, 60)
    _, cap, shares = _encode(500, p)
    v = FileVerifier(cap)
    for i, share in enumerate(shares):
        v.accept_extension(i, share[v.locate_extension(i, share[:HEADER_SIZE])[0] :])
        lay = v.check_header(i, share[:HEADER_SIZE])
        root, chain = (share[o : o + n] for o, n in lay.share_root_ranges())
        v.accept_share_root(i, root, chain)
        for j in range(lay.num_segments):
            off, n = lay.block_range(j)
            uncles = b"".join(share[o : o + m] for o, m in lay.block_uncle_ranges(j))
            v.verify_block(i, j, share[off : off + n], uncles)
            for pos in (0, n - 1, random.randrange(n)):
                with pytest.raises(BadShareError) as ei:
                    v.verify_block(i, j, _flip(share[off : off + n], pos), uncles)
                assert (ei.value.share_number, ei.value.segment) == (i, j)


@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(56, 2000),
    st.integers(1, 300),
    st.randoms(use_true_random=False),
)
@settings(max_examples=40)
def test_random_flips_detected_and_tolerated(
    k: int, extra: int, size: int, seg: int, rnd: random.Random
) -> None:
    p = EncodingParams.create(k, k + extra, seg)
    data, cap, shares = _encode(size, p)
    i = rnd.randrange(p.n)
    pos = rnd.randrange(len(shares[i]))
    bad = list(shares)
    bad[i] = _flip(shares[i], pos, 1 << rnd.randrange(8))
    saved = reader_mod._CHECK_CHUNK
    reader_mod._CHECK_CHUNK = rnd.choice([1, 2, 3, 4096])  # exercise chunked tree checks
    try:
        report = check_shares(cap.verify_cap(), MemoryShares(dict(enumerate(bad))), range(p.n))
    finally:
        reader_mod._CHECK_CHUNK = saved
    assert [x for x, r in report.items() if r is not None] == [i]
    assert read_bytes(cap, dict(enumerate(bad))) == data
    # only k shares including the bad one: reading fails with a clear error, never bad data
    pick = [i, *[x for x in range(p.n) if x != i][: p.k - 1]]
    try:
        got = read_bytes(cap, {x: bad[x] for x in pick})
    except NotEnoughSharesError as e:
        assert i in e.bad
    else:  # the flipped byte was one this read did not need (e.g. an unused tree node)
        assert got == data


def test_extension_block_flips() -> None:
    p = EncodingParams.create(3, 10, 100)
    _data, cap, shares = _encode(1000, p)
    lay = ShareLayout.for_share(_geometry(cap, shares), 0)
    off, n = lay.ext_range()
    for pos in range(off, off + n):
        bad = list(shares)
        for i in range(p.n):  # every copy flipped the same way: nothing can read
            bad[i] = _flip(shares[i], pos)
        with pytest.raises(NotEnoughSharesError, match="need 3 good shares, have 0"):
            read_bytes(cap, dict(enumerate(bad)))
        bad[4] = shares[4]  # one good copy is enough for the extension; others are bad shares
        with pytest.raises(NotEnoughSharesError, match="have 1"):
            read_bytes(cap, dict(enumerate(bad)))


def _geometry(cap: ReadCap, shares: list[bytes]) -> Any:
    v = FileVerifier(cap)
    ext = v.accept_extension(0, shares[0][v.locate_extension(0, shares[0][:HEADER_SIZE])[0] :])
    return ext.geometry


def test_every_cap_byte_flip_is_refused() -> None:
    p = EncodingParams.create(3, 10, 100)
    _data, cap, shares = _encode(1000, p)
    allshares = dict(enumerate(shares))
    for text in (cap.to_string(), cap.verify_cap().to_string()):
        for pos in range(len(text)):
            for mask in (0x01, 0x20):
                bad = bytes(_flip(text.encode(), pos, mask)).decode("latin-1")
                try:
                    c = parse_cap(bad)
                except CapError:
                    continue
                assert c != cap
                if isinstance(c, ReadCap):
                    with pytest.raises(ImmutableError):
                        read_bytes(c, allshares)
                else:
                    try:
                        report = check_shares(c, MemoryShares(allshares), range(10))
                    except CapError:
                        continue
                    assert all(r is not None for r in report.values()), (pos, report)


def test_inconsistent_encoding_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malicious uploader whose check blocks do not match the data: every block
    verifies against its tree, but the ciphertext tree catches the decode."""
    real = encoder_mod.check_encoder

    class LyingEncoder:
        def __init__(self, k: int, n: int) -> None:
            self._e = real(k, n)

        def encode(self, blocks: Any, nums: Any) -> list[bytes]:
            return [_flip(b, 0) for b in self._e.encode(blocks, nums)]

    monkeypatch.setattr(encoder_mod, "check_encoder", LyingEncoder)
    p = EncodingParams.create(2, 4, 40)
    data, cap, shares = _encode(200, p)
    monkeypatch.undo()
    assert read_bytes(cap, {0: shares[0], 1: shares[1]}) == data
    with pytest.raises(InconsistentEncodingError, match="segment 0"):
        read_bytes(cap, {0: shares[0], 3: shares[3]})


def test_share_vanishing_mid_read_is_dropped() -> None:
    from p2pstore.immutable import RemoteError

    p = EncodingParams.create(2, 4, 40)
    data, cap, shares = _encode(400, p)
    calls = {"n": 0}

    class Flaky(MemoryShares):
        def read(self, share_number: int, offset: int, length: int) -> bytes:
            calls["n"] += 1
            if share_number == 0 and offset > 200:
                raise RemoteError("peer went away")
            return super().read(share_number, offset, length)

    from p2pstore.immutable import read_plaintext

    got = b"".join(read_plaintext(cap, Flaky(dict(enumerate(shares))), range(4)))
    assert got == data and calls["n"] > 0

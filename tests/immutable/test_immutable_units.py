"""Unit and property tests of the immutable-format building blocks: parameters,
hash trees, extension block, share layout and header parsing."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.immutable import (
    EXT_SIZE,
    HEADER_SIZE,
    EncodingParams,
    ExtensionBlock,
    ParameterError,
    SegmentGeometry,
    ShareHeader,
    ShareLayout,
    coalesce,
    hashtree,
)
from p2pstore.immutable.crypto import keystream_cipher


@pytest.mark.parametrize(
    ("k", "n", "msg"),
    [
        (0, 10, "k must be between 1 and 256"),
        (3, 0, "N must be between 1 and 256"),
        (4, 3, "k (4) must not exceed N (3)"),
        (3, 257, "N must be between 1 and 256"),
        (257, 257, "k must be between 1 and 256"),
        (True, 10, "k must be an integer"),
        (3.0, 10, "k must be an integer"),
    ],
)
def test_bad_k_n_refused(k: object, n: object, msg: str) -> None:
    with pytest.raises(ParameterError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        EncodingParams.create(k, n)  # type: ignore[arg-type]


@given(st.integers(1, 256), st.integers(0, 255), st.integers(1, 1 << 20))
def test_any_valid_k_n_accepted(k: int, extra: int, seg: int) -> None:
    n = min(256, k + extra)
    p = EncodingParams.create(k, n, seg)
    assert p.segment_size % k == 0 and seg <= p.segment_size < seg + k
    assert EncodingParams(p.k, p.n, p.segment_size) == p


def test_segment_size_rules() -> None:
    assert EncodingParams().segment_size == 1048578  # 1 MiB rounded up to a multiple of 3
    with pytest.raises(ParameterError, match="not a multiple of k=3"):
        EncodingParams(3, 10, 100)
    with pytest.raises(ParameterError, match="exceeds the maximum"):
        EncodingParams(1, 1, (64 << 20) + 1)
    with pytest.raises(ParameterError, match="positive"):
        EncodingParams.create(3, 10, 0)


@given(
    st.integers(56, 10_000),
    st.integers(1, 100),
    st.integers(0, 12_000),
    st.integers(0, 12_000),
)
def test_segments_for_range(size: int, seg: int, off: int, length: int) -> None:
    g = SegmentGeometry(EncodingParams.create(1, 1, seg), size)
    r = g.segments_for_range(off, length)
    covered = set()
    for j in r:
        covered.update(range(g.segment_offset(j), g.segment_offset(j) + g.segment_size_of(j)))
    wanted = set(range(off, min(size, off + length)))
    assert wanted <= covered
    if r:  # minimal: first and last segment both intersect the range
        assert g.segment_offset(r[0]) + g.segment_size_of(r[0]) > off
        assert g.segment_offset(r[-1]) < off + length
    assert sum(g.segment_size_of(j) for j in range(g.num_segments)) == size


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40), st.data())
def test_hash_tree_chains(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    nodes = hashtree.build_tree(leaves)
    assert len(b"".join(nodes)) == hashtree.tree_size(n)
    root = nodes[0]
    j = data.draw(st.integers(0, n - 1))
    chain = hashtree.uncle_chain(nodes, n, j)
    assert len(chain) == 32 * hashtree.tree_depth(n)
    assert hashtree.root_from_chain(leaves[j], n, j, chain) == root
    assert hashtree.verify_tree(b"".join(nodes), n, root) == leaves
    if chain:
        pos = data.draw(st.integers(0, len(chain) - 1))
        bad = bytearray(chain)
        bad[pos] ^= 1
        assert hashtree.root_from_chain(leaves[j], n, j, bytes(bad)) != root
    if n > 1:  # a leaf at another position does not verify
        other = (j + 1) % n
        if leaves[other] != leaves[j]:
            assert hashtree.root_from_chain(leaves[j], n, other, chain) != root
    flat = bytearray(b"".join(nodes))
    chunk = data.draw(st.integers(1, 5))

    def reader(buf: bytes) -> Callable[[int, int], bytes]:
        return lambda first, count: buf[first * 32 : (first + count) * 32]

    assert hashtree.check_tree_chunked(reader(bytes(flat)), n, root, chunk)
    pos = data.draw(st.integers(0, len(flat) - 1))
    flat[pos] ^= 0x80
    assert hashtree.verify_tree(bytes(flat), n, root) is None
    assert not hashtree.check_tree_chunked(reader(bytes(flat)), n, root, chunk)
    with pytest.raises(ParameterError, match="uncle chain is"):
        hashtree.root_from_chain(leaves[j], n, j, chain + b"x")


def _ext(size: int = 1000, k: int = 3, n: int = 10, seg: int = 99) -> ExtensionBlock:
    return ExtensionBlock(EncodingParams(k, n, seg), size, bytes(20), b"a" * 32, b"b" * 32)


def test_extension_block_round_trip_and_strictness() -> None:
    ext = _ext()
    raw = ext.to_bytes()
    assert len(raw) == EXT_SIZE == 110
    assert ExtensionBlock.from_bytes(raw) == ext
    with pytest.raises(ParameterError, match="expected 110"):
        ExtensionBlock.from_bytes(raw[:-1])
    with pytest.raises(ParameterError, match="bad magic"):
        ExtensionBlock.from_bytes(b"X" + raw[1:])
    with pytest.raises(ParameterError, match="unknown version"):
        ExtensionBlock.from_bytes(raw[:8] + b"\x00\x02" + raw[10:])
    with pytest.raises(ParameterError, match="out of range for a coded file"):
        _ext(size=55)


@given(
    st.integers(1, 6),
    st.integers(0, 6),
    st.integers(56, 5000),
    st.integers(1, 300),
    st.data(),
)
def test_layout_ranges(k: int, extra: int, size: int, seg: int, data: st.DataObject) -> None:
    p = EncodingParams.create(k, k + extra, seg)
    g = SegmentGeometry(p, size)
    i = data.draw(st.integers(0, p.n - 1))
    lay = ShareLayout.for_share(g, i)
    # blocks tile [HEADER_SIZE, crypttext_tree_offset) exactly, offsets independent of size
    pos = HEADER_SIZE
    for j in range(g.num_segments):
        off, length = lay.block_range(j)
        assert off == pos == HEADER_SIZE + j * p.block_size
        pos += length
    assert pos == lay.crypttext_tree_offset == lay.trailer_offset
    sections = [
        lay.crypttext_tree_range(),
        lay.block_tree_range(),
        lay.share_chain_range(),
        lay.ext_range(),
    ]
    for (o1, l1), (o2, _) in itertools.pairwise(sections):
        assert o1 + l1 == o2
    assert lay.ext_offset + EXT_SIZE == lay.share_length
    h = ShareHeader.parse(lay.header_bytes())
    assert h.ext_range() == lay.ext_range()
    assert (h.share_number, h.k, h.n, h.num_segments) == (i, p.k, p.n, g.num_segments)
    j = data.draw(st.integers(0, g.num_segments - 1))
    for off, length in lay.segment_ranges(j, with_crypttext_proof=True):
        assert off >= HEADER_SIZE and off + length <= lay.ext_offset


def test_header_parse_refusals() -> None:
    lay = ShareLayout.for_share(SegmentGeometry(EncodingParams(3, 10, 99), 1000), 2)
    raw = lay.header_bytes()
    with pytest.raises(ParameterError, match="expected 72"):
        ShareHeader.parse(raw[:10])
    with pytest.raises(ParameterError, match="bad magic"):
        ShareHeader.parse(b"y" + raw[1:])
    bad = bytearray(raw)
    bad[10:12] = (10).to_bytes(2, "big")  # share number == N
    with pytest.raises(ParameterError, match="out of range"):
        ShareHeader.parse(bytes(bad))
    bad = bytearray(raw)
    bad[-8:] = (lay.share_length + 1).to_bytes(8, "big")
    with pytest.raises(ParameterError, match="does not end the share"):
        ShareHeader.parse(bytes(bad))


def test_coalesce() -> None:
    assert coalesce([(10, 5), (0, 10), (20, 1), (14, 2)]) == [(0, 16), (20, 1)]
    assert coalesce([]) == []


@given(st.binary(max_size=200), st.integers(0, 100))
def test_keystream_is_position_addressed(data: bytes, off: int) -> None:
    key = bytes(range(32))
    whole = keystream_cipher(key, 0).update(bytes(off) + data)
    assert keystream_cipher(key, off).update(data) == whole[off:]

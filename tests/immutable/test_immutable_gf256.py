"""The SIMD erasure kernel (p2pstore/immutable/gf256.py) against zfec itself."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import zfec
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.immutable import EncodingParams
from p2pstore.immutable.encoder import SegmentCoder
from p2pstore.immutable.gf256 import (
    ENV,
    SimdDecoder,
    SimdEncoder,
    check_decoder,
    check_encoder,
    kernel,
)

LIB = kernel()
needs_kernel = pytest.mark.skipif(LIB is None, reason="the kernel is not built or no AVX2")


def _avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not _avx2(), reason="the kernel needs x86-64 with AVX2"
)
def test_the_kernel_is_built_and_used_where_it_can_run() -> None:
    # make install builds it (a C compiler is part of the set-up); a silent fallback
    # to zfec would only show as a slower upload
    assert LIB is not None
    assert isinstance(check_encoder(3, 10), SimdEncoder)
    assert isinstance(check_decoder(3, 10), SimdDecoder)


@needs_kernel
@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(1, 12),
    extra=st.integers(0, 12),
    size=st.integers(0, 700),
    data=st.data(),
)
def test_check_blocks_are_zfecs(k: int, extra: int, size: int, data: st.DataObject) -> None:
    n = k + extra
    blocks = [data.draw(st.binary(min_size=size, max_size=size)) for _ in range(k)]
    # unique: zfec 1.6 overruns its stack arrays when a check block is asked twice
    nums = data.draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True))
    assert LIB is not None
    got = SimdEncoder(LIB, k, n).encode(blocks, nums)
    if size:
        assert got == [bytes(b) for b in zfec.Encoder(k, n).encode(blocks, nums)]
    else:
        assert got == [b""] * len(nums)


@needs_kernel
@pytest.mark.parametrize(("k", "n"), [(3, 10), (1, 1), (1, 256), (128, 256), (255, 256)])
def test_large_and_edge_parameters(k: int, n: int) -> None:
    size = 1000 + 37  # SIMD body and a scalar tail
    blocks = [os.urandom(size) for _ in range(k)]
    nums = list(range(n))[-8:]
    assert LIB is not None
    assert SimdEncoder(LIB, k, n).encode(blocks, nums) == [
        bytes(b) for b in zfec.Encoder(k, n).encode(blocks, nums)
    ]


@needs_kernel
def test_bad_input_is_refused_as_zfec_refuses() -> None:
    assert LIB is not None
    enc = SimdEncoder(LIB, 3, 10)
    with pytest.raises(ValueError, match="same length"):
        enc.encode([b"ab", b"cd", b"e"], [5])
    with pytest.raises(ValueError, match="need 3 blocks"):
        enc.encode([b"ab", b"cd"], [5])
    with pytest.raises(ValueError, match="share numbers"):
        enc.encode([b"ab", b"cd", b"ef"], [10])
    with pytest.raises(ValueError, match="k <= n"):
        SimdEncoder(LIB, 4, 3)


@needs_kernel
def test_a_segment_encodes_the_same_through_either_coder(monkeypatch: pytest.MonkeyPatch) -> None:
    params = EncodingParams()
    segment = os.urandom(params.segment_size)
    fast = SegmentCoder(params).code(segment)
    monkeypatch.setattr("p2pstore.immutable.encoder.check_encoder", zfec.Encoder)
    slow = SegmentCoder(params).code(segment)
    assert fast.blocks == tuple(bytes(b) for b in slow.blocks)


def test_the_environment_can_rule_the_kernel_out() -> None:
    code = (
        "from p2pstore.immutable.gf256 import check_encoder; import zfec; "
        "print(type(check_encoder(3, 10)) is zfec.Encoder)"
    )
    env = {**os.environ, ENV: "zfec"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


@needs_kernel
@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(1, 12),
    extra=st.integers(0, 12),
    size=st.integers(1, 700),
    data=st.data(),
)
def test_decoding_is_zfecs(k: int, extra: int, size: int, data: st.DataObject) -> None:
    n = k + extra
    primaries = [data.draw(st.binary(min_size=size, max_size=size)) for _ in range(k)]
    nums = sorted(data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True)))
    blocks = zfec.Encoder(k, n).encode(primaries, nums)
    assert LIB is not None
    got = SimdDecoder(LIB, k, n).decode(blocks, nums)
    assert got == primaries
    # tuples: zfec's decoder reorders a list it is given, in place
    assert got == [bytes(b) for b in zfec.Decoder(k, n).decode(tuple(blocks), tuple(nums))]
    # any order of the same blocks (zfec's decoder needs them sorted)
    shuffled = data.draw(st.permutations(list(range(k))))
    again = SimdDecoder(LIB, k, n).decode(
        [blocks[i] for i in shuffled], [nums[i] for i in shuffled]
    )
    assert again == primaries


@needs_kernel
def test_decoding_refuses_what_cannot_decode() -> None:
    assert LIB is not None
    dec = SimdDecoder(LIB, 3, 10)
    with pytest.raises(ValueError, match="distinct"):
        dec.decode([b"ab", b"cd", b"ef"], [4, 4, 5])
    with pytest.raises(ValueError, match="distinct"):
        dec.decode([b"ab", b"cd", b"ef"], [4, 5, 10])
    with pytest.raises(ValueError, match="same length"):
        dec.decode([b"ab", b"cd", b"e"], [4, 5, 6])


@needs_kernel
def test_a_file_reads_back_from_check_shares_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    import p2pstore.immutable.decoder as decoder_mod
    from p2pstore.immutable import encode_bytes, read_bytes

    params = EncodingParams.create(3, 10, 3 * 1000)
    data = os.urandom(7777)  # three segments, the last one short
    cap, shares = encode_bytes(data, params)
    for picked in ((7, 8, 9), (0, 5, 9), (2, 3, 4)):
        assert read_bytes(cap, {i: shares[i] for i in picked}) == data
    monkeypatch.setattr(decoder_mod, "check_decoder", zfec.Decoder)
    assert read_bytes(cap, {i: shares[i] for i in (7, 8, 9)}) == data


@needs_kernel
def test_blocks_of_another_item_size_count_in_bytes() -> None:
    import array

    raw = [os.urandom(64) for _ in range(3)]
    ints = []
    for r in raw:
        a = array.array("I")
        a.frombytes(r)
        ints.append(a)
    assert LIB is not None
    got = SimdEncoder(LIB, 3, 10).encode(ints, [0, 5, 9])  # type: ignore[arg-type]
    assert got == [bytes(b) for b in zfec.Encoder(3, 10).encode(raw, [0, 5, 9])]

"""Fuzzing the parsers that face the network and the user: arbitrary bytes or text
produce the package's clear errors, never another exception."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.immutable import (
    HEADER_SIZE,
    BadShareError,
    CapError,
    EncodingParams,
    ExtensionBlock,
    FileVerifier,
    ImmutableError,
    MemoryShares,
    ParameterError,
    ReadCap,
    ShareHeader,
    check_shares,
    encode_bytes,
    parse_cap,
    read_bytes,
)

_P = EncodingParams.create(2, 4, 50)
_DATA = os.urandom(300)
_CAP, _SHARES = encode_bytes(_DATA, _P)
assert isinstance(_CAP, ReadCap)


@given(st.binary(max_size=200))
def test_header_parser(data: bytes) -> None:
    with contextlib.suppress(ParameterError):
        ShareHeader.parse(data)


@given(st.binary(min_size=110, max_size=110) | st.binary(max_size=200))
def test_extension_parser(data: bytes) -> None:
    with contextlib.suppress(ParameterError):
        ExtensionBlock.from_bytes(data)


@given(st.text(max_size=300) | st.just("p2ps:chk:").map(lambda p: p + "3:10:100:"))
def test_cap_parser(text: str) -> None:
    with contextlib.suppress(CapError):
        parse_cap(text)


@given(st.binary(max_size=100), st.integers(0, 3))
def test_verifier_on_garbage(junk: bytes, i: int) -> None:
    v = FileVerifier(_CAP)
    with pytest.raises(BadShareError):
        v.locate_extension(i, junk)
    with pytest.raises(BadShareError):
        v.accept_extension(i, junk)


@given(st.integers(0, 3), st.binary(max_size=600), st.booleans())
@settings(max_examples=50)
def test_reader_on_replaced_or_truncated_share(i: int, junk: bytes, truncate: bool) -> None:
    shares = dict(enumerate(_SHARES))
    shares[i] = _SHARES[i][: len(junk)] if truncate else junk
    assert read_bytes(_CAP, shares) == _DATA
    report = check_shares(_CAP.verify_cap(), MemoryShares(shares), range(4))
    assert report[i] is not None or shares[i] == _SHARES[i]


@given(st.lists(st.binary(max_size=400), min_size=4, max_size=4))
@settings(max_examples=30)
def test_reader_on_all_garbage(junk: list[bytes]) -> None:
    with pytest.raises(ImmutableError):
        read_bytes(_CAP, dict(enumerate(j[:HEADER_SIZE] + j for j in junk)))

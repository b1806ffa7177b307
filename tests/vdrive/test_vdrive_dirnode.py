"""Directory object encoding, names and directory caps (sans-I/O)."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.immutable import LiteralCap, ReadCap
from p2pstore.vdrive.dirnode import (
    MAX_NAME_BYTES,
    DirCap,
    Directory,
    Entry,
    check_name,
    decode_directory,
    normalize_name,
    parse_dircap,
)
from p2pstore.vdrive.errors import VdriveLocalError, VdriveRemoteError

FILE = ReadCap(3, 10, 1000, bytes(range(32)), bytes(range(32, 64)))
LIT = LiteralCap(b"hi")
DCAP = DirCap(ReadCap(1, 1, 400, bytes(32), bytes(32)))

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
    min_size=1,
    max_size=20,
).map(lambda s: normalize_name(s) if s not in (".", "..") else "x")
entries = st.one_of(
    st.builds(
        lambda t: Entry.file(FILE, t), st.floats(0, 2**39, allow_nan=False, allow_infinity=False)
    ),
    st.builds(lambda t: Entry.file(LIT, t), st.integers(0, 2**39).map(float)),
    st.builds(lambda t: Entry.directory(DCAP, t, t / 2), st.integers(0, 2**39).map(float)),
)


@given(st.dictionaries(names, entries, max_size=30))
def test_round_trip_and_sorted(d: dict[str, Entry]) -> None:
    directory = Directory(d)
    data = directory.encode()
    back = decode_directory(data)
    assert dict(back) == d
    assert back.encode() == data  # canonical
    order = [n.encode() for n in back]
    assert order == sorted(order)


def test_names() -> None:
    assert normalize_name("e\u0301") == "\u00e9"  # NFC
    for bad in ["", ".", "..", "a/b", "a\x00b", "a\nb", "x" * (MAX_NAME_BYTES + 1)]:
        with pytest.raises(VdriveLocalError) as e:
            normalize_name(bad)
        assert e.value.code == "bad-path"
    with pytest.raises(VdriveLocalError):
        check_name("e\u0301")  # decoded names must already be NFC


def row(name: str, kind: str = "file", cap: str | None = None) -> list[object]:
    return [name, kind, cap or FILE.to_string(), 1000 if kind == "file" else None, 1.0, 2.0]


def enc(rows: list[object], version: int = 1) -> bytes:
    return bytes(cbor2.dumps({"p2ps-dir": version, "entries": rows}))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xff",
        enc([], version=2),
        enc([row("b"), row("a")]),  # unsorted
        enc([row("a"), row("a")]),  # duplicate
        enc([row("a/b")]),
        enc([row("e\u0301")]),  # not NFC
        enc([row("a", "dir")]),  # a file cap as dir cap
        enc([[*row("a", "dir", DCAP.to_string())[:3], 5, 1.0, 1.0]]),  # dir with size
        enc([["a", "file", FILE.to_string(), 999, 1.0, 1.0]]),  # wrong size
        enc([["a", "file", FILE.to_string(), 1000, float("nan"), 1.0]]),
        enc([["a", "file", FILE.to_string(), 1000, -1.0, 1.0]]),
        enc([["a", "link", FILE.to_string(), 1000, 1.0, 1.0]]),
        enc([row("a")]) + b"\x00",  # trailing bytes
        bytes(cbor2.dumps({"p2ps-dir": 1, "entries": [], "x": 1})),
        bytes(cbor2.dumps([1, 2])),
    ],
)
def test_malformed_refused(data: bytes) -> None:
    with pytest.raises(VdriveRemoteError) as e:
        decode_directory(data)
    assert e.value.code == "bad-directory"


@given(st.binary(max_size=300))
def test_fuzz_never_crashes(data: bytes) -> None:
    with contextlib.suppress(VdriveRemoteError):
        decode_directory(data)


def test_dircap_round_trip() -> None:
    for cap in (DCAP, DirCap(LiteralCap(Directory().encode()))):
        text = cap.to_string()
        assert text.startswith("p2ps:dir:")
        assert parse_dircap(text) == cap
        assert "key" not in repr(cap) and text not in repr(cap)
    with pytest.raises(ValueError):
        parse_dircap(FILE.to_string())
    with pytest.raises(ValueError):
        verify = FILE.verify_cap().to_string()[len("p2ps:") :]
        parse_dircap("p2ps:dir:" + verify)


def test_mode_meta_round_trip_and_checks() -> None:
    plain = Directory({"a": Entry.file(LIT, 5.0)})
    with_mode = Directory({"a": Entry("file", LIT, LIT.size, 5.0, 6.0, 0o640)})
    assert len(cbor2.loads(plain.encode())["entries"][0]) == 6  # unchanged without a mode
    row = cbor2.loads(with_mode.encode())["entries"][0]
    assert row[6] == {"mode": 0o640}
    assert decode_directory(with_mode.encode())["a"].mode == 0o640
    for bad in ({"mode": 0o10000}, {"mode": True}, {"mode": "644"}, {"mode": 1, "x": 2}, [1]):
        obj = cbor2.loads(with_mode.encode())
        obj["entries"][0][6] = bad
        with pytest.raises(VdriveRemoteError):
            decode_directory(cbor2.dumps(obj))
    obj = cbor2.loads(with_mode.encode())
    obj["entries"][0].append(1)  # 8 fields
    with pytest.raises(VdriveRemoteError):
        decode_directory(cbor2.dumps(obj))
    with pytest.raises(ValueError):
        Entry("file", LIT, LIT.size, 5.0, 6.0, -1)

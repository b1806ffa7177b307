"""Mutable caps: round trips, diminishing authority, strict parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.mutable import (
    MutableCapError,
    ReadCap,
    VerifyCap,
    WriteCap,
    is_mutable_cap,
    parse_mutable_cap,
    read_key_of,
)

seeds = st.binary(min_size=32, max_size=32)


@given(seeds, st.booleans())
def test_every_cap_round_trips(seed: bytes, directory: bool) -> None:
    w = WriteCap(seed, directory)
    for cap in (w, w.read_cap(), w.verify_cap()):
        text = cap.to_string()
        assert is_mutable_cap(text)
        assert parse_mutable_cap(text) == cap
        assert text.startswith("p2ps:dir:mut" if directory else "p2ps:mut")


@given(seeds)
def test_authority_only_diminishes(seed: bytes) -> None:
    w = WriteCap(seed)
    r = w.read_cap()
    v = r.verify_cap()
    assert r.verify_cap() == w.verify_cap() == v
    # the read cap holds a one-way hash of the seed and the public key, nothing else
    assert seed not in (r.read_key, r.public_key)
    assert r.read_key == read_key_of(seed)
    assert not hasattr(r, "seed") and not hasattr(r, "write_cap")
    # the verify cap holds the public key only: no read key
    assert r.read_key not in v.to_string().encode()
    assert not hasattr(v, "read_key") and not hasattr(v, "read_cap")
    assert v.verify_cap() is v and r.read_cap() is r


@given(seeds)
def test_repr_never_shows_secrets(seed: bytes) -> None:
    w = WriteCap(seed)
    for cap in (w, w.read_cap()):
        text = repr(cap)
        assert w.to_string().split(":")[2] not in text
        assert w.read_cap().to_string().split(":")[2] not in text


@given(seeds, st.data())
def test_a_mistyped_write_cap_is_refused(seed: bytes, data: st.DataObject) -> None:
    text = WriteCap(seed).to_string()
    i = data.draw(st.integers(min_value=len("p2ps:mut:"), max_value=len(text) - 1))
    if text[i] == ":":
        return
    c = data.draw(
        st.sampled_from("abcdefghijklmnopqrstuvwxyz234567").filter(lambda c: c != text[i])
    )
    typo = text[:i] + c + text[i + 1 :]
    with pytest.raises(MutableCapError):
        parse_mutable_cap(typo)


@given(seeds, st.data())
def test_truncation_is_refused(seed: bytes, data: st.DataObject) -> None:
    w = WriteCap(seed)
    for cap in (w, w.read_cap(), w.verify_cap()):
        text = cap.to_string()
        n = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
        with pytest.raises(MutableCapError):
            parse_mutable_cap(text[:n])


@pytest.mark.parametrize(
    "text",
    [
        "p2ps:mut",
        "p2ps:mut:",
        "p2ps:mut-ro:abc",
        "p2ps:mut-verify:",
        "p2ps:mutx:aaaa",
        "p2ps:chk:3:10:100:aa:bb",
        "http://example",
        "p2ps:dir:mut-verify:" + "a" * 52 + ":extra",
        "P2PS:MUT:" + "A" * 52,
        "p2ps:mut-verify:" + "a" * 400,
    ],
)
def test_malformed_caps_say_what_is_wrong(text: str) -> None:
    with pytest.raises(MutableCapError) as e:
        parse_mutable_cap(text)
    assert str(e.value).startswith("bad cap: ")


def test_non_string_is_refused() -> None:
    with pytest.raises(MutableCapError):
        parse_mutable_cap(b"p2ps:mut:" + b"a" * 52)  # type: ignore[arg-type]
    assert not is_mutable_cap(None)


def test_generated_write_caps_differ_and_keep_their_kind() -> None:
    a, b = WriteCap.generate(), WriteCap.generate(directory=True)
    assert a.seed != b.seed
    assert isinstance(parse_mutable_cap(b.read_cap().to_string()), ReadCap)
    assert isinstance(parse_mutable_cap(b.verify_cap().to_string()), VerifyCap)
    assert parse_mutable_cap(b.to_string()).directory

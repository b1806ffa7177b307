"""Cap grammar: round trips and strict refusal of truncated or mistyped caps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.immutable import CapError, LiteralCap, ReadCap, VerifyCap, parse_cap, storage_index

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"

read_caps = st.builds(
    ReadCap,
    st.integers(1, 256),
    st.just(256),
    st.integers(56, 1 << 50),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
)
lit_caps = st.builds(LiteralCap, st.binary(max_size=55))


@given(read_caps)
def test_read_and_verify_caps_round_trip(cap: ReadCap) -> None:
    text = cap.to_string()
    assert parse_cap(text) == cap
    vc = cap.verify_cap()
    assert vc.storage_index == storage_index(cap.key)
    assert parse_cap(vc.to_string()) == vc
    assert cap.key.hex() not in repr(cap) and text not in repr(cap)


@given(lit_caps)
def test_literal_caps_round_trip(cap: LiteralCap) -> None:
    assert parse_cap(cap.to_string()) == cap


@given(st.one_of(read_caps, lit_caps, read_caps.map(lambda c: c.verify_cap())), st.data())
def test_every_truncation_refused(
    cap: ReadCap | VerifyCap | LiteralCap, data: st.DataObject
) -> None:
    text = cap.to_string()
    cut = data.draw(st.integers(0, len(text) - 1))
    with pytest.raises(CapError):
        parse_cap(text[:cut])


@given(lit_caps, st.data())
def test_any_literal_cap_substitution_refused(cap: LiteralCap, data: st.DataObject) -> None:
    text = cap.to_string()
    pos = data.draw(st.integers(0, len(text) - 1))
    repl = data.draw(st.sampled_from(ALPHABET + ":P0"))
    if repl == text[pos]:
        return
    with pytest.raises(CapError):
        parse_cap(text[:pos] + repl + text[pos + 1 :])


VALID = ReadCap(3, 10, 1000, bytes(range(32)), bytes(range(32, 64))).to_string()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "prefix"),
        ("P2PS:chk", "prefix"),
        ("p2ps:mdmf:1", "kind"),
        (VALID.replace(":3:10:", ":03:10:"), "k"),
        (VALID.replace(":3:10:", ":3:+10:"), "N"),
        (VALID.replace(":3:10:", ":11:10:"), "k/N"),
        (VALID.replace(":1000:", ":55:"), "size"),
        (VALID.replace(":1000:", ":1000:aa:"), "chk"),
        (VALID.upper().replace("P2PS:CHK", "p2ps:chk"), "key"),
        (VALID[:-1] + "b", "extension hash"),  # non-canonical trailing bits
        (VALID + "a", "extension hash"),
        ("p2ps:lit:aa", "lit"),
        ("p2ps:lit:" + "a" * 96 + ":" + "a" * 8, "literal data"),
        ("x" * 500, "cap"),
    ],
)
def test_specific_refusals(text: str, field: str) -> None:
    with pytest.raises(CapError) as ei:
        parse_cap(text)
    assert ei.value.field == field, str(ei.value)


@pytest.mark.parametrize("cut", [1, 2, 5, 20, 51])
def test_a_cut_off_cap_is_called_cut_off(cut: int) -> None:
    """A partial copy (the commonest mistake) is named as such, not as a base32 detail."""
    with pytest.raises(CapError) as ei:
        parse_cap(VALID[:-cut])
    assert ei.value.field == "extension hash"
    assert "the cap looks cut off (copy it whole)" in str(ei.value), str(ei.value)


def test_known_text_forms() -> None:
    assert VALID == (
        "p2ps:chk:3:10:1000:aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq:"
        "eaqseizeeutcokbjfivsyljof4ydcmrtgq2tmnzyhe5dwpb5hy7q"
    )
    assert LiteralCap(b"").to_string().startswith("p2ps:lit::")
    assert repr(LiteralCap(b"secret")) == "LiteralCap(size=6)"

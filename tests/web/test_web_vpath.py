"""Virtual-drive path parsing (p2pstore.app.vpath)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.app.vpath import MAX_DEPTH, BadPath, VPath, parse_vpath


@pytest.mark.parametrize(
    ("text", "drive", "parts"),
    [
        ("/", "shared", ()),
        ("", "shared", ()),
        ("a/b", "shared", ("a", "b")),
        ("//a///b/", "shared", ("a", "b")),
        ("shared:/a", "shared", ("a",)),
        ("private:/x/y z", "private", ("x", "y z")),
        ("private:", "private", ()),
        ("/notes:2024", "shared", ("notes:2024",)),
        ("/é/日本", "shared", ("é", "日本")),
    ],
)
def test_parse(text: str, drive: str, parts: tuple[str, ...]) -> None:
    assert parse_vpath(text) == VPath(drive, parts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("/a/../b", "not allowed"),
        ("/a/./b", "not allowed"),
        ("/a\x00b", "control"),
        ("/a\nb", "control"),
        ("public:/a", "unknown drive"),
        ("/" + "x" * 256, "longer than 255"),
        ("/a" * (MAX_DEPTH + 1), "deeper"),
        ("/\udcff", "Unicode"),
    ],
)
def test_refused(text: str, why: str) -> None:
    with pytest.raises(BadPath, match=why):
        parse_vpath(text)


def test_str_parent_child() -> None:
    p = parse_vpath("private:/a/b")
    assert str(p) == "private:/a/b"
    assert str(p.parent) == "private:/a"
    assert p.parent.child("c") == parse_vpath("private:/a/c")
    assert p.is_within(parse_vpath("private:/a"))
    assert not p.is_within(parse_vpath("shared:/a"))
    with pytest.raises(BadPath):
        parse_vpath("/").parent  # noqa: B018


_name = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/"),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in (".", ".."))


@given(st.sampled_from(["shared", "private"]), st.lists(_name, max_size=6))
def test_round_trip(drive: str, parts: list[str]) -> None:
    p = VPath(drive, tuple(parts))  # type: ignore[arg-type]
    assert parse_vpath(str(p)) == p


@given(st.text(max_size=300))
def test_fuzz_parse_only_raises_badpath(text: str) -> None:
    try:
        p = parse_vpath(text)
    except BadPath:
        return
    assert parse_vpath(str(p)) == p


def test_a_live_directory_path_is_shown_without_its_cap() -> None:
    from p2pstore.mutable import WriteCap

    w = WriteCap(bytes(range(32)), directory=True)
    for cap, kind in ((w, "live"), (w.read_cap(), "live-ro")):
        p = parse_vpath(cap.to_string() + "/docs/a.txt")
        assert p.is_live and str(p) == cap.to_string() + "/docs/a.txt"
        assert p.shown.startswith(f"{kind}:") and p.shown.endswith(":/docs/a.txt")
        assert cap.to_string().split(":")[3][:20] not in p.shown
    assert parse_vpath("shared:/x").shown == "shared:/x"

"""Bootstrap lists: parse, serialize, merge; errors name the line number."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.node.bootstrap import (
    HEADER,
    MAX_LINE_CHARS,
    MAX_SEEDS,
    BootstrapList,
    Seed,
    VdriveKey,
    load_bootstrap_file,
    merge,
    merge_text,
    parse_bootstrap,
    parse_line,
)
from p2pstore.node.errors import BootstrapError, BootstrapErrors
from quic_transport.identity import NodeId, NodeKey

ID_A = NodeId(bytes(range(20)))
ID_B = NodeId(bytes(range(1, 21)))
VKEY = bytes(range(32))

node_ids = st.binary(min_size=20, max_size=20).map(NodeId)
dns_names = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z][a-z0-9]{0,8}){0,3}\Z")
hosts = st.one_of(
    st.ip_addresses().map(lambda ip: ip.compressed),
    dns_names,
)
labels = st.text(st.characters(exclude_categories=["Cs"]), max_size=40).map(
    lambda s: "".join(c for c in s if c.isprintable()).strip()
)
seeds = st.builds(Seed, node_id=node_ids, host=hosts, port=st.integers(1, 65535), label=labels)
vdrives = st.builds(VdriveKey, public_key=st.binary(min_size=32, max_size=32), label=labels)


@st.composite
def bootstrap_lists(draw: st.DrawFn) -> BootstrapList:
    items = draw(st.lists(seeds, max_size=12, unique_by=lambda s: s.node_id))
    return BootstrapList(tuple(items), draw(st.none() | vdrives))


@given(bootstrap_lists())
def test_round_trip(lst: BootstrapList) -> None:
    assert parse_bootstrap(lst.to_text()) == lst
    assert parse_bootstrap(lst.to_text(header=False)) == lst


@given(bootstrap_lists(), st.sampled_from(["\r\n", "\n"]), st.sampled_from(["", "> ", "  "]))
def test_survives_chat_mangling(lst: BootstrapList, newline: str, prefix: str) -> None:
    text = newline.join(prefix + line for line in lst.to_text().splitlines())
    assert parse_bootstrap(text) == lst


@given(bootstrap_lists(), bootstrap_lists())
def test_merge_invariants(base: BootstrapList, incoming: BootstrapList) -> None:
    result = merge(base, incoming, replace_vdrive=True)
    merged = result.merged
    ids = [s.node_id for s in merged.seeds]
    assert len(ids) == len(set(ids))
    # nothing lost; incoming addresses win
    assert set(ids) == {s.node_id for s in base.seeds} | {s.node_id for s in incoming.seeds}
    for seed in incoming.seeds:
        got = merged.seed_for(seed.node_id)
        assert got is not None and got.same_address(seed)
    # base order kept, new seeds appended in incoming order
    assert ids[: len(base.seeds)] == [s.node_id for s in base.seeds]
    if incoming.vdrive is not None:
        assert merged.vdrive is not None
        assert merged.vdrive.public_key == incoming.vdrive.public_key
    # idempotent
    again = merge(merged, incoming, replace_vdrive=True)
    assert not again.changed and again.merged == merged


@given(st.text(max_size=300))
def test_parser_is_total(text: str) -> None:
    try:
        parse_bootstrap(text)
    except BootstrapErrors as e:
        assert e.errors and all(isinstance(x, BootstrapError) for x in e.errors)


def test_format_example() -> None:
    key = NodeKey.from_seed(bytes(range(32)))
    text = f"""
# our grid
p2ps-seed {key.node_id.b32} 192.0.2.7:3456   # alice's introducer
P2ps-seed {ID_A.b32.upper()} [2001:db8::7]:3456
  p2ps-seed {ID_B.b32} seed.example.org:443
p2ps-vdrive {"a" * 52}
"""
    lst = parse_bootstrap(text)
    assert [s.node_id for s in lst.seeds] == [key.node_id, ID_A, ID_B]
    assert lst.seeds[0].label == "alice's introducer"
    assert lst.seeds[1].host == "2001:db8::7"
    assert lst.seeds[2].to_line() == f"p2ps-seed {ID_B.b32} seed.example.org:443"
    assert lst.vdrive is not None and len(lst.vdrive.public_key) == 32
    assert lst.seeds[0].to_line() == (
        "p2ps-seed 4ak6xopxdzhfmaj2symeoa7wmgjphhvh 192.0.2.7:3456  # alice's introducer"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"p2ps-seed {ID_A.b32}", "expected 'p2ps-seed <node-id> <host>:<port>', got 2 words"),
        (f"p2ps-seed {ID_A.b32[:-1]} 1.2.3.4:5", "node ID: "),
        (f"p2ps-seed {ID_A.b32[:-1]}1 1.2.3.4:5", "not lowercase base32"),
        (f"p2ps-seed {ID_A.b32} 1.2.3.4:0", "port 0"),
        (f"p2ps-seed {ID_A.b32} 1.2.3.4:99999", "out of range"),
        (f"p2ps-seed {ID_A.b32} ::1:80", "brackets"),
        (f"p2ps-seed {ID_A.b32} 1.2.3.4", "expected host:port"),
        ("p2ps-vdrive abc", "vdrive key"),
        ("p2ps-furl pb://x", "unknown entry type 'p2ps-furl'"),
        ("hello there", "expected a line starting with p2ps-seed"),
        ("x" * (MAX_LINE_CHARS + 1), "at most 1024"),
    ],
)
def test_bad_lines_are_reported_with_line_number(line: str, message: str) -> None:
    good = f"p2ps-seed {ID_B.b32} 10.0.0.1:3456"
    with pytest.raises(BootstrapErrors) as info:
        parse_bootstrap(f"# header\n{good}\n\n{line}\n", source="list.txt")
    (err,) = info.value.errors
    assert err.line_no == 4
    assert message in err.problem
    assert str(err).startswith("list.txt, line 4: ")


def test_every_bad_line_reported() -> None:
    text = "bad one\n# fine\nbad two\n"
    with pytest.raises(BootstrapErrors) as info:
        parse_bootstrap(text)
    assert [e.line_no for e in info.value.errors] == [1, 3]


def test_duplicates() -> None:
    a1 = f"p2ps-seed {ID_A.b32} 10.0.0.1:1"
    a2 = f"p2ps-seed {ID_A.b32} 10.0.0.2:1"
    assert len(parse_bootstrap(f"{a1}\n{a1}\n")) == 1
    with pytest.raises(BootstrapErrors, match=r"line 2: node ID .* already on line 1"):
        parse_bootstrap(f"{a1}\n{a2}\n")
    v1, v2 = VdriveKey(VKEY).to_line(), VdriveKey(bytes(32)).to_line()
    with pytest.raises(BootstrapErrors, match="line 2: a different p2ps-vdrive"):
        parse_bootstrap(f"{v1}\n{v2}\n")


def test_size_limits() -> None:
    lines = "".join(
        f"p2ps-seed {NodeId(i.to_bytes(20, 'big')).b32} 10.0.0.1:1\n" for i in range(MAX_SEEDS + 1)
    )
    with pytest.raises(BootstrapErrors, match=f"more than {MAX_SEEDS} seeds"):
        parse_bootstrap(lines)
    with pytest.raises(BootstrapErrors, match="characters, at most"):
        parse_bootstrap("#" * (600 * 1024))


def test_merge_text_keeps_comments_and_updates_in_place() -> None:
    original = f"# my seeds\np2ps-seed {ID_A.b32} 10.0.0.1:1  # old box\n# trailing note\n"
    incoming = BootstrapList(
        (Seed(ID_A, "10.0.0.9", 2), Seed(ID_B, "10.0.0.3", 3, "new")), VdriveKey(VKEY)
    )
    text, result = merge_text(original, incoming)
    assert text.splitlines() == [
        "# my seeds",
        f"p2ps-seed {ID_A.b32} 10.0.0.9:2  # old box",
        "# trailing note",
        f"p2ps-seed {ID_B.b32} 10.0.0.3:3  # new",
        VdriveKey(VKEY).to_line(),
    ]
    assert [s.node_id for s in result.added] == [ID_B]
    assert result.updated[0][0].address.host == "10.0.0.1"
    assert result.vdrive_added == VdriveKey(VKEY)


def test_merge_never_replaces_vdrive_silently() -> None:
    base = BootstrapList((), VdriveKey(VKEY))
    other = BootstrapList((), VdriveKey(bytes(32)))
    result = merge(base, other)
    assert result.vdrive_conflict == other.vdrive
    assert result.merged.vdrive == base.vdrive
    assert not result.changed
    replaced = merge(base, other, replace_vdrive=True)
    assert replaced.merged.vdrive == other.vdrive and replaced.vdrive_replaced


def test_invisible_characters_from_chat_apps() -> None:
    line = f"\ufeffp2ps-seed\u200b {ID_A.b32} 10.0.0.1:5\u2060"
    assert parse_bootstrap(line).seeds == (Seed(ID_A, "10.0.0.1", 5),)


def test_parse_line_blank_and_comment() -> None:
    assert parse_line("   ") is None
    assert parse_line("# just a comment") is None
    assert parse_line("`p2ps-vdrive " + "a" * 52 + "`") == VdriveKey(b"\x00" * 32)


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(BootstrapErrors, match="cannot read bootstrap list"):
        load_bootstrap_file(tmp_path / "missing.txt")
    path = tmp_path / "bad.txt"
    path.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(BootstrapErrors, match="not UTF-8"):
        load_bootstrap_file(path)
    path.write_text(HEADER + f"p2ps-seed {ID_A.b32} 10.0.0.1:7\n")
    assert load_bootstrap_file(path).seeds[0].port == 7

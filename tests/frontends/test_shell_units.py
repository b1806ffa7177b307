"""The shell's sans-I/O parts: lexer and quoting (with a hypothesis round trip),
command parsing, path resolution, completion, rendering, the listing cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.app.vpath import VPath
from p2pstore.base.reports import (
    check_lines,
    helper_notes,
    helper_rows,
    info_lines,
    maintenance_rows,
    nat_rows,
    peer_lines,
)
from shell import render
from shell.completion import complete
from shell.errors import UsageError
from shell.parse import COMMAND_LIST, Invocation, parse_line, quote_word, tokenize
from shell.paths import CAP_PREFIX, resolve_local, resolve_remote
from shell.session import ListingCache

ROOT = VPath("shared", ())
DOCS = VPath("shared", ("docs",))


# -- lexer -----------------------------------------------------------------------
def test_tokenize_quotes_and_escapes() -> None:
    assert [t.value for t in tokenize("put 'my file.txt' \"a \\\"b\\\"\" c\\ d e'f g'")] == [
        "put",
        "my file.txt",
        'a "b"',
        "c d",
        "ef g",
    ]
    last = tokenize("get 'open quote")[-1]
    assert last.value == "open quote" and last.open_quote == "'" and not last.complete
    assert tokenize("a\\")[-1].dangling_escape
    assert tokenize("   ") == []


@given(st.lists(st.text(min_size=0, max_size=20), min_size=1, max_size=5))
def test_quote_word_round_trips(words: list[str]) -> None:
    line = " ".join(quote_word(w) for w in words)
    assert [t.value for t in tokenize(line)] == words


# -- parsing ---------------------------------------------------------------------
def test_parse_line_commands_options_and_arguments() -> None:
    assert parse_line("") is None
    assert parse_line("ls -l 'my dir'") == Invocation("ls", ("my dir",), frozenset({"long"}))
    inv = parse_line("put a.txt docs/ --mode=random -n")
    assert inv is not None and inv.values["mode"] == "random" and inv.flag("no_replace")
    inv = parse_line("put --mode random a.txt")
    assert inv is not None and inv.args == ("a.txt",) and inv.values == {"mode": "random"}
    rm = parse_line("rm -r a b -- -weird")
    assert rm is not None and rm.args == ("a", "b", "-weird") and rm.flag("recursive")
    assert parse_line("dir") == Invocation("ls")
    assert parse_line("quit") == Invocation("exit")
    assert parse_line("get - out") == Invocation("get", ("-", "out"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown command 'frobnicate'"),
        ("ls -z", "unknown option '-z'"),
        ("put", "missing LOCAL"),
        ("pwd extra", "too many arguments"),
        ("put a --mode fast", "must be one of convergent, random"),
        ("put a --mode", "--mode needs a value"),
        ("ls --long=1", "takes no value"),
        ("cat 'unclosed", "unclosed ' quote"),
        ("mv onlyone", "missing DST"),
    ],
)
def test_parse_line_errors_are_one_clear_line(line: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_line(line)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_command_has_help_and_a_handler() -> None:
    from shell.commands import Shell

    for spec in COMMAND_LIST:
        assert render.help_lines(spec)[0].startswith(f"usage: {spec.name}")
        assert spec.name == "exit" or hasattr(Shell, "cmd_" + spec.name)


# -- paths -----------------------------------------------------------------------
def test_resolve_remote() -> None:
    assert resolve_remote("a/b", DOCS) == VPath("shared", ("docs", "a", "b"))
    assert resolve_remote("/x", DOCS) == VPath("shared", ("x",))
    assert resolve_remote("..", DOCS) == ROOT
    assert resolve_remote("../../..", DOCS) == ROOT
    assert resolve_remote("./a/./b/../c", ROOT) == VPath("shared", ("a", "c"))
    assert resolve_remote("private:/p", DOCS) == VPath("private", ("p",))
    assert resolve_remote("private:", DOCS) == VPath("private", ())
    assert resolve_remote("a:b", ROOT) == VPath("shared", ("a:b",))  # a name, not a drive
    assert resolve_remote("/", VPath("private", ("q",))) == VPath("private", ())
    with pytest.raises(UsageError, match="control characters"):
        resolve_remote("bad\x01name", ROOT)
    with pytest.raises(UsageError, match="cap"):
        resolve_remote("p2ps:lit:abc", ROOT)


def test_resolve_local(tmp_path: Path) -> None:
    assert resolve_local("a/../b", tmp_path) == tmp_path / "b"
    assert resolve_local("/etc", tmp_path) == Path("/etc")
    assert resolve_local("~", tmp_path) == Path.home()


# -- completion --------------------------------------------------------------------
TREE: dict[VPath, list[dict[str, Any]]] = {
    ROOT: [
        {"name": "docs", "kind": "dir"},
        {"name": "my photos", "kind": "dir"},
        {"name": "notes.txt", "kind": "file"},
        {"name": ".hidden", "kind": "file"},
    ],
    DOCS: [{"name": "a report.pdf", "kind": "file"}, {"name": "archive", "kind": "dir"}],
    VPath("private", ()): [{"name": "secret.txt", "kind": "file"}],
}


def listing(path: VPath) -> list[dict[str, Any]]:
    if path not in TREE:
        raise RuntimeError("no such directory")
    return TREE[path]


def texts(line: str, cwd: VPath = ROOT, local: Path = Path("/")) -> list[str]:
    return [
        c.text
        for c in complete(
            line,
            cwd=cwd,
            local_cwd=local,
            list_remote=listing,
            list_local=lambda p: [("file one.txt", False), ("sub", True)],
        )
    ]


def test_complete_command_names_and_options() -> None:
    # a completed word is followed by a space: `mk` Tab `x` gives `mkdir x`
    assert texts("")[:3] == ["ls ", "cd ", "pwd "]
    assert texts("l") == ["ls ", "ln ", "lls ", "lcd ", "lpwd "]
    assert texts("help pu") == ["put "]
    assert texts("ls --") == ["--long "]
    assert texts("put a.txt --mode r") == ["random "]
    assert texts("drive p") == ["private "]
    assert texts("nosuchcmd x") == []


def test_complete_remote_paths_with_quoting() -> None:
    assert texts("ls ") == ["docs/", "'my photos/'", "notes.txt"]
    assert texts("ls .") == [".hidden"]
    assert texts("cd ") == ["docs/", "'my photos/'"]  # cd: directories only
    assert texts("ls my") == ["'my photos/'"]
    assert texts("ls 'my") == ["'my photos/"]  # keeps the open quote going
    assert texts('cat docs/"a ') == ["'docs/a report.pdf'"]  # a quote mid-word: re-quoted
    assert texts('cat "docs/a ') == ['"docs/a report.pdf"']
    assert texts("get docs/a") == ["'docs/a report.pdf'", "docs/archive/"]
    assert texts("get a", cwd=DOCS) == ["'a report.pdf'", "archive/"]
    assert texts("ls private:/s") == ["private:/secret.txt"]
    assert texts("ls pri") == ["private:/"]
    assert texts("ls nowhere/x") == []  # a listing failure: no candidates
    assert texts("ln p2ps:") == []


def test_complete_local_paths_and_positions() -> None:
    assert texts("put f") == ["'file one.txt'"]
    assert texts("put s") == ["sub/"]
    assert texts("put x.txt d") == ["docs/"]  # second argument of put is remote
    assert texts("get notes.txt s") == ["sub/"]  # second argument of get is local
    assert texts("lcd ") == ["sub/"]
    (cand,) = complete("get docs/ar", cwd=ROOT, local_cwd=Path("/"), list_remote=listing)
    assert cand.start == -len("docs/ar") and cand.display == "archive/"


# -- rendering -----------------------------------------------------------------------
def test_prompt_and_safe_text() -> None:
    assert render.prompt_text("alice", DOCS) == "p2ps alice shared:/docs> "
    assert render.safe("a\x1b[2Jb\tc") == "a\\x1b[2Jb\\x09c"


def test_ls_rendering() -> None:
    entries = [
        {"name": "b.txt", "kind": "file", "size": 2048, "mtime": None},
        {"name": "a", "kind": "dir", "size": None, "mtime": None},
        {"name": "evil\x1b]0;x", "kind": "file", "size": 1, "mtime": None},
    ]
    assert render.ls_short(entries, width=200) == [
        "a/".ljust(14) + "b.txt".ljust(14) + "evil\\x1b]0;x"
    ]
    assert render.ls_short(entries, width=5) == ["a/", "b.txt", "evil\\x1b]0;x"]
    long = render.ls_long(entries)
    assert long[0].startswith("dir ") and long[0].endswith(" a/")
    assert "2.0 KiB" in long[1] and long[-1] == "3 entries, 2.0 KiB in files"
    assert render.ls_long(entries[:1])[-1] == "1 entry, 2.0 KiB in files"
    assert render.ls_short([], 80) == []


def test_reports() -> None:
    report = {
        "healthy": False,
        "recoverable": True,
        "shares_needed": 3,
        "shares_total": 10,
        "shares_good": 9,
        "verified": True,
        "problems": ["share 4: missing"],
        "repair_attempted": True,
        "repaired": True,
    }
    assert check_lines(report) == [
        "NOT HEALTHY (recoverable): 9 of 10 shares good (need 3; verified every byte)",
        "  share 4: missing",
        "repaired",
    ]
    healthy = {**report, "healthy": True, "repaired": False, "problems": []}
    assert check_lines(healthy)[-1] == "nothing to repair"
    info = {"kind": "lit", "size": 5, "verify_cap": None, "storage": None}
    assert "inside the cap" in info_lines(info, cap="p2ps:lit:x")[-1]
    chk = {
        "kind": "chk",
        "size": 10,
        "k": 3,
        "n": 10,
        "storage_index": "si",
        "verify_cap": "v",
        "storage": {"shares_held": [0, 1], "servers": [{"node": "n1", "shares": 2}]},
    }
    lines = info_lines(chk, path="shared:/x", cap="c")
    assert "encoding:      3-of-10" in lines and "shares held:   0, 1" in lines
    assert "  node=n1, shares=2" in lines
    grid = {**chk, "storage": {"shares": {"0": ["nodeA"], "1": ["nodeB"], "2": ["nodeA"]}}}
    assert info_lines(grid)[-3:] == ["shares:", "  nodeA  shares 0, 2", "  nodeB  share 1"]
    empty = {**chk, "storage": {"unreachable": []}}
    assert info_lines(empty)[-1] == "unreachable:   -"
    repeated = {**chk, "storage": {"size": 10, "storage_index": "si", "k": 3, "shares_found": 9}}
    lines = info_lines(repeated)  # what the cap says is shown once
    assert sum(ln.startswith("size:") for ln in lines) == 1
    assert sum(ln.startswith("storage index:") for ln in lines) == 1
    assert lines[-1] == "shares found:  9"
    assert peer_lines([]) == ["no peers"]
    peers = [
        {"node_id": "abc", "address": "1.2.3.4:5", "connected": True, "last_seen": None},
        {
            "node_id": "def",
            "address": "h:1",
            "connected": False,
            "details": {"connection": "relayed"},
        },
    ]
    lines = peer_lines(peers)  # the shell shows how each peer is connected, as the CLI does
    assert lines[-1] == "2 peers (1 connected)" and "relayed" in lines[1]
    nat = {"reachability": "private", "mode": "auto", "dht_mode": "client", "relays": []}
    rows = dict(nat_rows(nat))
    assert rows["DHT mode"] == "client" and rows["relays"] == "none"
    status = render.status_lines({"nat": nat, "backend": "grid"}, "http://x/")
    assert any(line.startswith("reachability:  private (mode auto") for line in status)
    boot = {"self": "p2ps-seed X 1.2.3.4:5 intro\n", "bootstrap": "# c\np2ps-seed Y h:1\n"}
    assert render.bootstrap_lines(boot) == [
        "# this node (an introducer): give these lines to people who join",
        "p2ps-seed X 1.2.3.4:5 intro",
        "# this node's bootstrap list (others can join with it too)",
        "p2ps-seed Y h:1",
    ]


def test_progress_line_and_pages() -> None:
    line = render.progress_line("put", 1 << 20, 4 << 20, 1.0, 120)
    assert line.startswith("put [#####...............] 1.0 MiB / 4.0 MiB   25%  1.0 MiB/s  ETA 3s")
    assert render.progress_line("get", 5, None, 1.0, 120) == "get 5 B  5 B/s"
    assert len(render.progress_line("put", 1, 2, 1.0, 20)) == 19
    assert render.paginate([str(i) for i in range(7)], 4) == [
        ["0", "1", "2"],
        ["3", "4", "5"],
        ["6"],
    ]


def test_error_lines() -> None:
    from p2pstore.api_client import ApiCallError, NodeUnreachable

    assert render.error_line(ApiCallError(404, "not-found", "no such path")) == (
        "error: no such path (not-found)"
    )
    assert render.error_line(NodeUnreachable("gone")).startswith("node unreachable: gone")
    assert render.error_line(ValueError("x")).startswith("internal error: ValueError: x")
    err = FileNotFoundError(2, "No such file or directory", "a.txt")
    assert render.error_line(err) == "error: No such file or directory: a.txt"


def test_listing_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache = ListingCache(ttl=5, max_dirs=2, clock=lambda: now[0])
    cache.put(ROOT, [])
    assert cache.get(ROOT) == []
    now[0] = 6
    assert cache.get(ROOT) is None
    for i in range(3):
        cache.put(VPath("shared", (str(i),)), [])
    assert cache.get(VPath("shared", ("0",))) is None
    assert cache.get(VPath("shared", ("2",))) == []
    cache.clear()
    assert cache.get(VPath("shared", ("2",))) is None


# -- properties ----------------------------------------------------------------------
NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", "..") and not n.startswith("-"))  # "-x" reads as an option


@given(st.text(max_size=60))
def test_parse_line_never_fails_unexpectedly(line: str) -> None:
    try:
        parse_line(line)
    except UsageError as e:
        assert "\n" not in str(e)


@given(st.text(max_size=60))
def test_resolve_remote_gives_valid_paths_or_a_usage_error(word: str) -> None:
    from p2pstore.app.vpath import parse_vpath

    try:
        path = resolve_remote(word, DOCS)
    except UsageError:
        return
    assert parse_vpath(str(path)) == path  # the node accepts exactly this path


@given(st.lists(NAMES, min_size=1, max_size=6, unique=True), st.booleans(), st.data())
def test_completed_words_read_back_as_the_names(
    names: list[str], quoted: bool, data: st.DataObject
) -> None:
    kinds = data.draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    entries = [
        {"name": n, "kind": "dir" if d else "file"} for n, d in zip(names, kinds, strict=True)
    ]
    target = data.draw(st.sampled_from(names))
    is_dir = kinds[names.index(target)]
    prefix = target[: data.draw(st.integers(0, len(target)))]
    typed = ("'" + prefix.replace("'", "'\\''")) if quoted else quote_word(prefix)
    if not quoted and not prefix:
        typed = ""
    line = "ls " + typed
    found = complete(line, cwd=ROOT, local_cwd=Path("/"), list_remote=lambda p: entries)
    wanted = target + ("/" if is_dir else "")
    if target.startswith(".") and not prefix.startswith("."):
        return  # hidden names are offered only for a '.' prefix
    if prefix.startswith(CAP_PREFIX):
        return  # a word that starts like a cap is read as one (paths.is_cap), not a name
    values = []
    for c in found:
        new_line = line[: len(line) + c.start] + c.text
        values.append(tokenize(new_line)[-1].value)
    assert wanted in values


def test_history_path_follows_env_and_xdg(tmp_path: Path) -> None:
    from shell.app import history_path

    assert history_path({"P2PSTORE_SHELL_HISTORY": str(tmp_path / "h")}) == tmp_path / "h"
    assert history_path({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "p2pstore/shell_history"
    assert history_path({}, home=tmp_path) == tmp_path / ".local/share/p2pstore/shell_history"


def test_terminal_output_to_a_pipe_has_no_pager_or_progress() -> None:
    import io

    from shell.app import TerminalOutput

    buf = io.StringIO()
    out = TerminalOutput(buf, io.StringIO())
    out.lines([str(i) for i in range(500)], page=True)
    out.progress("put 50%")
    out.progress_done()
    out.line("done")
    assert buf.getvalue() == "".join(f"{i}\n" for i in range(500)) + "done\n"


def test_status_lines_version_and_seeds() -> None:
    doc = {
        "nickname": "n1",
        "version": "0.1.0",
        "seeds": [{"reachable": True}, {"reachable": False}, {"reachable": None}, "junk"],
        "vdrive": True,
    }
    lines = render.status_lines(doc, "http://127.0.0.1:1/")
    assert "version:       0.1.0" in lines
    assert "seeds:         1 of 4 reachable" in lines
    assert not any(ln.startswith("seeds:") for ln in render.status_lines({}, "u"))


def test_helper_rows_and_notes() -> None:
    """docs/helper.md, "Status": the shell's status rows, and what put says."""
    doc = {
        "details": {
            "helper": {
                "serving": True,
                "use": "slow",
                "uploads_placed": 2,
                "uploads_present": 1,
                "bytes_received": 3 << 20,
                "measured_upload_rate": 2 << 20,
                "helper_rates": {"slowhelper": 1 << 20, "fasthelper": 3 << 20},
            }
        }
    }
    lines = render.status_lines(doc, "http://127.0.0.1:1/")
    assert any(ln.startswith("helper:") and "2 placed, 1 already" in ln for ln in lines)
    assert "uses helpers:  slow (measured upload rate 2.0 MiB/s)" in lines
    rates = dict(helper_rows(doc))["helpers by throughput"]
    assert rates == "fasthelper 3.0 MiB/s, slowhelper 1.0 MiB/s"  # fastest first
    assert helper_rows({"details": {"helper": {"serving": False, "use": "never"}}}) == []
    assert helper_rows({}) == []
    put = {"details": {"helper": "abcdefghijklmnopqrstuvwxyz234567"}}
    assert helper_notes(put) == ["sent through upload helper abcdefghijklmnop"]
    fell_back = {"details": {"helper_failures": ["h1: gone\x1b[2J"]}}
    assert helper_notes(fell_back) == [
        "upload helper failed: h1: gone\\x1b[2J",  # remote text made safe for a terminal
        "uploaded directly instead",
    ]
    assert helper_notes({"cap": "x"}) == []


def test_lease_rows_say_what_keeps_files_alive() -> None:
    """docs/node.md, "Leases": the lease book and the keeper's last round, in the
    status of every front end (shell, CLI, web UI share these rows)."""
    round_ = {
        "renewed": 40,
        "files_in_drives": 39,
        "pins": 1,
        "failed": 0,
        "complete_walk": True,
        "uploads_linked": 3,
        "uploads_let_go": 2,
    }
    doc = {
        "details": {
            "leases": {"tracked": 12, "linked": 5},
            "maintenance": {"enabled": False, "references": {"last_round": round_}},
        }
    }
    lines = render.status_lines(doc, "http://127.0.0.1:1/")
    assert "maintenance:   off" in lines
    assert "lease book:    renewing 12 uploads (5 seen linked from this node's drives)" in lines
    kept = dict(maintenance_rows(doc))["kept alive"]
    assert kept == (
        "40 files and directories renewed (39 in the drives, 1 pins), 0 failed; "
        "2 uploads no longer linked let go"
    )
    round_["complete_walk"] = False
    assert "no upload was let go" in dict(maintenance_rows(doc))["kept alive"]
    assert maintenance_rows({"details": {"leases": {"tracked": 1}}}) == [
        ("lease book", "renewing 1 upload (0 seen linked from this node's drives)")
    ]
    assert maintenance_rows({}) == []

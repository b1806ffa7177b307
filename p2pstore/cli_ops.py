"""CLI commands that talk to a running node through its HTTP API (``api_client.py``):
``put``, ``get``, ``info``, ``check``, ``peers``, the API part of ``status``, and the
virtual-drive commands ``ls``, ``mkdir``, ``rm``, ``mv``, ``ln`` (``put FILE PATH``,
``get PATH [FILE]`` too).

Exit codes (docs/http-api.md, "CLI"): 0 ok; 1 the operation failed (API error,
broken transfer, unhealthy ``check``); 2 usage error (including a malformed cap or
path, caught before contacting the node); 3 the node cannot be reached (no node
directory, not running, API not answering).

Invariants: ``get`` into a file writes ``FILE.part-*`` next to it and renames it
into place only when every byte arrived, so a failed download leaves nothing
behind; data goes to stdout only for ``get ... -`` (or without FILE); messages and
progress go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .api_client import ApiCallError, ClientError, NodeClient, resolve_node_dir
from .api_drive import DeepChecks, local_first, settled, walk_files
from .app.vpath import parse_vpath
from .base.fsutil import umask
from .base.progress import UploadProgress, human_bytes
from .base.reports import (
    DEEP_STATES,
    check_lines,
    deep_state,
    helper_notes,
    helper_rows,
    info_lines,
    maintenance_rows,
    nat_rows,
    peer_lines,
    pin_lines,
    safe,
)
from .cli_support import (
    CAP_PREFIX,
    UsageProblem,
    add_mutable_put_options,
    mkdir_live,
    names_a_cap,
    put_mutable,
)
from .cli_support import check_cap as _check_cap
from .cli_support import check_path as _check_path
from .cli_support import client_for as _client
from .cli_support import print_json as _print_json
from .cli_support import progress_bar as _progress
from .cli_support import source as _source
from .immutable import parse_cap
from .mutable import is_mutable_cap


# -- put / get -------------------------------------------------------------------
def cmd_put(args: argparse.Namespace) -> int:
    if args.mutable or names_a_cap(args.path or ""):
        return put_mutable(args)
    path = _check_path(args.path) if args.path else None
    client = _client(args)
    with _source(args.file) as (src, size):
        name = "-" if args.send_bytes else args.file  # "-": never read in place
        bar = UploadProgress(size, sys.stderr, two_passes=args.mode == "convergent")
        kw = {"size": size, "mode": args.mode, "progress": bar.sent, "stored": bar.stored}
        try:
            if path is None:
                kw["name"] = None if args.file == "-" else Path(args.file).name
                doc = local_first(client, name, src, lambda s: client.put(s, **kw))
            else:
                kw["replace"] = not args.no_replace
                doc = _settled(
                    args,
                    path,
                    f"put {path}",
                    lambda i: local_first(
                        client, name, src, lambda s: client.put_path(s, path, op_id=i, **kw)
                    ),
                )
                if doc.get("recovered"):  # made, but its answer was lost: read it back
                    doc = {**_client(args).stat(path)["entry"], "path": path, **doc}
        except ApiCallError as e:
            if "uploaded_cap" in e.details:  # uploaded, but the link failed: keep the cap
                print(e.details["uploaded_cap"])
                print(f"p2pstore: uploaded, but not linked at {path}", file=sys.stderr)
            raise
        finally:
            bar.finish()
    if args.json:
        _print_json(doc)
    else:
        print(doc["cap"])
        if path is not None:
            print(f"linked {doc['path']} ({human_bytes(doc['size'])})", file=sys.stderr)
        for note in helper_notes(doc):
            print(note, file=sys.stderr)
    return 0


def _download(args: argparse.Namespace, fetch: Any, total: int | None) -> int:
    if args.dest is None and sys.stdout.isatty():
        raise UsageProblem(
            "not writing file data to the terminal: give a file name, "
            "or - to write to standard output anyway (e.g. piped into less)"
        )
    bar = _progress(total)
    if args.dest in (None, "-"):
        out = sys.stdout.buffer
        try:
            fetch(out, bar.update)
        finally:
            bar.finish()
        out.flush()
        return 0
    dest = Path(args.dest)
    if dest.is_dir():
        raise UsageProblem(f"{dest} is a directory; give a file name")
    if dest.exists() and not args.force:
        raise UsageProblem(f"{dest} exists; use --force to replace it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.part-", dir=dest.parent or Path("."))
    except OSError as e:
        raise UsageProblem(f"cannot write {dest}: {e.strerror}") from None
    ok = False
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                fetch(f, bar.update)
            finally:
                bar.finish()
        os.chmod(tmp, 0o666 & ~umask())  # as a file the user created (mkstemp made it 0600)
        os.replace(tmp, dest)
        ok = True
    finally:
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    source: str = args.source
    if names_a_cap(source):
        cap = _check_cap(source, readable=True)
        client = _client(args)
        size = None if is_mutable_cap(cap) else parse_cap(cap).size
        return _download(args, lambda f, p: client.get(cap, f, progress=p), size)
    path = _check_path(source)
    client = _client(args)
    entry = client.stat(path)["entry"]
    if entry["kind"] != "file":
        raise UsageProblem(f"{path} is a directory")
    return _download(args, lambda f, p: client.get_path(path, f, progress=p), entry["size"])


# -- info / check / status / peers ----------------------------------------------
def _file_cap(args: argparse.Namespace) -> tuple[NodeClient, str, str | None]:
    """The client, and a cap as given or the cap of the file at a drive path:
    ``(client, cap, path)``. A cap or path is checked before the node is looked for."""
    target: str = args.cap
    if names_a_cap(target):
        cap = _check_cap(target)
        return _client(args), cap, None
    path = _check_path(target)
    client = _client(args)
    entry = client.stat(path)["entry"]
    if entry["kind"] != "file" or not entry.get("cap"):
        raise UsageProblem(f"{path} is a directory; give a file or a cap")
    return client, _check_cap(entry["cap"]), path


def cmd_info(args: argparse.Namespace) -> int:
    """``info CAP`` or ``info PATH`` (as in the shell): the same report."""
    client, cap, path = _file_cap(args)
    doc = client.info(cap)
    if args.json:
        _print_json(doc if path is None else {"path": path, **doc})
        return 0
    for line in info_lines(doc, path=path):
        print(line)
    return 0


def cmd_deep_check(args: argparse.Namespace) -> int:
    """``check --deep PATH [--verify] [--repair]``: every file below a drive directory
    (Tahoe's ``deep-check``); a progress line, one line per problem, a summary."""
    if args.cap.startswith(CAP_PREFIX):
        raise UsageProblem("--deep needs a vdrive directory (e.g. shared:/ or private:/)")
    root = _check_path(args.cap)
    client = _client(args)
    problems: list[str] = []
    files = walk_files(client, root, problems)
    tally = dict.fromkeys(DEEP_STATES, 0)
    rows = []
    check = DeepChecks(client, verify=args.verify, repair=args.repair)
    for i, (path, entry) in enumerate(files, 1):
        print(f"\rchecking {i}/{len(files)} ", end="", file=sys.stderr, flush=True)
        try:
            doc = check(str(entry["cap"]))
        except ClientError as e:
            problems.append(f"{path}: {e}")
            tally["not healthy"] += 1
            continue
        state = deep_state(doc)
        tally[state] += 1
        rows.append({"path": path, "state": state, **doc})
        if state != "healthy" and not args.json:
            print(f"\r{state}: {safe(path)} ({doc['shares_good']} of {doc['shares_total']} good)")
    print("\r", end="", file=sys.stderr)
    if args.json:
        _print_json(
            {"root": root, "files": rows, "problems": problems, "different": check.distinct} | tally
        )
    else:
        for line in problems:
            print(f"problem: {safe(line)}")
        print(check.summary(len(files), root, tally))
    return 0 if tally["not healthy"] == tally["unrecoverable"] == 0 and not problems else 1


def cmd_check(args: argparse.Namespace) -> int:
    if args.deep:
        return cmd_deep_check(args)
    client, cap, _ = _file_cap(args)
    doc = client.check(cap, verify=args.verify, repair=args.repair)
    if args.json:
        _print_json(doc)
    else:
        print("\n".join(check_lines(doc)))
    return 0 if doc["healthy"] else 1


def cmd_pin(args: argparse.Namespace) -> int:
    """``pin CAP|PATH [--label TEXT]``: this node keeps the file alive."""
    client, cap, path = _file_cap(args)
    doc = client.pin(cap, args.label if args.label is not None else (path or ""))
    if args.json:
        _print_json(doc)
    else:
        again = "pinned" if doc.get("new") else "already pinned (label updated)"
        print(f"{again}: lease renewed on {doc.get('holders')} holders; kept from now on")
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    client, cap, _ = _file_cap(args)
    client.unpin(cap)
    print("unpinned: this node no longer renews the file (other references may)")
    return 0


def cmd_pins(args: argparse.Namespace) -> int:
    pins = _client(args).pins()
    if args.json:
        _print_json(pins)
        return 0
    for line in pin_lines(pins):
        print(line)
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    if args.dir and args.node and Path(args.dir).absolute() != Path(args.node).absolute():
        raise UsageProblem("give the node directory once (DIR or --node DIR)")
    peers = NodeClient.for_node(resolve_node_dir(args.dir or args.node)).peers()
    if args.json:
        _print_json(peers)
        return 0
    for line in peer_lines(peers):
        print(line)
    return 0


def api_status(node_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The API's status for ``p2pstore status``: (doc, None) or (None, error)."""
    try:
        return NodeClient.for_node(node_dir).status(), None
    except ClientError as e:
        return None, str(e)


def cmd_status(args: argparse.Namespace) -> int:
    """``status [DIR] [--node DIR] [--json]``: the node's files (daemon.status) plus,
    while it runs, what its API reports. Exit 0 running, 1 stale pid file or API
    failure, 3 not running."""
    from .node import daemon

    if args.dir and args.node and Path(args.dir).absolute() != Path(args.node).absolute():
        raise UsageProblem("give the node directory once (DIR or --node DIR)")
    root = resolve_node_dir(args.dir or args.node)
    buf = io.StringIO()
    rc = daemon.status(root, as_json=args.json, out=buf)
    doc, err = api_status(root) if rc == 0 else (None, None)
    if err is not None:
        rc = 1
    if args.json:
        report = json.loads(buf.getvalue())
        if rc == 0 or err is not None:
            report["api"] = doc if err is None else {"error": err}
        _print_json(report)
    else:
        print(buf.getvalue(), end="")
        if doc is not None:
            store = doc.get("memory_store")
            print(f"  {'HTTP API:':<14}{doc.get('api_url', '') or _api_url(root)}")
            print(f"  {'backend:':<14}{doc.get('backend')}")
            if doc.get("encoding_source"):
                print(f"  {'encoding:':<14}{safe(str(doc['encoding_source']))}")
            if isinstance(store, dict):
                print(
                    f"  {'memory store:':<14}{store.get('files')} files, "
                    f"{human_bytes(store.get('bytes_used', 0))} of shares"
                )
            print(f"  {'vdrive:':<14}{'available' if doc.get('vdrive') else 'not available'}")
            nat = doc.get("nat")
            for label, text in nat_rows(nat) if isinstance(nat, dict) else []:
                print(f"  {label + ':':<14}{text}")
            for label, text in [*maintenance_rows(doc), *helper_rows(doc)]:
                print(f"  {label + ':':<14}{text}")
            print(f"  {'web UI:':<14}run `p2pstore web-url` for a one-time login link")
        if err is not None:
            print(f"p2pstore: the node runs but its API failed: {err}", file=sys.stderr)
    return rc


def _api_url(root: Path) -> str:
    from .node.nodedir import NodeDir
    from .node.status_file import read_status_file

    doc = read_status_file(NodeDir(root)) or {}
    return str(doc.get("api_url", "?"))


# -- virtual drive ---------------------------------------------------------------
def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def cmd_ls(args: argparse.Namespace) -> int:
    path = _check_path(args.path)
    client = _client(args)
    try:
        doc = client.ls(path)
    except ApiCallError as err:
        if err.code != "not-a-directory":
            raise
        entry = client.stat(path)["entry"]  # `ls FILE` shows that one entry, as ls(1) does
        if entry["kind"] != "file":
            raise
        doc = {"path": path, "entries": [entry]}
    if args.json:
        _print_json(doc)
        return 0
    if not doc["entries"] and sys.stdout.isatty():
        # ls(1) prints nothing; a person at a terminal is told (stderr: scripts see none)
        print("(empty directory)", file=sys.stderr)
    for e in doc["entries"]:
        name = e["name"] + ("/" if e["kind"] == "dir" else "")
        if args.long or args.caps:
            size = "-" if e["size"] is None else str(e["size"])
            line = f"{e['kind']:<4} {size:>12}  {_fmt_time(e['mtime'])}  {name}"
            if args.caps:
                line += f"  {e['cap'] or '-'}"
            print(line)
        else:
            print(name)
    return 0


def _done(args: argparse.Namespace, doc: dict[str, Any], text: str) -> int:
    """A drive change went through: its JSON reply with ``--json``, else one line on
    stderr (stdout stays for data)."""
    if args.json:
        _print_json(doc)
    else:
        print(text, file=sys.stderr)
    return 0


def _settled(
    args: argparse.Namespace, path: str, what: str, call: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """Make a drive change; if the node's answer is lost, ask the node what became of
    it (``api_drive.settled``), so a change that was made is never reported failed."""
    node_dir = resolve_node_dir(args.node)
    return settled(
        lambda: NodeClient.for_node(node_dir),
        parse_vpath(path).drive,
        what,
        call,
        say=lambda m: print(f"p2pstore: {m}", file=sys.stderr),
    )


def cmd_mkdir(args: argparse.Namespace) -> int:
    if args.live:
        return mkdir_live(args)
    if args.path is None:
        raise UsageProblem("give the PATH of the directory to make (or --live)")
    path, client = _check_path(args.path), _client(args)
    doc = _settled(
        args, path, f"mkdir {path}", lambda i: client.mkdir(path, parents=args.parents, op_id=i)
    )
    return _done(args, {"path": path, **doc}, f"created {path}")


def cmd_rm(args: argparse.Namespace) -> int:
    path, client = _check_path(args.path), _client(args)
    doc = _settled(
        args, path, f"rm {path}", lambda i: client.unlink(path, recursive=args.recursive, op_id=i)
    )
    return _done(args, {"path": path, **doc}, f"removed {path}")


def cmd_mv(args: argparse.Namespace) -> int:
    src, dst, client = _check_path(args.src), _check_path(args.dst), _client(args)
    doc = _settled(
        args, src, f"mv {src}", lambda i: client.rename(src, dst, replace=args.replace, op_id=i)
    )
    return _done(args, {"src": src, "dst": dst, **doc}, f"moved {src} -> {dst}")


def cmd_ln(args: argparse.Namespace) -> int:
    # a read-only directory cap (p2ps:dir:...) is checked by the node's vdrive
    text = args.cap
    plain_dircap = text.startswith("p2ps:dir:") and not is_mutable_cap(text)
    cap = text if plain_dircap else _check_cap(text, readable=True)
    path, client = _check_path(args.path), _client(args)
    doc = _settled(
        args, path, f"ln {path}", lambda i: client.link(path, cap, replace=args.replace, op_id=i)
    )
    return _done(args, {"path": path, **doc}, f"linked {path}")


# -- parser ----------------------------------------------------------------------
def _node_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="store_true", help="on an error, also print the details"
    )
    p.add_argument(
        "--node",
        metavar="DIR",
        help="node directory (default: $P2PSTORE_NODE, else ~/.local/share/p2pstore/node)",
    )


def add_commands(sub: Any) -> None:
    """Register the client commands on the main parser's subparsers."""
    p = sub.add_parser("put", help="upload a file (or stdin: -); prints its cap")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument(
        "path",
        nargs="?",
        metavar="PATH|WRITECAP",
        help="also link it at this vdrive path; or publish it as a mutable file's next version",
    )
    p.add_argument(
        "--mode",
        choices=("convergent", "random"),
        default="convergent",
        help="key: convergent (same file, same cap; default) or random",
    )
    p.add_argument("--no-replace", action="store_true", help="with PATH: fail if it exists")
    add_mutable_put_options(p)
    p.add_argument(
        "--send-bytes", action="store_true", help="send the bytes over HTTP, not the file's path"
    )
    p.add_argument("--json", action="store_true", help="print the full JSON reply")
    _node_opt(p)
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("get", help="download a file by cap or vdrive path to FILE or stdout")
    p.add_argument("source", metavar="CAP|PATH")
    p.add_argument(
        "dest", nargs="?", metavar="FILE|-", help="default: stdout (not a terminal: give -)"
    )
    p.add_argument("-f", "--force", action="store_true", help="replace FILE if it exists")
    _node_opt(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("info", help="what a cap or file names: size, encoding, storage")
    p.add_argument("cap", metavar="CAP|PATH")
    p.add_argument("--json", action="store_true")
    _node_opt(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("check", help="check a file's health (exit 1 if not healthy)")
    p.add_argument("cap", metavar="CAP|PATH")
    p.add_argument("--verify", action="store_true", help="read and verify every share byte")
    p.add_argument("--repair", action="store_true", help="regenerate missing/bad shares")
    p.add_argument(
        "--deep", action="store_true", help="every file below a vdrive directory (e.g. shared:/)"
    )
    p.add_argument("--json", action="store_true")
    _node_opt(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("pin", help="keep a file alive from this node (renew its lease)")
    p.add_argument("cap", metavar="CAP|PATH")
    p.add_argument("--label", help="a note shown by `pins` (default: the PATH)")
    p.add_argument("--json", action="store_true")
    _node_opt(p)
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("unpin", help="stop keeping a pinned file alive")
    p.add_argument("cap", metavar="CAP|PATH")
    _node_opt(p)
    p.set_defaults(func=cmd_unpin)

    p = sub.add_parser("pins", help="the files this node keeps alive by pin")
    p.add_argument("--json", action="store_true")
    _node_opt(p)
    p.set_defaults(func=cmd_pins)

    p = sub.add_parser("status", help="is the node running; its ID, address, peers, API")
    p.add_argument("dir", nargs="?", metavar="DIR", help="node directory (or --node DIR)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _node_opt(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("peers", help="the peers the running node knows")
    p.add_argument("dir", nargs="?", metavar="DIR", help="node directory (or --node DIR)")
    p.add_argument("--json", action="store_true")
    _node_opt(p)
    p.set_defaults(func=cmd_peers)
    _add_drive_commands(sub)


def _add_drive_commands(sub: Any) -> None:
    p = sub.add_parser("ls", help="list a vdrive directory (shared:/... or private:/...)")
    p.add_argument("path", nargs="?", default="/", metavar="PATH")
    p.add_argument("-l", "--long", action="store_true", help="kind, size, time")
    p.add_argument("--caps", action="store_true", help="also show caps (secrets!)")
    p.add_argument("--json", action="store_true")
    _node_opt(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("mkdir", help="make a vdrive directory (or a live directory: --live)")
    p.add_argument("path", nargs="?", metavar="PATH")
    p.add_argument(
        "--live",
        action="store_true",
        help="a new live directory to share: prints its write cap and read cap; use "
        "CAP/path with ls, put, get, mkdir, rm, mv, ln",
    )
    p.add_argument("-p", "--parents", action="store_true", help="make parents; ok if it exists")
    p.add_argument("--json", action="store_true", help="print the JSON reply")
    _node_opt(p)
    p.set_defaults(func=cmd_mkdir)

    p = sub.add_parser("rm", help="remove a vdrive entry (the file stays in the grid)")
    p.add_argument("path", metavar="PATH")
    p.add_argument("-r", "--recursive", action="store_true", help="remove a non-empty directory")
    p.add_argument("--json", action="store_true", help="print the JSON reply")
    _node_opt(p)
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("mv", help="rename/move within one vdrive")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--replace", action="store_true", help="replace an existing file at DST")
    p.add_argument("--json", action="store_true", help="print the JSON reply")
    _node_opt(p)
    p.set_defaults(func=cmd_mv)

    p = sub.add_parser("ln", help="link a cap (file, or read-only directory p2ps:dir:) at a path")
    p.add_argument("cap", metavar="CAP")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--replace", action="store_true", help="replace an existing file at PATH")
    p.add_argument("--json", action="store_true", help="print the JSON reply")
    _node_opt(p)
    p.set_defaults(func=cmd_ln)

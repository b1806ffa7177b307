"""What the CLI's file commands share: argument checks made before the node is
contacted (caps, drive paths), the input source, JSON output, and the mutable
``put`` (``put --mutable FILE``, ``put FILE WRITECAP``; docs/mutable.md).

``UsageProblem`` is a bad argument found before contacting the node (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .api_client import ClientError, NodeClient, resolve_node_dir
from .app.errors import BadRequest
from .app.vpath import LIVE_PREFIX, parse_vpath
from .base.progress import Progress, UploadProgress, human_bytes
from .immutable import CapError, VerifyCap, parse_cap
from .mutable import MutableCapError, WriteCap, is_mutable_cap, parse_mutable_cap
from .mutable import VerifyCap as MutableVerifyCap

EXIT_USAGE = 2
CAP_PREFIX = "p2ps:"


class UsageProblem(Exception):
    """Bad arguments found before contacting the node (exit 2)."""


def client_for(args: argparse.Namespace) -> NodeClient:
    return NodeClient.for_node(resolve_node_dir(args.node))


def names_a_cap(text: str) -> bool:
    """True if ``text`` is a cap rather than a drive path (``CAP/path`` inside a live
    directory is a path)."""
    return text.startswith(CAP_PREFIX) and not (text.startswith(LIVE_PREFIX) and "/" in text)


def check_cap(text: str, *, readable: bool = False) -> str:
    if is_mutable_cap(text):
        try:
            mcap = parse_mutable_cap(text)
        except MutableCapError as e:
            raise UsageProblem(str(e)) from None
        if readable and isinstance(mcap, MutableVerifyCap):
            raise UsageProblem(
                "a verify cap cannot read a file; use the read cap (p2ps:mut-ro:...)"
            )
        return text
    try:
        cap = parse_cap(text)
    except CapError as e:
        raise UsageProblem(str(e)) from None
    if readable and isinstance(cap, VerifyCap):
        raise UsageProblem("a verify cap cannot read a file; use the read cap (p2ps:chk:...)")
    return text


def check_path(text: str) -> str:
    try:
        return str(parse_vpath(text))
    except BadRequest as e:
        raise UsageProblem(f"bad vdrive path {text!r}: {e.message}") from None


def progress_bar(total: int | None) -> Progress:
    return Progress(total, sys.stderr)


@contextlib.contextmanager
def source(name: str) -> Iterator[tuple[IO[bytes], int | None]]:
    if name == "-":
        yield sys.stdin.buffer, None
        return
    try:
        f = open(name, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise ClientError(f"cannot read {name}: {e.strerror}") from None
    with f:
        size = os.fstat(f.fileno()).st_size if Path(name).is_file() else None
        yield f, size


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=1, sort_keys=True))


def put_mutable(args: argparse.Namespace) -> int:
    """``put --mutable FILE`` (a new mutable file) or ``put FILE WRITECAP`` (its next
    version): the write cap on stdout, the read cap and version on stderr."""
    write_cap = None
    if args.path:
        if args.mutable:
            raise UsageProblem("put --mutable makes a new file: give FILE only")
        cap = check_cap(args.path)
        if not isinstance(parse_mutable_cap(cap), WriteCap):
            raise UsageProblem("only a write cap (p2ps:mut:...) can publish a new version")
        write_cap = cap
    client = client_for(args)
    with source(args.file) as (src, size):
        bar = UploadProgress(size, sys.stderr, two_passes=False)
        try:
            doc = client.put_mutable(
                src,
                write_cap=write_cap,
                size=size,
                expected_sequence=args.expect_sequence,
                progress=bar.sent,
                stored=bar.stored,
            )
        finally:
            bar.finish()
    if args.json:
        print_json(doc)
        return 0
    print(doc["write_cap"])
    what = "new mutable file" if write_cap is None else "published"
    print(
        f"{what}: version {doc['sequence']} ({human_bytes(doc['size'])}); "
        f"read cap (to share read-only): {doc['read_cap']}",
        file=sys.stderr,
    )
    return 0


def add_mutable_put_options(p: argparse.ArgumentParser) -> None:
    """``put``'s options for mutable files."""
    p.add_argument(
        "--mutable",
        action="store_true",
        help="a new mutable file: prints its write cap (publish later versions with "
        "`put FILE WRITECAP`) and its read cap",
    )
    p.add_argument(
        "--expect-sequence",
        type=int,
        metavar="N",
        help="with WRITECAP: publish only if the latest version is N (else a conflict)",
    )


def mkdir_live(args: argparse.Namespace) -> int:
    """``mkdir --live``: a new, empty live directory (docs/mutable.md); its write cap
    on stdout, the read cap on stderr."""
    if args.path is not None:
        raise UsageProblem(
            "mkdir --live makes a live directory of its own (address it as CAP/path); "
            "linking it into a drive is not supported yet"
        )
    from .vdrive.dirnode import (
        Directory,  # here: the vdrive package imports the whole grid (CLI start-up)
    )

    empty = Directory().encode()
    doc = client_for(args).put_mutable(io.BytesIO(empty), size=len(empty), directory=True)
    if args.json:
        print_json(doc)
        return 0
    print(doc["write_cap"])
    print(
        "new live directory: whoever holds the write cap above can change it; share the "
        f"read cap to let others follow it: {doc['read_cap']}",
        file=sys.stderr,
    )
    return 0

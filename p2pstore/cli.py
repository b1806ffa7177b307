"""The ``p2pstore`` command line. Subcommands grow with the grid; each is a thin client."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from quic_transport.identity import IdentityError, NodeKey

from . import __version__


def _cmd_identity(args: argparse.Namespace) -> int:
    if args.key is None:
        key = NodeKey.generate()
        print(f"new identity (not saved): {key.node_id.b32}")
        return 0
    path = Path(args.key)
    existed = path.exists()
    key = NodeKey.load_or_create(path)
    print(f"{'loaded' if existed else 'created'} {path}: {key.node_id.b32}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2pstore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"p2pstore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("identity", help="print the node ID of a key file (created if missing)")
    p.add_argument("--key", help="key file path; without it a fresh unsaved identity is made")
    p.set_defaults(func=_cmd_identity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except IdentityError as e:
        print(f"p2pstore: {e}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""``p2pstore web-url [DIR] [--node DIR] [--open]``: a one-time login link for the
running node's web UI (docs/web-ui.md).

It asks the node's API (with the API token from ``DIR/private/api.token``) for a
login ticket — ``POST /api/v1/ui/login-ticket`` — and prints
``http://127.0.0.1:<port>/login/<ticket>``; opening it within two minutes logs
that browser in (once). Kept apart from the web UI package so the CLI does not
import aiohttp.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path
from typing import Any

from .api_client import ApiCallError, NodeClient, resolve_node_dir


def cmd_web_url(args: argparse.Namespace) -> int:
    if args.dir and args.node and Path(args.dir).absolute() != Path(args.node).absolute():
        print("p2pstore: give the node directory once (DIR or --node DIR)", file=sys.stderr)
        return 2
    client = NodeClient.for_node(resolve_node_dir(args.dir or args.node))
    try:
        doc = client._json_call("POST", "/api/v1/ui/login-ticket")
    except ApiCallError as e:
        if e.status == 404:
            print("p2pstore: this node serves no web UI", file=sys.stderr)
            return 1
        raise
    url = str(doc["login_url"])
    print(url)
    expires = int(doc.get("expires_in", 120))
    print(f"(a one-time link: open it within {expires} s; it logs one browser in)", file=sys.stderr)
    if args.open:
        webbrowser.open(url)
    return 0


def add_commands(sub: Any) -> None:
    """Register ``web-url`` on the main parser's subparsers."""
    p = sub.add_parser("web-url", help="print a one-time login link for the node's web UI")
    p.add_argument("dir", nargs="?", metavar="DIR", help="node directory (or --node DIR)")
    p.add_argument(
        "--node",
        metavar="DIR",
        help="node directory (default: $P2PSTORE_NODE, else ~/.local/share/p2pstore/node)",
    )
    p.add_argument("--open", action="store_true", help="also open it in the default browser")
    p.set_defaults(func=cmd_web_url)

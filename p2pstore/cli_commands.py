"""The ``p2pstore`` command line (every command but ``p2pstore run DIR``, which
``p2pstore.cli`` hands to ``p2pstore.node.main`` without importing this module).
Subcommands grow with the grid; each is a thin client of a library module (node
operations live in ``p2pstore.node``).

Exit codes: see :data:`EPILOG`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quic_transport.identity import IdentityError, NodeKey

from . import __version__, cli_backup, cli_ops, cli_support, cli_webui
from .api_client import ClientError, resolve_node_dir
from .node import localgrid
from .node.address import parse_host_port
from .node.errors import EXIT_CONFIG, AddressError, BootstrapErrors, ConfigError, NodeError
from .node.main import NODE_DIR_HELP, add_run_arguments, failure_exit, run_node
from .node.nodedir import CreateOptions, NodeDir, create_node_dir
from .node.pidfile import probe
from .node.size import format_duration_exact, parse_duration, parse_size

if TYPE_CHECKING:
    from .node.bootstrap import MergeResult

# The node's own machinery (bootstrap lists, invitations, the daemon, systemd units)
# is imported by the commands that use it, so that `put`, `get` and the other
# commands that only talk to a running node start without it (docs/architecture.md).


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


def _listen_arg(text: str) -> object:
    try:
        return parse_host_port(text)
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size_arg(text: str) -> int | None:
    if text.strip().lower() == "unlimited":
        return None
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port_arg(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 0..65535")
    return int(text)


def _create(args: argparse.Namespace, introducer: bool) -> int:
    from .node import bootstrap_ops, invite_ops
    from .node.bootstrap import BootstrapList, load_bootstrap_file, merge
    from .node.invitations import InviteCode

    bootstrap = BootstrapList()
    for value in args.bootstrap or []:
        bootstrap = merge(bootstrap, bootstrap_ops.read_bootstrap_arg(value)).merged
    options = CreateOptions(
        introducer=introducer,
        nickname=args.nickname,
        listen=args.listen,
        web_port=args.web_port,
        storage_quota=args.storage_quota,
        storage_enabled=False if args.no_storage else None,
        bootstrap=bootstrap,
    )
    join_code = getattr(args, "join", None)
    if join_code:
        InviteCode.parse(join_code)  # a damaged code is refused before anything is made
    nd, key = create_node_dir(Path(args.dir), options)
    role = "introducer" if introducer else "node"
    print(f"created {role} in {nd.root}")
    print(f"  node ID:   {key.node_id.b32}")
    print(f"  config:    {nd.config_path}")
    if join_code:
        _print_joined(*invite_ops.join(nd.root, join_code))
        bootstrap = load_bootstrap_file(nd.default_bootstrap_path)
    print(f"  bootstrap: {len(bootstrap.seeds)} seeds in {nd.default_bootstrap_path}")
    if not introducer and not bootstrap.seeds:
        print("  (no seeds yet: add some with `p2pstore bootstrap add DIR LINE...`)")
    print(f"start it with: p2pstore start {nd.root}   (or `run` in the foreground)")
    return 0


def _print_joined(reply: dict[str, Any], merged: MergeResult) -> None:
    access = "read and write" if reply["write"] else "read"
    print(f"  joined through invitation {reply['name']!r}: {len(merged.added)} seeds added")
    if merged.merged.vdrive is not None:
        print(f"  shared drive: {access} access")
    if merged.merged.params is not None:
        p = merged.merged.params
        print(f"  the grid's encoding: {p.k}-of-{p.n}, happy {p.happy}")


def _cmd_join(args: argparse.Namespace) -> int:
    from .node import invite_ops

    root = _node_dir(args)
    _print_joined(*invite_ops.join(root, args.code))
    print(f"restart the node to use it: p2pstore restart {root}")
    return 0


def _cmd_invite(args: argparse.Namespace) -> int:
    from .node import invite_ops

    code = invite_ops.create_invite(
        _node_dir(args), args.name, write=args.write, ttl=float(args.expires)
    )
    what = "join and write to the shared drive" if args.write else "join and read"
    expires = format_duration_exact(args.expires)
    print(f"invitation {args.name!r} ({what}; works once, expires in {expires}):")
    print(code)
    print("the friend runs: p2pstore create-node DIR --join CODE   (or `p2pstore join CODE`)")
    return 0


def _cmd_writers(args: argparse.Namespace) -> int:
    from .node import invite_ops

    rows = invite_ops.writers(_node_dir(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        rights = "write" if r["write"] else "read"
        who = r["node_id"] or "-"
        print(f"{r['name']:<20} {rights:<5} {r['state']:<8} {who}")
    print(f"{len(rows)} invitations")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from .node import invite_ops

    r = invite_ops.revoke(_node_dir(args), args.name)
    if r["node_id"] and r["write"]:
        print(f"revoked {r['name']!r}: {r['node_id']} may no longer change the shared drive")
    else:
        print(f"revoked invitation {r['name']!r} (it can no longer be used)")
    return 0


def _duration_arg(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds < 60:
        raise argparse.ArgumentTypeError("at least 1m")
    return seconds


def _add_invite_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("invite", help="invite a friend: prints a one-time code (docs/bootstrap.md)")
    p.add_argument("name", metavar="NAME", help="who it is for (listed by `writers`)")
    p.add_argument("--write", action="store_true", help="also let them change the shared drive")
    p.add_argument("--expires", type=_duration_arg, default=7 * 86400, metavar="DURATION")
    p.add_argument("dir", metavar="DIR", nargs="?", help=NODE_DIR_HELP)
    p.set_defaults(func=_cmd_invite)
    p = sub.add_parser("join", help="join a grid with an invitation code (then restart)")
    p.add_argument("code", metavar="CODE")
    p.add_argument("dir", metavar="DIR", nargs="?", help=NODE_DIR_HELP)
    p.set_defaults(func=_cmd_join)
    p = sub.add_parser("writers", help="the invitations this node made, and who used them")
    p.add_argument("dir", metavar="DIR", nargs="?", help=NODE_DIR_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_writers)
    p = sub.add_parser("revoke", help="revoke an invitation or the write access it gave")
    p.add_argument("name", metavar="NAME")
    p.add_argument("dir", metavar="DIR", nargs="?", help=NODE_DIR_HELP)
    p.set_defaults(func=_cmd_revoke)


def _cmd_create_node(args: argparse.Namespace) -> int:
    return _create(args, introducer=False)


def _cmd_create_introducer(args: argparse.Namespace) -> int:
    return _create(args, introducer=True)


CREATES = ("create-node", "create-introducer")


def _node_dir(args: argparse.Namespace) -> Path:
    """DIR, else ``--node``, else ``$P2PSTORE_NODE``, else the default node: the same
    rule for every command that takes a node directory."""
    return resolve_node_dir(args.dir)


def _cmd_run(args: argparse.Namespace) -> int:
    # `p2pstore --node DIR run`: `p2pstore run ...` itself never gets here (see cli.py)
    return run_node(args.dir, args.daemonized)


def _cmd_start(args: argparse.Namespace) -> int:
    from .node import daemon

    return daemon.start(_node_dir(args), timeout=args.timeout).rc


def _cmd_stop(args: argparse.Namespace) -> int:
    from .node import daemon

    return daemon.stop(_node_dir(args), timeout=args.timeout, force=args.force)


def _cmd_restart(args: argparse.Namespace) -> int:
    from .node import daemon

    rc = daemon.stop(_node_dir(args), timeout=args.timeout, force=args.force)
    if rc != 0:
        return rc
    return daemon.start(_node_dir(args)).rc


def _cmd_bootstrap_show(args: argparse.Namespace) -> int:
    from .node import bootstrap_ops

    # DIR, else --node, else $P2PSTORE_NODE, else the default node: as the client commands
    print(bootstrap_ops.own_line(resolve_node_dir(args.dir or args.node)), end="")
    return 0


def _cmd_bootstrap_add(args: argparse.Namespace) -> int:
    from .node import bootstrap_ops

    if args.lines == ["-"]:
        text, source = sys.stdin.read(), "stdin"
    else:
        text, source = "\n".join(args.lines), "given lines"
    result = bootstrap_ops.add_lines(
        Path(args.dir), text, source=source, replace_vdrive=args.replace_vdrive
    )
    for seed in result.added:
        print(f"added   {seed.to_line()}")
    for old, new in result.updated:
        print(f"updated {new.to_line()}  (was {old.address})")
    if result.vdrive_added:
        print(f"added   {result.vdrive_added.to_line()}")
    if result.vdrive_replaced:
        print(f"replaced vdrive key: {result.vdrive_replaced.to_line()}")
    if result.vdrive_conflict:
        print(
            "NOT applied: a different vdrive key than the one in the list "
            f"({result.vdrive_conflict.b32}); use --replace-vdrive if you trust it",
            file=sys.stderr,
        )
    if not result.changed:
        print("nothing new: the list already holds these entries")
    elif probe(NodeDir(Path(args.dir).absolute()).pid_path).running:
        print("the node is running: restart it to use the new list")
    print(f"{len(result.merged.seeds)} seeds in the list")
    return 1 if result.vdrive_conflict else 0


def _cmd_bootstrap_check(args: argparse.Namespace) -> int:
    from .node import bootstrap_ops

    lst = bootstrap_ops.read_bootstrap_arg(args.source, what="bootstrap check")
    print(f"ok: {len(lst.seeds)} seeds" + (", vdrive key set" if lst.vdrive else ""))
    return 0


def _cmd_shell(args: argparse.Namespace) -> int:
    from shell.app import run  # prompt_toolkit loads only for the shell

    return run(args.node, args.debug)


def _cmd_systemd_unit(args: argparse.Namespace) -> int:
    from .node import systemd

    root = _node_dir(args).absolute()
    NodeDir(root).require_node()
    name = systemd.unit_name(root)
    if args.install:
        path = systemd.install_unit(root)
        print(f"wrote {path}; now run:")
        print(f"  systemctl --user daemon-reload && systemctl --user enable --now {name}")
        print('  loginctl enable-linger "$USER"   # to start at boot without logging in')
        return 0
    # the unit alone on stdout (so `systemd-unit DIR > FILE` is a valid unit); how to
    # install it on stderr
    print(systemd.render_unit(root))
    print(
        systemd.install_instructions(name, systemd.user_unit_dir() / name), end="", file=sys.stderr
    )
    return 0


EPILOG = (
    "exit codes: 0 success, 1 failure, 2 usage error, 3 node not running / not reachable, "
    "78 config error. Docs: docs/node.md, docs/bootstrap.md, docs/http-api.md."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pstore",
        description="p2pstore: a secure, decentralized, fault-tolerant peer-to-peer file store.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"p2pstore {__version__}")
    parser.add_argument(
        "--node",
        dest="global_node",
        metavar="DIR",
        help="node directory for the commands that talk to a node (also after the command)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest="global_verbose",
        action="store_true",
        help="on an error, also print the node's details (also after the command)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("identity", help="print the node ID of a key file (created if missing)")
    p.add_argument("--key", help="key file path; without it a fresh unsaved identity is made")
    p.set_defaults(func=_cmd_identity)
    _add_create_commands(sub)
    _add_daemon_commands(sub)
    cli_ops.add_commands(sub)  # put/get/info/check/status/peers and the vdrive ones
    cli_webui.add_commands(sub)  # web-url: a one-time web UI login link
    cli_backup.add_commands(sub)  # backup/restore (docs/backup.md)
    _add_bootstrap_commands(sub)
    _add_invite_commands(sub)
    localgrid.register(sub)

    p = sub.add_parser("systemd-unit", help="print (or --install) a systemd user unit")
    p.add_argument("dir", metavar="DIR", nargs="?", help=NODE_DIR_HELP)
    p.add_argument("--install", action="store_true", help="write it to ~/.config/systemd/user/")
    p.set_defaults(func=_cmd_systemd_unit)

    p = sub.add_parser("shell", help="an interactive shell on a running node (docs/shell.md)")
    p.add_argument("--node", metavar="DIR", help="node directory (default: $P2PSTORE_NODE)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of failed commands")
    p.set_defaults(func=_cmd_shell)
    return parser


def _add_create_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, func, what in (
        ("create-node", _cmd_create_node, "a node directory"),
        ("create-introducer", _cmd_create_introducer, "an introducer (seed) node directory"),
    ):
        p = sub.add_parser(name, help=f"create {what}; refuses to overwrite")
        p.add_argument("dir", metavar="DIR")
        p.add_argument(
            "--bootstrap",
            action="append",
            metavar="FILE|TEXT",
            help="bootstrap list: a file, or the pasted lines themselves (repeatable)",
        )
        p.add_argument("--listen", type=_listen_arg, metavar="HOST:PORT", help="UDP listen address")
        p.add_argument("--web-port", type=_port_arg, metavar="N", help="local HTTP API port")
        p.add_argument(
            "--storage-quota",
            type=_size_arg,
            metavar="SIZE",
            help='most space shares may use, e.g. 10GB, 500MiB, "unlimited"',
        )
        p.add_argument("--no-storage", action="store_true", help="do not hold shares")
        p.add_argument("--nickname", metavar="NAME", help="a name shown to others")
        if name == "create-node":
            p.add_argument("--join", metavar="CODE", help="join with a friend's invitation code")
        p.set_defaults(func=func)


def _add_daemon_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a node in the foreground (Ctrl-C stops it)")
    add_run_arguments(p)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("start", help="start a node in the background")
    p.add_argument("dir", metavar="DIR", nargs="?", help=NODE_DIR_HELP)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait (default 20)")
    p.set_defaults(func=_cmd_start)
    for name, func, what in (
        ("stop", _cmd_stop, "stop a background node (SIGTERM)"),
        ("restart", _cmd_restart, "stop then start a background node"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("dir", metavar="DIR", nargs="?", help=NODE_DIR_HELP)
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for exit")
        p.add_argument("--force", action="store_true", help="SIGKILL if it has not exited")
        p.set_defaults(func=func)


def _add_bootstrap_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bootstrap", help="bootstrap lists: show this node's line, add seeds")
    bsub = p.add_subparsers(dest="bootstrap_command", metavar="ACTION")
    bsub.required = True
    q = bsub.add_parser("show", help="print the lines others need to join through this node")
    q.add_argument("dir", metavar="DIR", nargs="?", help="default: --node, else $P2PSTORE_NODE")
    q.add_argument("--node", metavar="DIR", help=argparse.SUPPRESS)
    q.set_defaults(func=_cmd_bootstrap_show)
    q = bsub.add_parser("add", help="merge bootstrap lines into a node's list")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("lines", nargs="+", metavar="LINE", help="bootstrap lines, or - for stdin")
    q.add_argument("--replace-vdrive", action="store_true", help="accept a new vdrive key")
    q.set_defaults(func=_cmd_bootstrap_add)
    q = bsub.add_parser("check", help="validate a bootstrap list file or text")
    q.add_argument("source", metavar="FILE|TEXT")
    q.set_defaults(func=_cmd_bootstrap_check)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help(sys.stderr)  # the commands, not just "COMMAND is required"
        return 2
    args = parser.parse_args(argv)
    if args.global_node is not None:
        # `p2pstore --node DIR ls` as well as `p2pstore ls --node DIR` (the later wins)
        if hasattr(args, "node"):
            if args.node is None:
                args.node = args.global_node
        elif args.command not in CREATES and getattr(args, "dir", "") is None:
            args.dir = args.global_node  # `p2pstore --node DIR stop`
        else:
            parser.error(f"--node does not apply to {args.command!r} (give DIR itself)")
    try:
        rc: int = args.func(args)
    except (ConfigError, BootstrapErrors) as e:
        print(f"p2pstore: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except cli_support.UsageProblem as e:
        print(f"p2pstore: {e}", file=sys.stderr)
        return 2
    except ClientError as e:
        print(f"p2pstore: {e}", file=sys.stderr)
        details = getattr(e, "details", None)
        if details and (args.global_verbose or getattr(args, "verbose", False)):
            print(json.dumps(details, indent=2, sort_keys=True, default=str), file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # e.g. `p2pstore get CAP | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (IdentityError, NodeError, OSError, KeyboardInterrupt) as e:
        return failure_exit(e)
    return rc

"""``p2pstore run [DIR]``: the entry point of a node process, apart from the rest of
the command line so that a running node imports only what a node needs.

``p2pstore.cli`` sends ``run`` here before it imports anything else; the daemon
(``daemon.py``, ``python -m p2pstore.cli run DIR --daemonized``) and the systemd unit
(``p2pstore run DIR``) start nodes that way. The other commands' modules (the HTTP
client, the backup database with sqlite3, the web-UI launcher, the local grid) cost
a node about 2 MB of RSS for nothing (docs/local-grid.md, "At scale").

Invariant: this module and what it imports never import ``p2pstore.api_client``,
``p2pstore.backup``, the ``p2pstore.cli*`` modules or sqlite3
(``tests/node/test_node_main.py`` checks in a fresh interpreter).
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import sys
from collections.abc import Mapping, Sequence

from p2pstore.immutable.allocator import tune_allocator
from quic_transport.identity import IdentityError

from .errors import EXIT_CONFIG, BootstrapErrors, ConfigError, NodeError
from .nodedir import resolve_node_dir

NODE_DIR_HELP = "node directory (default: --node, else $P2PSTORE_NODE)"
#: frozenlist (aiohttp's signal lists) is the one extension of the stack in C++: it
#: loads libstdc++ into the process, 1.2 MB of RSS, for lists a node builds a few of at
#: start and only iterates. Its pure-Python class is the same API (the project's own
#: switch, see frozenlist's README). Set before the network stack is imported; a value
#: in the environment wins.
NO_CXX_EXTENSIONS = {"FROZENLIST_NO_EXTENSIONS": "1"}
#: How a node's interpreter is started (the daemon's spawn and the systemd unit set it;
#: a value in the environment wins): code objects without column positions
#: (``-X no_debug_ranges``), 0.4 MB less RSS per node (docs/local-grid.md, "Memory").
#: Tracebacks in the log still name every file and line, only without the ``^^^``
#: under the failing expression. It cannot be set from inside a running interpreter.
NODE_PYTHON_ENV = {"PYTHONNODEBUGRANGES": "1"}
#: glibc copies from 2 KiB up (to a bound it derives from the caches) with ``rep
#: movsb``; on this project's AMD EPYC machines (glibc 2.36) that took 23-43 us for a
#: 64 KiB copy, a QUIC datagram's size, which a vector loop does in 1.7 us (sizes from
#: 3 KiB to a few hundred KiB were faster without it, larger ones the same).
#: A datagram is copied several times on its way through aioquic, so the node's
#: interpreter is started with the threshold raised above any copy it makes
#: (:func:`node_environment`; docs/node.md, "How a node's Python is started"): puts
#: 6 % faster on the same grid. Read by the dynamic loader at start, so it cannot be
#: set from inside a running interpreter either.
MEMCPY_TUNABLE = "glibc.cpu.x86_rep_movsb_threshold"
MEMCPY_THRESHOLD = "0x10000000"


def node_environment(environ: Mapping[str, str], *, amd64: bool | None = None) -> dict[str, str]:
    """The environment of a node's interpreter (the daemon's spawn; the systemd unit
    renders it from an empty ``environ``): ``environ`` with :data:`NODE_PYTHON_ENV`
    where it sets nothing, and on AMD (or Hygon) x86-64 with glibc (``amd64``, else
    detected) :data:`MEMCPY_TUNABLE` added to ``GLIBC_TUNABLES`` unless that already
    sets it."""
    env = {**NODE_PYTHON_ENV, **environ}
    if not (_glibc_on_amd64() if amd64 is None else amd64):
        return env
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    if not any(t.split("=", 1)[0] == MEMCPY_TUNABLE for t in tunables):
        env["GLIBC_TUNABLES"] = ":".join([*tunables, f"{MEMCPY_TUNABLE}={MEMCPY_THRESHOLD}"])
    return env


@functools.cache
def _glibc_on_amd64() -> bool:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False  # musl and others: no tunables
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return "AuthenticAMD" in line or "HygonGenuine" in line
    except (OSError, ValueError):
        return False
    return False


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``run``: the full command line's subcommand and :func:`main`
    share them, so ``p2pstore run`` parses the same either way."""
    parser.add_argument("dir", metavar="DIR", nargs="?", help=NODE_DIR_HELP)
    parser.add_argument("--daemonized", action="store_true", help=argparse.SUPPRESS)


def run_node(directory: str | None, daemonized: bool) -> int:
    """Run the node in DIR (else ``$P2PSTORE_NODE``, else the default node) until it
    stops; returns its exit code. A daemon works in its node directory and logs only
    to the file (its stderr is ``logs/daemon.out``). Sets :data:`NO_CXX_EXTENSIONS`
    and tunes the allocator before any thread exists: a thread that allocates before
    the arena limit gets a malloc arena of its own, whose top ``malloc_trim`` never
    gives back (p2pstore/immutable/allocator.py)."""
    tune_allocator()
    for name, value in NO_CXX_EXTENSIONS.items():
        os.environ.setdefault(name, value)
    root = resolve_node_dir(directory)
    if daemonized:
        os.chdir(root)
    from .runner import NodeRunner  # after the allocator is tuned; the network stack

    runner = NodeRunner(root, log_to_stderr=not daemonized)
    _freeze_imports()
    return runner.run()


def _freeze_imports() -> None:
    """What the process has imported lives as long as it does: move it out of the
    cyclic collector's way (``gc.freeze``) before the node allocates anything, so the
    full collections a quiet node runs (``NodeRunner._trim_when_quiet``) and
    the collector's own walk only what the node allocated since: about 2 ms instead of
    20-40 on a busy 2-core machine."""
    from p2pstore.web.server import ApiServer  # noqa: F401 - the runner's, imported at start

    gc.collect()
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """``p2pstore run [DIR]`` (argv without ``run``); exit codes as the full CLI's."""
    parser = argparse.ArgumentParser(prog="p2pstore run")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_node(args.dir, args.daemonized)
    except (ConfigError, BootstrapErrors) as e:
        print(f"p2pstore: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (IdentityError, NodeError, OSError, KeyboardInterrupt) as e:
        return failure_exit(e)


def failure_exit(e: IdentityError | NodeError | OSError | KeyboardInterrupt) -> int:
    """Say what stopped a command (nothing for ^C) and return its exit code: 2 for a
    bad identity, 130 for ^C, else 1. The full command line ends the same way."""
    if isinstance(e, KeyboardInterrupt):
        return 130
    print(f"p2pstore: {e}", file=sys.stderr)
    return 2 if isinstance(e, IdentityError) else 1


if __name__ == "__main__":
    sys.exit(main())

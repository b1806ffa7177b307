"""The ``p2pstore`` command (``python -m p2pstore.cli``): ``p2pstore run ...`` goes to
the node's own entry point, everything else to the full command line.

A running node is this process for as long as it runs, so ``run`` must not pay for
the modules of the other commands (the HTTP client, the backup database, the web-UI
launcher: about 2 MB of RSS per node). Only the plain ``p2pstore run [DIR]`` form, the
one the daemon and the systemd unit use, takes the short path; ``p2pstore --node DIR
run`` parses as any other command and runs the same :func:`run_node`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        from .node.main import main as run_main

        return run_main(args[1:])
    from .cli_commands import main as commands_main

    return commands_main(argv)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m p2pstore.testing.dev_server``: a development API server on 127.0.0.1 with the
in-memory backend and an in-memory vdrive, for working on the shell and the web UI
without a grid. Prints the URL, the token and a one-time web-UI login link,
serves until Ctrl-C. Nothing is persistent; this is not how nodes serve the API
(see docs/http-api.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys

from p2pstore.web.server import ApiServer
from p2pstore.web.ui import UI_STATE

from .memory_app import MemoryApplication
from .memory_vdrive import MemoryVdrive


async def _serve(port: int, token: str, vdrive: bool) -> None:
    backend = MemoryApplication(vdrive=MemoryVdrive() if vdrive else None)
    server = ApiServer(backend, token, port=port)
    await server.start()
    print(f"p2pstore dev API (memory backend) at {server.url}", flush=True)
    print(f"token: {token}", flush=True)
    if UI_STATE in server.app:
        print(f"web UI (one-time login link): {server.app[UI_STATE].login_ticket_url(server.url)}")
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2pstore.testing.dev_server", description=__doc__)
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: any)")
    p.add_argument("--token", help="API token (default: a random one, printed)")
    p.add_argument("--no-vdrive", action="store_true", help="answer vdrive-unavailable")
    args = p.parse_args(argv)
    token = args.token or secrets.token_urlsafe(24)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, token, not args.no_vdrive))
    return 0


if __name__ == "__main__":
    sys.exit(main())

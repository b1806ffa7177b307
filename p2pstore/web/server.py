"""Serving the API (and, by default, the web UI of ``p2pstore/web/ui/``): bind
127.0.0.1 (port from config, 0 = any), report the bound port, shut down within
``ApiLimits.shutdown_timeout``.

:class:`ApiServer` is the one I/O owner of the HTTP side: ``start()`` binds or
raises ``OSError`` (the runner reports it as a ``[node] web_port`` problem);
``close()`` stops accepting, lets running requests finish (bounded), and is safe
to call after a failed or no start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from p2pstore.app.contract import Application

from . import bad_input_log
from .context import ApiLimits
from .http_app import create_app, runner_kwargs
from .ui import add_ui_routes

log = logging.getLogger(__name__)


class ApiServer:
    def __init__(
        self,
        backend: Application,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ApiLimits | None = None,
        ui: Callable[[web.Application], None] | None = add_ui_routes,
    ) -> None:
        self.limits = limits or ApiLimits()
        self.app = create_app(backend, token, limits=self.limits, ui=ui)
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        if self._site is None:
            raise RuntimeError("the API server is not started")
        return self._site.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        bad_input_log.install()  # one line per bad request source, no traceback
        runner = web.AppRunner(self.app, **runner_kwargs(self.limits))
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.host, self._port)
        await site.start()
        self._site = site
        log.info("HTTP API listening on %s", self.url)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

"""A small headless-Chromium driver over the DevTools protocol (CDP), for the web
UI's browser tests. No network downloads: it runs the system's Chromium
(``/usr/bin/chromium``, installed by ``make browser``) and talks to it over the
websocket Chromium prints on stderr, with aiohttp's websocket client.

Only what the tests need: open a page, evaluate script, wait for a condition,
set a file input, allow downloads, take a full-page screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
_WS = re.compile(rb"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    """``$P2PSTORE_CHROMIUM`` (a path, or ``none`` to skip), else a system Chromium."""
    forced = os.environ.get("P2PSTORE_CHROMIUM")
    if forced:
        return None if forced == "none" else forced
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class CdpError(Exception):
    pass


class Browser:
    def __init__(
        self, proc: asyncio.subprocess.Process, http: aiohttp.ClientSession, ws: Any, tmp: str
    ) -> None:
        self.proc = proc
        self.http = http
        self.ws = ws
        self.tmp = tmp
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, chromium: str) -> AsyncIterator[Browser]:
        tmp = tempfile.mkdtemp(prefix="p2ps-chromium-")
        proc = await asyncio.create_subprocess_exec(
            chromium,
            *FLAGS,
            f"--user-data-dir={tmp}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        http = aiohttp.ClientSession()
        browser: Browser | None = None
        try:
            assert proc.stderr is not None
            url = None
            async with asyncio.timeout(30):
                while url is None:
                    line = await proc.stderr.readline()
                    if not line:
                        raise CdpError("Chromium exited before opening DevTools")
                    m = _WS.search(line)
                    url = m.group(1).decode() if m else None
            ws = await http.ws_connect(url, max_msg_size=0)
            browser = cls(proc, http, ws, tmp)
            # Keep draining stderr so Chromium never blocks on a full pipe.
            drain = asyncio.create_task(proc.stderr.read())
            try:
                yield browser
            finally:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
        finally:
            if browser is not None:
                await browser._close()
            await http.close()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.send("Browser.close")
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            doc = msg.json()
            if "id" in doc:
                fut = self._waiting.pop(doc["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(doc)
            else:
                self.events.append(doc)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(CdpError("the DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        await self.ws.send_json(msg)
        async with asyncio.timeout(30):
            reply = await fut
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self, *, javascript: bool = True, width: int = 1200) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        if not javascript:
            await page.send("Emulation.setScriptExecutionDisabled", {"value": True})
        return page

    async def allow_downloads(self, folder: Path) -> None:
        await self.send(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(folder), "eventsEnabled": True},
        )


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def eval(self, expression: str) -> Any:
        out = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in out:
            raise CdpError(f"script failed: {out['exceptionDetails'].get('text')}: {expression}")
        return out["result"].get("value")

    async def wait_for(self, expression: str, within: float = 20.0) -> Any:
        """Poll ``expression`` until it is truthy (navigations in between are fine)."""
        async with asyncio.timeout(within):
            while True:
                with contextlib.suppress(CdpError):
                    value = await self.eval(expression)
                    if value:
                        return value
                await asyncio.sleep(0.05)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for(
            f"document.readyState === 'complete' && location.href !== 'about:blank'"
            f" && {url!r}.length > 0"
        )

    async def set_files(self, selector: str, paths: list[Path]) -> None:
        doc = await self.send("DOM.getDocument", {"depth": 0})
        node = await self.send(
            "DOM.querySelector", {"nodeId": doc["root"]["nodeId"], "selector": selector}
        )
        if not node.get("nodeId"):
            raise CdpError(f"no element {selector}")
        await self.send(
            "DOM.setFileInputFiles",
            {"files": [str(p) for p in paths], "nodeId": node["nodeId"]},
        )

    async def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (works with scripts disabled)."""
        doc = await self.send("DOM.getDocument", {"depth": 0})
        node = await self.send(
            "DOM.querySelector", {"nodeId": doc["root"]["nodeId"], "selector": selector}
        )
        if not node.get("nodeId"):
            raise CdpError(f"no element {selector}")
        await self.send("DOM.scrollIntoViewIfNeeded", {"nodeId": node["nodeId"]})
        box = await self.send("DOM.getBoxModel", {"nodeId": node["nodeId"]})
        quad = box["model"]["content"]
        x = (quad[0] + quad[2] + quad[4] + quad[6]) / 4
        y = (quad[1] + quad[3] + quad[5] + quad[7]) / 4
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    async def screenshot(self, path: Path) -> None:
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": max(1, int(size["width"])),
            "height": min(max(1, int(size["height"])), 8000),
            "scale": 1,
        }
        shot = await self.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        _save(path, base64.b64decode(shot["data"]))


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

"""The web UI in a real headless Chromium (DevTools protocol, tests/cdp_browser.py):
log in through a one-time link, make a directory, upload through the form (with
the progress script, and again with scripts disabled), see the files listed,
download one through its link and compare bytes, seek with a Range request, and
save screenshots of the front page, a directory page and a details page to
test-artifacts/.

Skipped, saying why, where Chromium is not installed (``make browser`` installs
it from the system's package manager when it can)."""

from __future__ import annotations

import asyncio
import html
import io
import os
import struct
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from p2pstore.app.vpath import parse_vpath
from p2pstore.web.context import TRANSFERS, ApiLimits
from p2pstore.web.http_app import create_app, runner_kwargs
from p2pstore.web.ui import UI_STATE, add_ui_routes

from ..cdp_browser import Browser, find_chromium
from ..webui_helpers import TOKEN, make_backend

ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"
CHROMIUM = find_chromium()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (`make browser` installs the Debian package "
    "`chromium` when run as root or with passwordless sudo); browser tests skipped",
)


def _complete(path: Path, size: int) -> bytes | None:
    return path.read_bytes() if path.exists() and path.stat().st_size == size else None


async def _wait_file(path: Path, size: int) -> bytes:
    async with asyncio.timeout(20):
        while True:
            data = _complete(path, size)
            if data is not None:
                return data
            await asyncio.sleep(0.05)


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", (i * 300) % 6000 - 3000) for i in range(16000)))
    return out.getvalue()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _recent(app: web.Application) -> list[dict[str, Any]]:
    return app[TRANSFERS].recent() + app[TRANSFERS].snapshot()


def _other_site() -> web.Application:
    """A page on another site with a link to ``?to=``, like a chat or mail page."""

    async def page(request: web.Request) -> web.Response:
        to = html.escape(request.query["to"])
        return web.Response(text=f'<a id="go" href="{to}">log in</a>', content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    return app


async def test_browser_upload_list_download_and_screenshots(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    backend = make_backend(vdrive="p2pstore-vdrive")  # the real vdrive package
    limits = ApiLimits()
    app = create_app(backend, TOKEN, limits=limits, ui=add_ui_routes)
    server = TestServer(app, host="127.0.0.1", **runner_kwargs(limits))
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    other = TestServer(_other_site(), host="127.0.0.1")  # "localhost": another site
    await other.start_server()
    big = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "big file.bin").write_bytes(big)
    (tmp_path / "plain.txt").write_bytes(b"uploaded without javascript\n" * 20)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        async with Browser.launch(CHROMIUM) as browser:
            page = await browser.new_page()
            await page.goto(base + "/")  # not logged in: the login page
            assert await page.wait_for("location.pathname === '/login'")
            await page.screenshot(ARTIFACTS / "webui-login.png")
            # Log in: the one-time link, clicked on a page of another site (as from a
            # chat or mail page), sets the session cookie and moves on to "/" logged in.
            link = app[UI_STATE].login_ticket_url(base)
            await page.goto(f"http://localhost:{other.port}/?to={link}")
            await page.click("#go")
            assert await page.wait_for("location.pathname === '/' && document.title")
            h1 = await page.eval("document.querySelector('h1').textContent")
            assert h1 == "Node status"
            assert "alice-laptop" in await page.eval("document.body.innerText")
            await page.screenshot(ARTIFACTS / "webui-front.png")

            # Make a directory through its form.
            await page.goto(base + "/drive/shared/")
            await page.eval("document.getElementById('mk-name').value = 'media'")
            await page.click("form[action='/op/mkdir'] button")
            await page.wait_for("document.body.innerText.includes('Made directory media')")

            # Upload through the form, with the progress script.
            await page.goto(base + "/drive/shared/media/")
            await page.set_files("#up-file", [tmp_path / "big file.bin"])
            await page.click("#upload button[type=submit]")
            await page.wait_for("document.body.innerText.includes('Uploaded big file.bin')")
            # The script sent it (XMLHttpRequest, then location.reload()), not the form.
            nav = "performance.getEntriesByType('navigation')[0].type"
            assert await page.eval(nav) == "reload"
            row = await page.eval(
                "[...document.querySelectorAll('tbody tr')].map(r => r.innerText).join('|')"
            )
            assert "big file.bin" in row and "3.0 MiB" in row and "application/octet-stream" in row
            await page.screenshot(ARTIFACTS / "webui-directory.png")

            # Download through the link and compare bytes.
            await browser.allow_downloads(downloads)
            await page.click("a.file")
            got = await _wait_file(downloads / "big file.bin", len(big))
            assert got == big

            # Seek as a media player would: a Range request from the page.
            part = await page.eval(
                "fetch(document.querySelector('a.file').href,"
                " {headers: {Range: 'bytes=1000-1009'}})"
                ".then(async r => [r.status, r.headers.get('content-range'),"
                " Array.from(new Uint8Array(await r.arrayBuffer()))])"
            )
            assert part[0] == 206 and part[1] == f"bytes 1000-1009/{len(big)}"
            assert bytes(part[2]) == big[1000:1010]

            # The details page, caps shown on request.
            await page.goto(base + "/entry/shared/media/big%20file.bin?caps=1")
            assert "p2ps:chk:" in await page.eval("document.body.innerText")
            await page.screenshot(ARTIFACTS / "webui-entry.png")

            # Delete from the listing: a confirmation page first.
            await page.goto(base + "/drive/shared/")
            await page.click("button[aria-label='delete media']")
            await page.wait_for("document.body.innerText.includes('Yes, delete it')")
            await page.screenshot(ARTIFACTS / "webui-confirm-delete.png")
            await page.goto(base + "/drive/shared/media/")  # not deleted: go back

            # Viewing audio in the browser: its media viewer fetches the file itself,
            # with Range (so it can seek), which the view CSP must allow.
            tone = await backend.upload(_chunks(_wav()), size_hint=None, mode="convergent")
            await backend.vdrive_link(
                parse_vpath("/media/tone.wav"), tone.cap, replace=False, expected_sequence=None
            )
            await page.goto(base + "/drive/shared/media/tone.wav")
            assert await page.wait_for(
                "document.querySelector('video') && document.querySelector('video').readyState >= 1"
            )
            tones = [t for t in _recent(app) if t["name"] == "tone.wav"]
            assert len(tones) >= 2  # the navigation, then the player's own (ranged) fetch

            # A link to a drive page on another site opens it, still logged in.
            await page.goto(f"http://localhost:{other.port}/?to={base}/drive/shared/media/")
            await page.click("#go")
            assert await page.wait_for(
                "location.pathname === '/drive/shared/media/' && "
                "document.querySelector('h1').textContent === 'media'"
            )

            # The same form with scripts disabled: a plain multipart POST + redirect.
            plain = await browser.new_page(javascript=False)
            await plain.goto(base + "/drive/shared/media/")
            await plain.set_files("#up-file", [tmp_path / "plain.txt"])
            await plain.click("#upload button[type=submit]")
            await plain.wait_for("document.body.innerText.includes('Uploaded plain.txt')")
            names = await plain.eval(
                "[...document.querySelectorAll('a.file')].map(a => a.textContent)"
            )
            assert names == ["big file.bin", "plain.txt", "tone.wav"]
            assert await plain.eval(nav) == "navigate"  # the plain POST + 303 redirect
        listing = await backend.vdrive_list(parse_vpath("/media"))
        assert {e.name for e in listing.entries} == {"big file.bin", "plain.txt", "tone.wav"}
    finally:
        await other.close()
        await server.close()
    assert (ARTIFACTS / "webui-front.png").stat().st_size > 1000
    assert (ARTIFACTS / "webui-directory.png").stat().st_size > 1000

"""A live directory in the web UI of a real node of a real local grid (``p2pstore
grid up``) in headless Chromium: made by the CLI, opened by its write cap at
``/mutable/``, browsed from its page's Browse link, a directory made and a file
uploaded with the script (the page reloads), a file put by another node's CLI seen
on reload, a download; the read cap opened: the same files, no forms, no write cap;
back with the write cap, a file deleted from its row (the confirmation page).
No URL holds a cap. Screenshot: test-artifacts/webui-live-dir.png. Skipped, saying
why, without Chromium."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..cdp_browser import Browser, find_chromium
from ..realgrid import cli, local_grid

ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"
CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed"),
]

TEXT = "document.body.innerText"


async def test_a_live_directory_in_the_browser_on_a_real_grid(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    data = os.urandom(120_000)
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "b.txt").write_text("from node2\n")
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        made = json.loads(cli("mkdir", "--live", "--json", "--node", grid.node(1)).stdout)
        write, read = made["write_cap"], made["read_cap"]
        link = cli("web-url", "--node", grid.node(1)).stdout.strip()
        base = link.split("/login/")[0]
        async with Browser.launch(CHROMIUM) as browser:
            page = await browser.new_page(width=1280)
            await page.goto(link)
            await page.wait_for("location.pathname === '/'")

            await page.goto(base + "/mutable/")
            await page.eval(f"document.getElementById('mo-cap').value = {json.dumps(write)}")
            await page.click("form[action='/op/mutable-open'] button")
            await page.wait_for("!!document.getElementById('live-browse')")
            await page.click("#live-browse")
            await page.wait_for(f"{TEXT}.includes('This directory is empty.')")
            assert await page.eval("document.getElementById('live-write-cap').textContent") == (
                write
            )

            await page.eval("document.getElementById('mk-name').value = 'docs'")
            await page.click("form[action='/op/mkdir'] button")
            await page.wait_for("!!document.querySelector('a.dir')")
            await page.click("a.dir")
            await page.wait_for(f"{TEXT}.includes('Parent directory')")
            here = await page.eval("location.pathname")
            assert here.endswith("/dir/docs/") and "p2ps" not in here, here
            await page.set_files("#up-file", [tmp_path / "a.bin"])
            await page.click("#upload button[type=submit]")
            await page.wait_for(f"{TEXT}.includes('a.bin')", 40)

            # another node changes it: seen on reload
            cli("put", "--node", grid.node(2), tmp_path / "b.txt", f"{write}/docs/b.txt")
            await page.goto(base + here)
            await page.wait_for(f"{TEXT}.includes('b.txt')", 20)
            got = await page.eval(
                "fetch([...document.querySelectorAll('a.file')]"
                ".find(a => a.textContent === 'a.bin').href)"
                ".then(async r => Array.from(new Uint8Array(await r.arrayBuffer())).length)"
            )
            assert got == len(data)
            hrefs = await page.eval("[...document.querySelectorAll('a')].map(a => a.href)")
            assert not [h for h in hrefs if "p2ps" in h], hrefs
            await page.screenshot(ARTIFACTS / "webui-live-dir.png")

            # the read cap: the same files, no forms, no write cap
            await page.goto(base + "/mutable/")
            await page.eval(f"document.getElementById('mo-cap').value = {json.dumps(read)}")
            await page.click("form[action='/op/mutable-open'] button")
            await page.wait_for("!!document.getElementById('live-browse')")
            await page.click("#live-browse")
            await page.wait_for("!!document.querySelector('a.dir')")
            await page.click("a.dir")
            await page.wait_for(f"{TEXT}.includes('b.txt')")
            text = await page.eval(TEXT)
            assert "a.bin" in text and "cannot make one" in text and write not in text
            assert await page.eval("document.getElementById('upload')") is None

            # with the write cap again: delete a file from its row, confirmed
            await page.goto(base + here)
            await page.wait_for("!!document.querySelector(\"button[aria-label='delete b.txt']\")")
            await page.click("button[aria-label='delete b.txt']")
            await page.wait_for(f"{TEXT}.includes('Yes, delete it')")
            assert "p2ps" not in await page.eval("location.pathname")
            await page.click("button.danger")
            await page.wait_for(f"{TEXT}.includes('Deleted b.txt.')", 20)
            assert await page.eval("location.pathname") == here
            rows = await page.eval("[...document.querySelectorAll('a.file')].map(a => a.text)")
            assert rows == ["a.bin"], rows

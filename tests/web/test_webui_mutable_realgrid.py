"""Mutable files in the web UI of a real node of a real local grid (``p2pstore grid
up``: daemons, QUIC, DHT, storage slots) in headless Chromium: the directory page's
upload form with "mutable" makes one and lands on its page (the script follows the
reply's location); the page shows the version, where the root is held and the
caps; a download; a new version through the page's form; a version published
meanwhile from another node's CLI makes the page's stale form a conflict; the read
cap opened on the UI reads and cannot publish. Screenshots go to
test-artifacts/webui-mutable-*.png. Skipped, saying why, without Chromium."""

from __future__ import annotations

import json
import os
import re
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


async def test_mutable_file_pages_on_a_real_grid_node(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    v1, v2, v3 = os.urandom(150_000), b"version two\n" * 100, b"version three from node2\n"
    for name, data in (("notes.bin", v1), ("v2.bin", v2), ("v3.bin", v3), ("late.bin", b"x")):
        (tmp_path / name).write_bytes(data)
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        link = cli("web-url", "--node", grid.node(1)).stdout.strip()
        base = link.split("/login/")[0]
        async with Browser.launch(CHROMIUM) as browser:
            page = await browser.new_page(width=1280)
            await page.goto(link)
            await page.wait_for("location.pathname === '/'")

            # the directory page's upload form, "mutable" ticked: lands on the file's page
            await page.goto(base + "/drive/shared/")
            await page.set_files("#up-file", [tmp_path / "notes.bin"])
            await page.click("#up-mutable")
            await page.click("#upload button[type=submit]")
            await page.wait_for(f"{TEXT}.includes('Made a mutable file, version 1')", 40)
            here = await page.eval("location.pathname")
            assert re.fullmatch(r"/mutable/[A-Za-z0-9_-]+", here), here
            text = await page.eval(TEXT)
            assert "opened with its write cap" in text and "146.5 KiB" in text, text
            held = re.search(r"Root held by\s+(\d+) of (\d+) peers asked", text)
            assert held and held.group(1) == held.group(2) and int(held.group(2)) >= 3, text
            caps = await page.eval(
                "Object.fromEntries([...document.querySelectorAll('table.facts tr')]"
                ".filter(r => r.querySelector('code.id'))"
                ".map(r => [r.querySelector('th').textContent,"
                " r.querySelector('code.id').textContent]))"
            )
            write_cap, read_cap = caps["Write cap"], caps["Read cap"]
            assert write_cap.startswith("p2ps:mut:") and read_cap.startswith("p2ps:mut-ro:")
            assert "p2ps:" not in await page.eval("location.href")
            got = await page.eval(
                "fetch(document.getElementById('mut-download').href)"
                ".then(async r => [r.headers.get('x-p2pstore-sequence'),"
                " Array.from(new Uint8Array(await r.arrayBuffer())).length])"
            )
            assert got == ["1", len(v1)]
            await page.screenshot(ARTIFACTS / "webui-mutable-file.png")

            # the next version through the page's form
            await page.set_files("#up-file", [tmp_path / "v2.bin"])
            await page.click("#upload button[type=submit]")
            await page.wait_for(f"{TEXT}.includes('Published version 2')", 40)
            assert await page.eval("document.getElementById('mut-seq').textContent") == "2"

            # node2 publishes version 3 meanwhile: this page's form (expecting 2) conflicts
            cli("put", "--node", grid.node(2), tmp_path / "v3.bin", write_cap)
            await page.set_files("#up-file", [tmp_path / "late.bin"])
            await page.click("#upload button[type=submit]")
            msg = await page.wait_for(
                "(document.getElementById('up-status') || {}).textContent.includes('failed')"
                " && document.getElementById('up-status').textContent",
                40,
            )
            assert "the latest version is 3, not 2" in msg, msg
            out = tmp_path / "from-node3.bin"
            cli("get", "--node", grid.node(3), read_cap, out)
            assert out.read_bytes() == v3  # the late upload was not published

            # the read cap, opened on the UI: reads version 3, no publish form
            await page.goto(base + "/mutable/")
            await page.eval(f"document.getElementById('mo-cap').value = {json.dumps(read_cap)}")
            await page.click("form[action='/op/mutable-open'] button")
            await page.wait_for(f"{TEXT}.includes('opened with its read cap')")
            text = await page.eval(TEXT)
            assert "Publish a new version" not in text and write_cap not in text
            assert await page.eval("document.getElementById('mut-seq').textContent") == "3"
            await page.screenshot(ARTIFACTS / "webui-mutable-read.png")

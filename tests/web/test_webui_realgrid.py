"""The web UI of a real node of a real local grid (``p2pstore grid up``: daemons,
QUIC, DHT, storage, vdrive) in headless Chromium: the front page shows the node,
its reachable seed, its peers with nicknames and round-trip times, DHT and storage;
a shared directory made and filled through the CLI on another node is listed.
Screenshots go to test-artifacts/webui-realgrid-*.png.

Skipped, saying why, where Chromium is not installed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from ..cdp_browser import Browser, find_chromium
from ..realgrid import cli, local_grid

ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"
CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed"),
]


async def test_front_and_directory_pages_of_a_real_grid_node(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        n1, n2 = grid.node(1), grid.node(2)
        (tmp_path / "notes.txt").write_text("hello from node2\n" * 50)
        cli("mkdir", "--node", n2, "shared:/docs")
        cli("put", "--node", n2, tmp_path / "notes.txt", "shared:/docs/notes.txt")
        link = cli("web-url", "--node", n1).stdout.strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/login/\S+", link), link
        base = link.split("/login/")[0]
        async with Browser.launch(CHROMIUM) as browser:
            page = await browser.new_page(width=1280)
            await page.goto(link)
            assert await page.wait_for("location.pathname === '/' && document.title")
            # seeds' and peers' round-trip times and nicknames come with the first pings
            text = ""
            for _ in range(40):
                text = await page.eval("document.body.innerText")
                seeds = text.split("Bootstrap seeds")[1].split("Peers")[0]
                if "node3" in text and "holds shares" in text and " ms" in seeds:
                    break
                await asyncio.sleep(0.5)
                await page.goto(base + "/")
            for want in ("node1", "1 of 1 reachable", "introducer", "node2", "node3"):
                assert want in text, want
            assert " ms" in seeds and "holds shares" in text and "no storage" in text, text
            node_part = text.split("Bootstrap seeds")[0]
            assert "not reported" not in node_part, node_part
            await page.screenshot(ARTIFACTS / "webui-realgrid-front.png")
            await page.goto(base + "/drive/shared/docs/")
            await page.wait_for("document.body.innerText.includes('notes.txt')")
            row = await page.eval(
                "[...document.querySelectorAll('tbody tr')].map(r => r.innerText).join('|')"
            )
            assert "notes.txt" in row and "850 B" in row, row
            await page.screenshot(ARTIFACTS / "webui-realgrid-directory.png")

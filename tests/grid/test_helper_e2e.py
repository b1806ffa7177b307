"""The upload helper on real node processes (docs/helper.md): node1 serves as a
helper, node2 sends its uploads through it; the files read back byte-identical from
another node, a file the grid holds sends nothing, an upload from node2's web UI (in
headless Chromium, where installed) says it went through the helper, and with the
helper gone node2 uploads directly and says so."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ..cdp_browser import Browser, find_chromium
from ..realgrid import cli

CHROMIUM = find_chromium()

pytestmark = [pytest.mark.e2e]


def _status(node: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cli("status", "--node", node, "--json").stdout)
    return doc


def _helper(node: Path) -> dict[str, Any]:
    figures: dict[str, Any] = _status(node)["api"]["details"]["helper"]
    return figures


@pytest.mark.timeout(300)
def test_uploads_through_a_helper_and_without_it(tmp_path: Path) -> None:
    root = tmp_path / "grid"
    try:
        cli("grid", "up", "--nodes", "4", root, timeout=120.0)
        helper_id = _status(root / "node1")["node_id"]
        cli("grid", "down", root, timeout=120.0)
        with (root / "node1" / "p2pstore.toml").open("a", encoding="utf-8") as f:
            f.write("\n[helper]\nenabled = true\n")
        with (root / "node2" / "p2pstore.toml").open("a", encoding="utf-8") as f:
            f.write(f'\n[helper]\nuse = "always"\nhelpers = ["seeds", "{helper_id}"]\n')
        cli("grid", "up", root, timeout=120.0)

        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(3_000_000))
        put = cli("put", "--node", root / "node2", src, timeout=120.0)
        cap = put.stdout.strip()
        assert f"sent through upload helper {helper_id[:16]}" in put.stderr
        back = tmp_path / "back.bin"
        cli("get", "--node", root / "node3", "-f", cap, back, timeout=120.0)
        assert back.read_bytes() == src.read_bytes()
        served = _helper(root / "node1")
        assert served["serving"] is True and served["uploads_placed"] == 1
        assert served["bytes_received"] == 3_000_000  # the ciphertext, once
        assert "serving: 1 placed" in cli("status", "--node", root / "node1").stdout

        # the same file again: the helper finds it in the grid, nothing is sent
        again = cli("put", "--node", root / "node2", src, "--json", timeout=120.0)
        assert json.loads(again.stdout)["cap"] == cap
        assert json.loads(again.stdout)["details"]["helper"] == helper_id
        served = _helper(root / "node1")
        assert served["uploads_present"] == 1 and served["bytes_received"] == 3_000_000

        # a drive path, the way the shell and the web UI upload
        linked = cli("put", "--node", root / "node2", src, "private:/big.bin", timeout=120.0)
        assert "upload helper" in linked.stderr
        if CHROMIUM is not None:
            page_text = asyncio.run(_upload_in_the_web_ui(root / "node2", tmp_path))
            assert f"Sent through upload helper {helper_id[:16]}" in page_text
            assert _helper(root / "node1")["uploads_placed"] == 2

        # random keys go through the helper too: a local file read in place, and the
        # same bytes sent over HTTP (spooled by the node first, as a pipe's are)
        for how in (("--mode", "random"), ("--mode", "random", "--send-bytes")):
            rnd = cli("put", "--node", root / "node2", *how, src, timeout=120.0)
            assert f"sent through upload helper {helper_id[:16]}" in rnd.stderr
            assert rnd.stdout.strip() != cap  # a key of its own
            cli("get", "--node", root / "node3", "-f", rnd.stdout.strip(), back, timeout=120.0)
            assert back.read_bytes() == src.read_bytes()

        # the helper gone: node2 uploads directly, and says why
        cli("stop", root / "node1", timeout=60.0)
        other = tmp_path / "other.bin"
        other.write_bytes(os.urandom(1_000_000))
        direct = cli("put", "--node", root / "node2", other, timeout=120.0)
        assert "upload helper failed" in direct.stderr
        assert "uploaded directly instead" in direct.stderr
        cli("get", "--node", root / "node3", "-f", direct.stdout.strip(), back, timeout=120.0)
        assert back.read_bytes() == other.read_bytes()
        assert _helper(root / "node2")["use"] == "always"
    finally:
        cli("grid", "down", root, check=False, timeout=120.0)


async def _upload_in_the_web_ui(node: Path, tmp_path: Path) -> str:
    """Upload a fresh file through the drive page's form; the page's text after it."""
    assert CHROMIUM is not None
    web = tmp_path / "web.bin"
    web.write_bytes(os.urandom(500_000))
    link = cli("web-url", "--node", node).stdout.strip()
    base = link.split("/login/")[0]
    async with Browser.launch(CHROMIUM) as browser:
        page = await browser.new_page(width=1280)
        await page.goto(link)
        assert await page.wait_for("location.pathname === '/' && document.title")
        await page.goto(base + "/drive/private/")
        await page.set_files("#up-file", [web])
        await page.click("#upload button[type=submit]")
        await page.wait_for("document.body.innerText.includes('Uploaded web.bin')", within=60)
        text: str = await page.eval("document.body.innerText")
        return text

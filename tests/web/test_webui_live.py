"""The web UI's live-directory pages over a real aiohttp server, with the in-memory
application that has mutable files and a memory vdrive that opens live directories:
open one by its write cap (a session handle), browse it, make a directory, upload
into it, download from it; open its read cap: the same files, no forms, no write
cap, and a forged change refused; no URL ever holds a cap."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pstore.testing.memory_mutable import MemoryMutableApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.vdrive.dirnode import Directory

from ..webui_helpers import AUTH, PARAMS, login, upload_form
from .test_webui_mutable import _links, _open, _start


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    backend = MemoryMutableApplication(params=PARAMS, vdrive=MemoryVdrive(), max_bytes=64 << 20)
    c = await _start(backend)
    yield c
    await c.close()


async def _new_live(client: TestClient[Any, Any]) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/file",
        params={"mutable": "true", "dir": "true"},
        data=Directory().encode(),
        headers=AUTH,
    )
    assert r.status == 201, await r.text()
    doc: dict[str, Any] = await r.json()
    return doc


def _no_cap_in_links(page: str) -> None:
    assert not [u for u in _links(page) if "p2ps" in u]


async def test_browse_change_and_share_a_live_directory(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    made = await _new_live(client)
    write, read = made["write_cap"], made["read_cap"]

    r = await _open(client, csrf, write)
    assert r.status == 303
    handle = r.headers["Location"].rsplit("/", 1)[-1]
    page = await (await client.get(f"/mutable/{handle}")).text()
    assert f'href="/mutable/{handle}/dir/"' in page  # the file page links its listing
    root = f"/mutable/{handle}/dir/"
    page = await (await client.get(root)).text()
    assert "This directory is empty." in page
    assert write in page and read in page  # the share panel (opened with the write cap)
    assert 'id="upload"' in page and 'action="/op/mkdir"' in page
    label = re.search(r"live:[a-z2-7]{8}:/", page)
    assert label, page
    _no_cap_in_links(page)

    r = await client.post(
        "/op/mkdir", data={"csrf": csrf, "dir": write, "name": "docs"}, allow_redirects=False
    )
    assert r.status == 303 and r.headers["Location"] == root
    data = os.urandom(150_000)
    r = await client.post(
        "/op/upload",
        data=upload_form(csrf, f"{write}/docs", [("a.bin", data)]),
        allow_redirects=False,
    )
    assert r.status == 303, await r.text()
    assert r.headers["Location"] == f"{root}docs/"
    page = await (await client.get(f"{root}docs/")).text()
    assert "a.bin" in page and "↑ Parent directory" in page
    _no_cap_in_links(page)
    r = await client.get(f"{root}docs/a.bin")
    assert r.status == 200 and await r.read() == data
    assert "attachment" in r.headers["Content-Disposition"]
    listing = await (await client.get(f"{root}docs/", params={"format": "json"})).json()
    assert [e["name"] for e in listing["entries"]] == ["a.bin"]

    # the read cap: every change seen, none made, the write cap not shown
    r = await _open(client, csrf, read)
    ro = r.headers["Location"].rsplit("/", 1)[-1]
    page = await (await client.get(f"/mutable/{ro}/dir/docs/")).text()
    assert "a.bin" in page and "cannot make one" in page
    assert read in page and write not in page
    assert 'id="upload"' not in page and "/op/mkdir" not in page
    assert "live-ro:" in page
    _no_cap_in_links(page)
    r = await client.post(
        "/op/mkdir",
        data={"csrf": csrf, "dir": read, "name": "nope"},
        headers={"Accept": "application/json"},
        allow_redirects=False,
    )
    assert r.status == 403 and (await r.json())["error"]["code"] == "vdrive-refused"

    assert (await client.get("/mutable/nosuchhandle1234/dir/")).status == 404
    assert (await client.get(f"{root}missing/")).status == 404


async def test_make_a_live_directory_from_the_mutable_page(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    page = await (await client.get("/mutable/")).text()
    assert 'action="/op/live-new"' in page
    r = await client.post("/op/live-new", data={"csrf": "stale"}, allow_redirects=False)
    assert r.status == 403
    r = await client.post("/op/live-new", data={"csrf": csrf}, allow_redirects=False)
    assert r.status == 303
    root = r.headers["Location"]
    assert re.fullmatch(r"/mutable/[A-Za-z0-9_-]+/dir/", root), root
    page = await (await client.get(root)).text()
    assert "Made a live directory" in page and "This directory is empty." in page
    assert 'id="upload"' in page and "live:" in page  # opened with the write cap
    op_ids = re.findall(r'name="op_id" value="([0-9a-f]{32})"', page)
    assert len(op_ids) >= 2 and len(set(op_ids)) == len(op_ids)  # one per form, all different
    write = re.search(r'id="live-write-cap">([^<]+)<', page)
    assert write and write.group(1).startswith("p2ps:dir:")
    _no_cap_in_links(page)
    r = await client.post(
        "/op/mkdir", data={"csrf": csrf, "dir": write.group(1), "name": "x"}, allow_redirects=False
    )
    assert r.status == 303 and r.headers["Location"] == root
    assert "x/" in await (await client.get(root)).text()


async def test_delete_and_rename_in_a_live_directory(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    made = await _new_live(client)
    write, read = made["write_cap"], made["read_cap"]
    handle = (await _open(client, csrf, write)).headers["Location"].rsplit("/", 1)[-1]
    root = f"/mutable/{handle}/dir/"
    for name in ("docs", "docs/sub", "old"):
        parent, _, leaf = f"/{name}".rpartition("/")
        r = await client.post(
            "/op/mkdir", data={"csrf": csrf, "dir": f"{write}{parent}", "name": leaf}
        )
        assert r.status == 200, await r.text()
    r = await client.post(
        "/op/upload", data=upload_form(csrf, write, [("a.txt", b"hello")]), allow_redirects=False
    )
    assert r.status == 303
    page = await (await client.get(root)).text()
    assert 'aria-label="delete a.txt"' in page and 'aria-label="rename docs"' in page
    assert 'action="/op/rename"' in page
    _no_cap_in_links(page)

    # rename a file, then move it into a subdirectory by a path from the root
    r = await client.post(
        "/op/rename",
        data={"csrf": csrf, "path": f"{write}/a.txt", "dst": "b.txt"},
        allow_redirects=False,
    )
    assert r.status == 303 and r.headers["Location"] == root
    r = await client.post(
        "/op/rename",
        data={"csrf": csrf, "path": f"{write}/b.txt", "dst": "/docs/c.txt"},
        allow_redirects=False,
    )
    assert r.status == 303 and r.headers["Location"] == f"{root}docs/"
    assert await (await client.get(f"{root}docs/c.txt")).read() == b"hello"
    page = await (await client.get(f"{root}docs/")).text()
    assert re.search(r"Renamed b\.txt to live:[a-z2-7]{8}:/docs/c\.txt\.", page), page
    assert 'aria-label="delete b.txt"' not in await (await client.get(root)).text()

    # delete: a confirmation page first (by handle, no cap in a link); a non-empty
    # directory needs recursive
    r = await client.post("/op/delete", data={"csrf": csrf, "path": f"{write}/docs"})
    page = await r.text()
    assert r.status == 200 and 'name="recursive"' in page and 'value="yes"' in page
    assert f'href="{root}"' in page
    _no_cap_in_links(page)
    r = await client.post(
        "/op/delete",
        data={"csrf": csrf, "path": f"{write}/docs", "confirm": "yes"},
        headers={"Accept": "application/json"},
    )
    assert r.status == 409 and (await r.json())["error"]["code"] == "directory-not-empty"
    r = await client.post(
        "/op/delete",
        data={"csrf": csrf, "path": f"{write}/docs", "confirm": "yes", "recursive": "1"},
        allow_redirects=False,
    )
    assert r.status == 303 and r.headers["Location"] == root
    r = await client.post(
        "/op/delete",
        data={"csrf": csrf, "path": f"{write}/old", "confirm": "yes"},
        allow_redirects=False,
    )
    assert r.status == 303
    page = await (await client.get(root)).text()
    assert "This directory is empty." in page and "Deleted old." in page

    # the read cap: no forms; forged changes refused
    r = await client.post(
        "/op/mkdir", data={"csrf": csrf, "dir": write, "name": "keep"}, allow_redirects=False
    )
    ro = (await _open(client, csrf, read)).headers["Location"].rsplit("/", 1)[-1]
    page = await (await client.get(f"/mutable/{ro}/dir/")).text()
    assert "keep/" in page
    assert "/op/delete" not in page and "/op/rename" not in page
    for op, data in (
        ("delete", {"path": f"{read}/keep", "confirm": "yes"}),
        ("rename", {"path": f"{read}/keep", "dst": "gone"}),
    ):
        r = await client.post(
            f"/op/{op}",
            data={"csrf": csrf, **data},
            headers={"Accept": "application/json"},
            allow_redirects=False,
        )
        assert r.status == 403, (op, data, await r.text())
        assert (await r.json())["error"]["code"] == "vdrive-refused"
    r = await client.post("/op/delete", data={"csrf": csrf, "path": f"{read}/keep"})
    assert r.status == 403  # a browser: no confirmation page for a read cap
    assert "keep/" in await (await client.get(f"/mutable/{ro}/dir/")).text()

"""The web UI's mutable-file pages over a real aiohttp server, with the in-memory
application that has mutable files (``p2pstore.testing.memory_mutable``): making
one from the directory page's upload form, its page (kind of cap, latest version,
size, time, where the root is held, the share panel), download, publishing the
next version, a conflict, opening read and verify caps, the refusals, and that no
URL ever holds a cap."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from p2pstore.testing.memory_mutable import MemoryMutableApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.web.context import ApiLimits
from p2pstore.web.http_app import create_app, runner_kwargs
from p2pstore.web.ui import make_ui

from ..webui_helpers import AUTH, PARAMS, TOKEN, csrf_of, login, make_backend, upload_form


async def _start(backend: Any) -> TestClient[Any, Any]:
    limits = ApiLimits()
    app = create_app(backend, TOKEN, limits=limits, ui=make_ui())
    client: TestClient[Any, Any] = TestClient(
        TestServer(app, host="127.0.0.1", **runner_kwargs(limits))
    )
    await client.start_server()
    return client


@pytest.fixture
async def backend() -> MemoryMutableApplication:
    return MemoryMutableApplication(params=PARAMS, vdrive=MemoryVdrive(), max_bytes=64 << 20)


@pytest.fixture
async def client(backend: MemoryMutableApplication) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _start(backend)
    yield c
    await c.close()


def _links(page: str) -> list[str]:
    return re.findall(r'(?:href|src|action)="([^"]*)"', page)


def _code_after(page: str, label: str) -> str:
    m = re.search(re.escape(label) + r'</th><td><code class="id">([^<]+)</code>', page)
    assert m, f"no {label} on the page"
    return m.group(1)


def _publish_form(csrf: str, handle: str, expected: str, data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("csrf", csrf)
    form.add_field("handle", handle)
    form.add_field("expected_sequence", expected)
    form.add_field("file", data, filename="v.bin", content_type="application/octet-stream")
    return form


async def _open(client: TestClient[Any, Any], csrf: str, cap: str) -> aiohttp.ClientResponse:
    return await client.post(
        "/op/mutable-open", data={"csrf": csrf, "cap": cap}, allow_redirects=False
    )


async def test_make_publish_conflict_and_share(
    client: TestClient[Any, Any], backend: MemoryMutableApplication
) -> None:
    csrf = await login(client)
    v1, v2 = os.urandom(200_000), b"version two\n"
    # the directory page's upload form has the mutable option
    page = await (await client.get("/drive/shared/")).text()
    assert 'name="mutable" value="1"' in page
    r = await client.post(
        "/op/upload",
        data=upload_form(csrf, "shared:/", [("notes.txt", v1)], mutable="1"),
        allow_redirects=False,
    )
    assert r.status == 303, await r.text()
    where = r.headers["Location"]
    assert re.fullmatch(r"/mutable/[A-Za-z0-9_-]{16}", where), where
    handle = where.rsplit("/", 1)[1]
    listing = await (await client.get("/drive/shared/?format=json")).json()
    assert listing["entries"] == []  # a mutable file is not linked into the drive

    r = await client.get(where)
    page = await r.text()
    assert r.status == 200 and "Made a mutable file, version 1 (195.3 KiB)." in page
    assert "mutable file, opened with its <strong>write cap</strong>" in page
    assert '<span id="mut-seq">1</span>' in page and "195.3 KiB" in page
    assert "<time datetime=" in page  # the publish time
    assert "1 of 1 peers asked" in page and "Storage index" in page
    write_cap = _code_after(page, "Write cap")
    read_cap = _code_after(page, "Read cap")
    verify_cap = _code_after(page, "Verify cap")
    assert write_cap.startswith("p2ps:mut:") and read_cap.startswith("p2ps:mut-ro:")
    assert verify_cap.startswith("p2ps:mut-verify:")
    assert "The write cap grants changes" in page
    assert 'name="expected_sequence" value="1"' in page and f'value="{handle}"' in page
    assert not any("p2ps:" in link for link in _links(page))  # no cap in any URL
    assert r.headers["Cache-Control"] == "no-store"

    r = await client.get(f"{where}/download")
    assert r.status == 200 and await r.read() == v1
    assert r.headers["X-P2pstore-Sequence"] == "1"
    assert r.headers["Content-Disposition"].startswith("attachment;")
    assert "notes.txt" in r.headers["Content-Disposition"]
    assert r.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"

    # the next version, expecting version 1
    r = await client.post(
        "/op/upload", data=_publish_form(csrf, handle, "1", v2), allow_redirects=False
    )
    assert r.status == 303 and r.headers["Location"] == where
    page = await (await client.get(where)).text()
    assert "Published version 2 (12 B)." in page and '<span id="mut-seq">2</span>' in page
    assert 'name="expected_sequence" value="2"' in page
    assert await (await client.get(f"{where}/download")).read() == v2

    # a form still expecting version 1: a conflict, nothing overwritten
    r = await client.post("/op/upload", data=_publish_form(csrf, handle, "1", b"late"))
    page = await r.text()
    assert r.status == 409 and "(mutable-conflict)" in page
    assert "the latest version is 2, not 1" in page and f'href="{where}"' in page
    r = await client.post(
        "/op/upload",
        data=_publish_form(csrf, handle, "1", b"late"),
        headers={"Accept": "application/json"},
    )
    err = (await r.json())["error"]
    assert r.status == 409 and err["code"] == "mutable-conflict" and err["details"]["sequence"] == 2
    assert await (await client.get(f"{where}/download")).read() == v2

    # JSON variant and a check
    doc = await (await client.get(f"{where}?format=json")).json()
    assert doc["kind"] == "mut" and doc["sequence"] == 2 and doc["read_cap"] == read_cap
    page = await (await client.get(f"{where}?check=1&verify=1")).text()
    assert 'Healthy</th><td><span class="ok">yes' in page

    # the read cap: reads, shows no write cap, offers no publish form
    r = await _open(client, csrf, read_cap)
    assert r.status == 303
    ro = r.headers["Location"]
    page = await (await client.get(ro)).text()
    assert "opened with its <strong>read cap</strong>" in page and write_cap not in page
    assert "Write cap" not in page and 'name="expected_sequence"' not in page
    assert _code_after(page, "Read cap") == read_cap
    assert await (await client.get(f"{ro}/download")).read() == v2
    r = await client.post("/op/upload", data=_publish_form(csrf, ro.rsplit("/", 1)[1], "2", b"x"))
    assert r.status == 400 and "(read-only-cap)" in await r.text()

    # the verify cap: facts and the share panel's verify cap only
    r = await _open(client, csrf, verify_cap)
    vpage = r.headers["Location"]
    page = await (await client.get(vpage)).text()
    assert "opened with its <strong>verify cap</strong>" in page
    assert read_cap not in page and write_cap not in page and "mut-download" not in page
    assert "1 of 1 peers asked" in page
    r = await client.get(f"{vpage}/download")
    assert r.status == 400 and "(verify-cap-cannot-read)" in await r.text()

    # the index lists what this session opened (names, kinds; no caps)
    page = await (await client.get("/mutable/")).text()
    assert "notes.txt" in page and "read cap" in page and "verify cap" in page
    assert "p2ps:" not in page


async def test_refusals(client: TestClient[Any, Any], backend: MemoryMutableApplication) -> None:
    csrf = await login(client)
    imm = (await (await client.post("/api/v1/file", data=b"abc", headers=AUTH)).json())["cap"]
    r = await _open(client, csrf, imm)
    assert r.status == 400 and "that is not a mutable file" in await r.text()
    r = await _open(client, csrf, "p2ps:mut-ro:abc")
    assert r.status == 400 and "(bad-cap)" in await r.text()
    r = await client.post("/op/mutable-open", data={"cap": "p2ps:mut-ro:abc"})
    assert r.status == 403  # no CSRF token
    r = await client.get("/mutable/not-a-handle")
    assert r.status == 404 and "(not-open)" in await r.text()

    # a handle means nothing in another session
    made = await (
        await client.post("/api/v1/file?mutable=true", data=b"hello", headers=AUTH)
    ).json()
    where = (await _open(client, csrf, made["read_cap"])).headers["Location"]
    other = await _start(backend)
    try:
        await login(other)
        r = await other.get(where)
        assert r.status == 404
    finally:
        await other.close()

    # scripts (bearer token) use the JSON API; a mutable upload still answers JSON
    r = await client.get("/mutable/?format=json", headers=AUTH)
    assert r.status == 400 and (await r.json())["error"]["code"] == "session-required"
    r = await client.post(
        "/op/upload",
        data=upload_form(None, "shared:/", [("a.txt", b"abc")], mutable="1"),
        headers={**AUTH, "Accept": "application/json"},
    )
    doc = await r.json()
    assert r.status == 201 and doc["uploaded"][0]["write_cap"].startswith("p2ps:mut:")
    assert "location" not in doc


async def test_a_backend_without_mutable_files() -> None:
    client = await _start(make_backend())
    try:
        csrf = await login(client)
        r = await client.post(
            "/op/upload", data=upload_form(csrf, "shared:/", [("a.txt", b"a")], mutable="1")
        )
        assert r.status == 400 and "(no-mutable-files)" in await r.text()
        page = await (await client.get("/mutable/")).text()
        assert "Open a mutable file" in page and csrf_of(page) == csrf
    finally:
        await client.close()

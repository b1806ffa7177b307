"""The web UI served by a real aiohttp server on 127.0.0.1 with the memory backend:
every page and form, login/logout, CSRF and origin checks, JSON variants,
downloads (types, disposition, Range) and the security headers."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.web.context import ApiLimits
from p2pstore.web.http_app import create_app, runner_kwargs
from p2pstore.web.server import ApiServer
from p2pstore.web.ui import make_ui

from ..webui_helpers import (
    AUTH,
    NODE_ID,
    NOW,
    PEER_ID,
    TOKEN,
    csrf_of,
    login,
    make_backend,
    upload_form,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _client(
    backend: MemoryApplication, clock: Clock | None = None, limits: ApiLimits | None = None
) -> TestClient[Any, Any]:
    limits = limits or ApiLimits()
    ui = make_ui(clock=clock or Clock(), wall=lambda: NOW + 5)  # uptime: started_at = NOW - 3725
    app = create_app(backend, TOKEN, limits=limits, ui=ui)
    server = TestServer(app, host="127.0.0.1", **runner_kwargs(limits))
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    return client


@pytest.fixture(params=["memory", "p2pstore-vdrive"])
async def backend(request: pytest.FixtureRequest) -> MemoryApplication:
    """Every page and form against the memory vdrive and the real vdrive package."""
    return make_backend(vdrive=request.param)


@pytest.fixture
async def client(backend: MemoryApplication) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _client(backend)
    yield c
    await c.close()


def _links(page: str) -> list[str]:
    return re.findall(r'(?:href|src|action)="([^"]*)"', page)


# -- login ------------------------------------------------------------------------
async def test_pages_need_login(client: TestClient[Any, Any]) -> None:
    for path in ("/", "/drive/shared/", "/entry/shared/x"):
        r = await client.get(path, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/login?next=")
    r = await client.get("/?format=json")
    assert r.status == 401 and (await r.json())["error"]["code"] == "login-required"
    # followed from another site: reload from here once (the cookie was withheld)
    r = await client.get("/drive/shared/?x=1", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status == 200 and 'content="0; url=/drive/shared/?x=1"' in await r.text()
    r = await client.get(
        "/drive/shared/?x=1", headers={"Sec-Fetch-Site": "same-origin"}, allow_redirects=False
    )
    assert r.status == 303  # then, with still no cookie, the login page
    r = await client.post("/op/mkdir", data={"dir": "/", "name": "x"})
    assert r.status == 401
    r = await client.get("/login")
    assert r.status == 200 and "p2pstore web-url" in await r.text()
    r = await client.post("/api/v1/ui/login-ticket")
    assert r.status == 401  # tickets need the API token


async def test_ticket_login_is_one_time_and_expires(backend: MemoryApplication) -> None:
    clock = Clock()
    c = await _client(backend, clock)
    try:
        r = await c.post("/api/v1/ui/login-ticket", headers=AUTH)
        doc = await r.json()
        assert doc["login_url"].startswith(f"http://127.0.0.1:{c.port}/login/")
        path = "/" + doc["login_url"].split("/", 3)[3]
        r = await c.get(path, allow_redirects=False)
        assert r.status == 200
        assert '<meta http-equiv="refresh" content="0; url=/">' in await r.text()
        cookie = r.headers["Set-Cookie"]
        assert f"p2ps_session_{c.port}=" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        c.session.cookie_jar.clear()
        r = await c.get(path, allow_redirects=False)
        assert r.status == 403 and "expired or was already used" in await r.text()
        r = await c.post("/api/v1/ui/login-ticket", headers=AUTH)
        path = "/" + (await r.json())["login_url"].split("/", 3)[3]
        clock.now += 121
        r = await c.get(path, allow_redirects=False)
        assert r.status == 403
    finally:
        await c.close()


async def test_token_login_form_and_logout(client: TestClient[Any, Any]) -> None:
    r = await client.post("/login", data={"token": "wrong", "next": "/drive/shared/"})
    assert r.status == 403 and "not this node" in await r.text()
    r = await client.post(
        "/login",
        data={"token": TOKEN, "next": "/drive/shared/"},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    )
    assert r.status == 403  # login CSRF from another site
    r = await client.post(
        "/login", data={"token": TOKEN, "next": "//evil.example/x"}, allow_redirects=False
    )
    assert r.status == 303 and r.headers["Location"] == "/"  # no open redirect
    r = await client.get("/drive/shared/")
    assert r.status == 200
    csrf = csrf_of(await r.text())
    r = await client.post("/logout", data={"csrf": "bad"})
    assert r.status == 403
    r = await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    r = await client.get("/", allow_redirects=False)
    assert r.status == 303


# -- front page ---------------------------------------------------------------------
async def test_front_page_shows_every_status_field(client: TestClient[Any, Any]) -> None:
    await login(client)
    r = await client.get("/")
    page = await r.text()
    for text in (
        NODE_ID,
        "alice-laptop",
        "0.1.0",
        "1 h 2 min",  # uptime from started_at
        "0.0.0.0:4433",
        "192.0.2.7:4433",
        "198.51.100.1:4433",
        "198.51.100.2:4433",
        "1 of 2 reachable",
        "unreachable",
        "timed out",
        "12.5 ms",
        "holds shares</span> (5.0 GiB free)",
        PEER_ID,
        "203.0.113.9:4433",
        "1 connected, 5 known",
        "42 contacts in 7 buckets",
        "3.0 GiB",
        "10.0 GiB",
        "30.0 % used",
        "1234",
    ):
        assert text in page, text
    assert page.index(PEER_ID, page.index("h-peers")) < page.index("203.0.113.9")  # connected 1st
    r = await client.get("/?format=json")
    doc = await r.json()
    assert doc["status"]["nickname"] == "alice-laptop" and doc["status"]["api_version"] == 1
    assert doc["peers"][0]["details"]["rtt_ms"] == 12.5


async def test_front_page_with_a_backend_that_reports_little() -> None:
    c = await _client(make_backend(full=False))
    try:
        await login(c)
        page = await (await c.get("/")).text()
        assert "does not report its seeds" in page
        assert "not reported" in page and "No peers yet" in page
        assert "(of the web server)" in page  # uptime fallback
    finally:
        await c.close()


# -- drive pages and forms -----------------------------------------------------------
async def test_upload_list_download_with_types_and_range(
    client: TestClient[Any, Any], backend: MemoryApplication
) -> None:
    csrf = await login(client)
    data = os.urandom(300_000)
    r = await client.post(
        "/op/upload",
        data=upload_form(csrf, "shared:/", [("clip.mp4", data), ("notes.txt", b"hello notes")]),
        allow_redirects=False,
    )
    assert r.status == 303, await r.text()
    assert r.headers["Location"] == "/drive/shared/"
    page = await (await client.get("/drive/shared/")).text()
    assert "Uploaded clip.mp4, notes.txt" in page  # the one-time message
    assert 'href="/drive/shared/clip.mp4?download=1"' in page and "video/mp4" in page
    assert "293.0 KiB" in page
    assert "Uploaded" not in await (await client.get("/drive/shared/")).text()  # shown once

    r = await client.get("/drive/shared/clip.mp4?download=1")
    assert r.status == 200 and await r.read() == data
    assert r.headers["Content-Type"] == "video/mp4"
    assert r.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert r.headers["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''clip.mp4" in r.headers["Content-Disposition"]
    assert r.headers["Accept-Ranges"] == "bytes"
    r = await client.get("/drive/shared/clip.mp4", headers={"Range": "bytes=1000-1999"})
    assert r.status == 206 and await r.read() == data[1000:2000]
    assert r.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert r.headers["Content-Disposition"].startswith("inline;")
    csp = r.headers["Content-Security-Policy"]  # media viewer: our origin, no script
    assert csp.startswith("default-src 'none'") and "media-src 'self'" in csp
    assert "script" not in csp
    r = await client.head("/drive/shared/clip.mp4")
    assert r.status == 200 and r.headers["Content-Length"] == str(len(data))
    r = await client.get("/drive/shared/notes.txt")
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers["Content-Security-Policy"].startswith("sandbox")
    assert await r.read() == b"hello notes"
    # redirects between the directory and file forms of a URL
    r = await client.get("/drive/shared/notes.txt/", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/drive/shared/notes.txt"
    # recent transfers on the front page, by name
    page = await (await client.get("/")).text()
    assert "clip.mp4" in page and "done" in page


async def test_stored_html_is_never_rendered(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    evil = b"<script>alert(1)</script>" * 10
    r = await client.post("/op/upload", data=upload_form(csrf, "/", [("x.html", evil)]))
    assert r.status == 200
    r = await client.get("/drive/shared/x.html")
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "sandbox" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = await client.get("/drive/shared/x.html?download=1")
    assert r.headers["Content-Disposition"].startswith("attachment")


async def test_upload_refused_without_csrf_or_from_another_site(
    client: TestClient[Any, Any], backend: MemoryApplication
) -> None:
    csrf = await login(client)
    files = [("a.bin", os.urandom(100_000))]
    r = await client.post("/op/upload", data=upload_form(None, "/", files))
    assert r.status == 403
    r = await client.post("/op/upload", data=upload_form("forged", "/", files))
    assert r.status == 403
    r = await client.post(
        "/op/upload", data=upload_form(csrf, "/", files), headers={"Origin": "http://evil.example"}
    )
    assert r.status == 403
    r = await client.post(
        "/op/upload", data=upload_form(csrf, "/", files), headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert r.status == 403
    assert backend.bytes_used == 0  # nothing was stored
    page = await (await client.get("/drive/shared/")).text()
    assert "a.bin" not in page
    r = await client.post("/op/upload", data=upload_form(csrf, "/", [("", b"")]))
    assert r.status == 400 and "choose at least one file" in await r.text()
    r = await client.post("/op/upload", data={"csrf": csrf, "dir": "/"})
    assert r.status == 400 and "multipart/form-data" in await r.text()


async def test_upload_conflicts_and_replace(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    r = await client.post("/op/upload", data=upload_form(csrf, "/", [("f.txt", b"one" * 30)]))
    assert r.status == 200
    r = await client.post("/op/upload", data=upload_form(csrf, "/", [("f.txt", b"two" * 30)]))
    assert r.status == 409 and "already exists" in await r.text()
    r = await client.post(
        "/op/upload", data=upload_form(csrf, "/", [("f.txt", b"two" * 30)], replace="1")
    )
    assert r.status == 200
    assert await (await client.get("/drive/shared/f.txt")).read() == b"two" * 30
    r = await client.post("/op/upload", data=upload_form(csrf, "/nope", [("g", b"x")]))
    assert r.status == 404
    r = await client.post("/op/upload", data=upload_form(csrf, "/", [("..", b"x")]))
    assert r.status == 400


async def test_mkdir_rename_delete_forms(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    r = await client.post("/op/mkdir", data={"csrf": csrf, "dir": "shared:/", "name": "docs"})
    assert r.status == 200 and "Made directory docs" in await r.text()
    r = await client.post("/op/mkdir", data={"csrf": csrf, "dir": "shared:/", "name": "docs"})
    assert r.status == 409 and "Conflict" in await r.text()
    r = await client.post("/op/mkdir", data={"dir": "shared:/", "name": "x"})
    assert r.status == 403  # no CSRF token
    r = await client.post("/op/upload", data=upload_form(csrf, "shared:/docs", [("a.txt", b"A")]))
    assert r.status == 200
    r = await client.post(
        "/op/rename", data={"csrf": csrf, "path": "shared:/docs/a.txt", "dst": "b.txt"}
    )
    assert r.status == 200 and "Renamed a.txt" in await r.text()
    r = await client.post(
        "/op/rename", data={"csrf": csrf, "path": "shared:/docs/b.txt", "dst": "/top.txt"}
    )
    page = await r.text()
    assert r.status == 200 and "top.txt" in page
    # delete: without confirm, a confirmation page; nothing removed yet
    r = await client.post("/op/delete", data={"csrf": csrf, "path": "shared:/docs"})
    page = await r.text()
    assert r.status == 200 and "Yes, delete it" in page and "also everything inside" in page
    assert "docs/" in await (await client.get("/drive/shared/")).text()
    r = await client.post(
        "/op/delete", data={"csrf": csrf, "path": "shared:/top.txt", "confirm": "yes"}
    )
    assert r.status == 200 and "Deleted top.txt" in await r.text()
    await client.post("/op/upload", data=upload_form(csrf, "shared:/docs", [("c", b"C")]))
    r = await client.post(
        "/op/delete", data={"csrf": csrf, "path": "shared:/docs", "confirm": "yes"}
    )
    assert r.status == 409  # not empty
    r = await client.post(
        "/op/delete",
        data={"csrf": csrf, "path": "shared:/docs", "confirm": "yes", "recursive": "1"},
    )
    assert r.status == 200
    page = await (await client.get("/drive/shared/")).text()
    assert "This directory is empty" in page
    r = await client.post("/op/delete", data={"csrf": csrf, "path": "shared:/", "confirm": "yes"})
    assert r.status == 400


async def test_private_drive_and_entry_page_caps_on_request(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    data = os.urandom(70_000)
    await client.post("/op/upload", data=upload_form(csrf, "private:/", [("secret.pdf", data)]))
    page = await (await client.get("/drive/private/")).text()
    assert "secret.pdf" in page and "application/pdf" in page
    assert "secret.pdf" not in await (await client.get("/drive/shared/")).text()
    r = await client.get("/entry/private/secret.pdf")
    page = await r.text()
    assert "p2ps:" not in page and "Show the read cap" in page
    r = await client.get("/entry/private/secret.pdf?caps=1")
    page = await r.text()
    doc = await (await client.get("/entry/private/secret.pdf?format=json")).json()
    assert doc["entry"]["cap"] in page and doc["entry"]["verify_cap"] in page
    assert "Anyone holding the read cap" in page
    r = await client.get("/entry/private/secret.pdf?check=1&verify=1")
    page = await r.text()
    assert "10 good of 10" in page and "none" in page
    doc = await (await client.get("/entry/private/secret.pdf?check=1&format=json")).json()
    assert doc["check"]["healthy"] is True
    r = await client.get("/entry/private/?format=json")
    assert (await r.json())["entry"]["kind"] == "dir"


async def test_json_variants_match_the_api_and_bearer_skips_csrf(
    client: TestClient[Any, Any],
) -> None:
    json_h = {**AUTH, "Accept": "application/json"}
    r = await client.post("/op/mkdir", data={"dir": "/", "name": "d"}, headers=json_h)
    assert r.status == 201 and (await r.json()) == {"path": "shared:/d", "sequence": 1}
    r = await client.post(
        "/op/upload", data=upload_form(None, "/d", [("z.bin", b"z" * 100)]), headers=json_h
    )
    assert r.status == 201
    [up] = (await r.json())["uploaded"]
    assert up["path"] == "shared:/d/z.bin" and up["size"] == 100 and up["cap"].startswith("p2ps:")
    ui = await (await client.get("/drive/shared/d/?format=json", headers=AUTH)).json()
    api = await (await client.get("/api/v1/vdrive/ls?path=/d", headers=AUTH)).json()
    assert ui == api
    ui = await (await client.get("/drive/shared/d/z.bin?format=json", headers=AUTH)).json()
    api = await (await client.get("/api/v1/vdrive/stat?path=/d/z.bin", headers=AUTH)).json()
    assert ui == api
    r = await client.post("/op/rename", data={"path": "/d/z.bin", "dst": "y.bin"}, headers=json_h)
    assert (await r.json())["dst"] == "shared:/d/y.bin"
    r = await client.post("/op/delete", data={"path": "/d/y.bin"}, headers=json_h)
    assert r.status == 400 and (await r.json())["error"]["code"] == "confirm-required"
    r = await client.post("/op/delete", data={"path": "/d/y.bin", "confirm": "yes"}, headers=json_h)
    assert r.status == 200 and (await r.json())["path"] == "shared:/d/y.bin"
    r = await client.get("/drive/shared/nope/?format=json", headers=AUTH)
    assert r.status == 404 and (await r.json())["error"]["code"] == "not-found"
    r = await client.get("/?format=json", headers={"Authorization": "Bearer wrong"})
    assert r.status == 403


async def test_headers_links_and_no_caps_in_urls(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    await client.post("/op/upload", data=upload_form(csrf, "/", [("a b?.txt", b"x" * 80)]))
    await client.post("/op/mkdir", data={"csrf": csrf, "dir": "/", "name": "sub dir"})
    for path in ("/", "/drive/shared/", "/drive/private/", "/entry/shared/a%20b%3F.txt?caps=1"):
        r = await client.get(path)
        assert r.status == 200, path
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Frame-Options"] == "DENY"
        page = await r.text()
        for link in _links(page):
            assert link.startswith(("/", "#")), (path, link)  # nothing external
            assert "p2ps:" not in link, (path, link)  # no cap in any URL
        for form in re.findall(r'<form method="post"[^>]*>.*?</form>', page, re.S):
            assert 'name="csrf"' in form
    page = await (await client.get("/drive/shared/")).text()
    assert 'href="/drive/shared/a%20b%3F.txt?download=1"' in page
    assert 'href="/drive/shared/sub%20dir/"' in page
    r = await client.get("/drive/shared/a%20b%3F.txt")
    assert await r.read() == b"x" * 80
    for name in ("ui.css", "ui.js", "favicon.svg"):
        r = await client.get(f"/static/{name}")
        assert r.status == 200 and (await r.read())
        assert "http" not in (await r.text()).replace("http://www.w3.org/2000/svg", "")
    r = await client.get("/static/nope.js")
    assert r.status == 404 and "There is no page here" in await r.text()


async def test_error_pages_and_odd_paths(client: TestClient[Any, Any]) -> None:
    await login(client)
    r = await client.get("/drive/shared/missing/")
    assert r.status == 404 and "text/html" in r.headers["Content-Type"]
    r = await client.get("/drive/elsewhere/")
    assert r.status == 404
    r = await client.get("/drive/private", allow_redirects=False)
    assert r.headers["Location"] == "/drive/private/"
    r = await client.get("/drive/shared/a/../b/")
    assert r.status in (400, 404)
    r = await client.get("/no/such/page")
    assert r.status == 404 and "There is no page here" in await r.text()
    r = await client.get("/api/v1/nope")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not-found"


async def test_api_server_serves_the_ui_by_default(backend: MemoryApplication) -> None:
    server = ApiServer(backend, TOKEN, port=0)
    await server.start()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as s:
            r = await s.get(server.url, allow_redirects=False)
            assert r.status == 303 and r.headers["Location"].startswith("/login")
            r = await s.post(server.url + "api/v1/ui/login-ticket", headers=AUTH)
            assert r.status == 201
    finally:
        await server.close()


async def test_add_a_file_by_cap(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    data = os.urandom(90_000)
    r = await client.post("/api/v1/file", data=data, headers=AUTH)
    cap = (await r.json())["cap"]
    page = await (await client.get("/drive/shared/")).text()
    assert 'action="/op/link"' in page
    r = await client.post("/op/link", data={"csrf": csrf, "dir": "/", "cap": cap, "name": "got"})
    assert r.status == 200 and "Added got (87.9 KiB)" in await r.text()
    assert await (await client.get("/drive/shared/got")).read() == data
    r = await client.post("/op/link", data={"csrf": csrf, "dir": "/", "cap": cap, "name": "got"})
    assert r.status == 409
    r = await client.post(
        "/op/link", data={"csrf": csrf, "dir": "/", "cap": "p2ps:chk:nope", "name": "x"}
    )
    assert r.status == 400 and "bad cap" in await r.text() and "p2ps:chk:nope" not in await r.text()
    r = await client.post("/op/link", data={"dir": "/", "cap": cap, "name": "y"})
    assert r.status == 403  # no CSRF token


async def test_pin_and_unpin_a_file_from_its_page(client: TestClient[Any, Any]) -> None:
    """docs/maintenance.md, "Leases": the "Keep alive" section of a file's page; the
    pin shows in the API's pin list; tiny (literal) files and directories have none."""
    csrf = await login(client)
    await client.post("/op/upload", data=upload_form(csrf, "/", [("big.bin", b"x" * 5000)]))
    await client.post("/op/upload", data=upload_form(csrf, "/", [("tiny.txt", b"hi")]))
    page = await (await client.get("/entry/shared/big.bin")).text()
    assert "Keep alive" in page and "Not pinned here" in page and 'action="/op/pin"' in page
    assert "Keep alive" not in await (await client.get("/entry/shared/tiny.txt")).text()
    r = await client.post("/op/pin", data={"csrf": csrf, "path": "shared:/big.bin"})
    page = await r.text()
    assert r.status == 200 and "Pinned big.bin" in page and 'action="/op/unpin"' in page
    pins = await (await client.get("/api/v1/pins", headers=AUTH)).json()
    assert [p["label"] for p in pins["pins"]] == ["shared:/big.bin"]
    assert pins["pins"][0]["verify_cap"].startswith("p2ps:chk-verify:")
    r = await client.post("/op/pin", data={"csrf": csrf, "path": "shared:/tiny.txt"})
    assert r.status == 400
    r = await client.post("/op/pin", data={"path": "shared:/big.bin"})
    assert r.status == 403  # no CSRF token
    r = await client.post("/op/unpin", data={"csrf": csrf, "path": "shared:/big.bin"})
    assert r.status == 200 and "Unpinned big.bin" in await r.text()
    assert (await (await client.get("/api/v1/pins", headers=AUTH)).json())["pins"] == []
    r = await client.post("/op/unpin", data={"csrf": csrf, "path": "shared:/big.bin"})
    assert r.status == 404

"""Web UI forms under stress, over a real server: uploads stream (progress shows
mid-upload), a stalled upload fails and stores nothing, fuzzed fields and URLs and
malformed multipart bodies get a 4xx, never a 500."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient

from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.web.context import ApiLimits

from ..webui_helpers import login
from .test_webui_pages import _client, backend, client

__all__ = ["backend", "client"]  # fixtures shared with the page tests


def _streamed_form(csrf: str, name: str, body: AsyncIterator[bytes]) -> Any:
    import aiohttp

    writer = aiohttp.MultipartWriter("form-data")
    for field, value in (("csrf", csrf), ("dir", "shared:/")):
        part = writer.append(value)
        part.set_content_disposition("form-data", name=field)
    part = writer.append(body, {"Content-Type": "application/octet-stream"})
    part.set_content_disposition("form-data", name="file", filename=name)
    return writer


async def test_upload_streams_and_shows_progress(
    client: TestClient[Any, Any], backend: MemoryApplication
) -> None:
    """The file part reaches the backend while the browser is still sending: the
    front page's JSON lists the upload, by name, with bytes done."""
    import asyncio

    csrf = await login(client)
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(8):  # the multipart reader holds back its latest chunk
            yield os.urandom(25_000)
            await asyncio.sleep(0.01)
        await gate.wait()
        yield os.urandom(100_000)

    task = asyncio.create_task(
        client.post("/op/upload", data=_streamed_form(csrf, "slow.bin", slow()))
    )
    try:
        for _ in range(300):
            doc = await (await client.get("/?format=json")).json()
            active = doc["status"]["transfers"]
            if active and active[0]["done"] > 0:  # some bytes in; the rest held back
                break
            await asyncio.sleep(0.01)
        [t] = active
        assert t["kind"] == "upload" and t["name"] == "slow.bin" and t["status"] == "running"
        assert 0 < t["done"] <= 200_000
    finally:
        gate.set()
        r = await task
    assert r.status == 200
    doc = await (await client.get("/?format=json")).json()
    assert doc["status"]["transfers"] == []
    [done] = [t for t in doc["status"]["recent_transfers"] if t["kind"] == "upload"]
    assert done["name"] == "slow.bin" and done["size"] == 300_000 and done["status"] == "done"


async def test_stalled_upload_fails_and_stores_nothing(backend: MemoryApplication) -> None:
    import asyncio

    c = await _client(backend, limits=ApiLimits(idle_timeout=0.3))
    try:
        csrf = await login(c)
        [cookie] = list(c.session.cookie_jar)
        b = "----p2psboundary"
        body = (
            f'--{b}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="dir"\r\n\r\nshared:/\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="stall.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + os.urandom(300_000)
        head = (
            f"POST /op/upload HTTP/1.1\r\nHost: 127.0.0.1:{c.port}\r\n"
            f"Cookie: {cookie.key}={cookie.value}\r\n"
            f"Content-Type: multipart/form-data; boundary={b}\r\n"
            f"Content-Length: {len(body) + 1_000_000}\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", c.port)
        writer.write(head + body)  # then nothing more: the upload stalls
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(200), 10)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert backend.bytes_used == 0
        listing = await (await c.get("/drive/shared/?format=json")).json()
        assert listing["entries"] == []
        doc = await (await c.get("/?format=json")).json()
        assert doc["status"]["recent_transfers"][0]["status"] == "failed"
    finally:
        await c.close()


async def test_fuzzed_form_fields_and_urls_never_crash(client: TestClient[Any, Any]) -> None:
    """Odd names, paths and URL segments get a clear 4xx (or work), never a 500."""
    import random

    rng = random.Random(9)
    alphabet = "ab/.:%?#\\\x00\x01\x7f \t\n\"'<>&é漢😀\ud800"
    nasty = ["", ".", "..", "/", "//", "shared:", "private:/", "x:/y", "a" * 300, "%2e%2e", "\x00"]
    samples = nasty + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(60)
    ]
    csrf = await login(client)
    await client.post("/op/mkdir", data={"csrf": csrf, "dir": "/", "name": "d"})
    for text in samples:
        clean = text.encode("utf-8", "replace").decode("utf-8")
        for route, fields in (
            ("/op/mkdir", {"dir": clean, "name": "n"}),
            ("/op/mkdir", {"dir": "/", "name": clean}),
            ("/op/rename", {"path": "/d", "dst": clean}),
            ("/op/rename", {"path": clean, "dst": "e"}),
            ("/op/delete", {"path": clean, "confirm": "yes"}),
        ):
            r = await client.post(
                route, data={"csrf": csrf, **fields}, headers={"Accept": "application/json"}
            )
            assert r.status < 500, (route, fields, r.status)
            if r.status == 200 and route == "/op/rename" and fields["path"] == "/d":
                back = {"csrf": csrf, "path": (await r.json())["dst"], "dst": "shared:/d"}
                r = await client.post("/op/rename", data=back)
                assert r.status == 200
        quoted = "".join(c if c.isalnum() else f"%{b:02X}" for c in clean for b in [ord(c) % 256])
        for prefix in ("/drive/shared/", "/entry/private/"):
            r = await client.get(prefix + quoted)
            assert r.status < 500, (prefix, quoted, r.status)


async def test_malformed_multipart_is_a_clear_400(client: TestClient[Any, Any]) -> None:
    csrf = await login(client)
    head = {"Content-Type": "multipart/form-data; boundary=xx"}
    field = b'--xx\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n' + csrf.encode()
    for body in (b"garbage", field + b"\r\n--xx\r\nbroken", b"--xx--\r\n", field):
        r = await client.post("/op/upload", data=body, headers=head)
        assert r.status == 400, (body, r.status)
        for route in ("/op/mkdir", "/op/delete", "/logout", "/login"):
            r = await client.post(route, data=body, headers=head)
            assert r.status in (400, 403), (route, body, r.status)  # refused, never a 500


async def test_a_form_sent_twice_makes_its_change_once(client: TestClient[Any, Any]) -> None:
    """Each form carries a fresh op_id: a reload that sends it again (after a lost
    answer) is answered, not refused with "exists" and not made twice."""
    import re

    csrf = await login(client)
    page = await (await client.get("/drive/shared/")).text()
    op_ids = re.findall(r'name="op_id" value="([0-9a-f]{32})"', page)
    assert op_ids and len(set(op_ids)) == len(op_ids)  # one per form, all different
    form = {"csrf": csrf, "dir": "/", "name": "twice", "op_id": op_ids[0]}
    for _ in range(2):
        r = await client.post("/op/mkdir", data=form, headers={"Accept": "application/json"})
        assert r.status == 201, await r.text()
    listing = await (await client.get("/drive/shared/?format=json")).json()
    assert [e["name"] for e in listing["entries"]] == ["twice"]
    r = await client.post(
        "/op/mkdir", data={**form, "op_id": "ab" * 16}, headers={"Accept": "application/json"}
    )
    assert r.status == 409  # a new form: a new change, and the name exists

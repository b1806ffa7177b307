"""The HTTP API's mutable-file routes (docs/http-api.md, docs/mutable.md) over a real
aiohttp server with the in-memory application that has mutable files: create,
publish, read the latest with its sequence header, info, the refusals (read and
verify caps, a stale expected sequence, local_path, a live directory's body that is
not a directory object, a backend without mutable files)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pstore.testing.memory_mutable import MemoryMutableApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive

from .test_web_api import AUTH, PARAMS, _client, error_of, make_backend


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    backend = MemoryMutableApplication(params=PARAMS, vdrive=MemoryVdrive(), max_bytes=64 << 20)
    c = await _client(backend)
    yield c
    await c.close()


async def test_create_publish_and_read_the_latest(client: TestClient[Any, Any]) -> None:
    r = await client.post("/api/v1/file?mutable=true", data=b"one" * 100, headers=AUTH)
    assert r.status == 201, await r.text()
    made = await r.json()
    assert made["cap"] == made["write_cap"] and made["sequence"] == 1 and made["mode"] == "mutable"
    w, rc, vc = made["write_cap"], made["read_cap"], made["verify_cap"]
    r = await client.put(f"/api/v1/file/{w}?expected_sequence=1", data=b"two" * 50, headers=AUTH)
    assert r.status == 201 and (await r.json())["sequence"] == 2
    r = await client.get(f"/api/v1/file/{rc}")
    assert await r.read() == b"two" * 50 and r.headers["X-P2pstore-Sequence"] == "2"
    info = await (await client.get(f"/api/v1/info/{vc}")).json()
    assert (info["kind"], info["sequence"], info["verify_cap"]) == ("mut-verify", 2, vc)
    assert "read_cap" not in info
    assert (await (await client.get(f"/api/v1/info/{w}")).json())["read_cap"] == rc


async def test_refusals_say_what_to_do(client: TestClient[Any, Any]) -> None:
    made = await (
        await client.post("/api/v1/file?mutable=true", data=b"x" * 99, headers=AUTH)
    ).json()
    w, rc, vc = made["write_cap"], made["read_cap"], made["verify_cap"]
    for cap in (rc, vc):  # only a write cap publishes
        err = await error_of(await client.put(f"/api/v1/file/{cap}", data=b"y", headers=AUTH), 400)
        assert err["code"] == "read-only-cap" and "write cap" in err["message"]
    err = await error_of(await client.get(f"/api/v1/file/{vc}"), 400)
    assert err["code"] == "verify-cap-cannot-read"
    r = await client.put(f"/api/v1/file/{w}?expected_sequence=7", data=b"z" * 80, headers=AUTH)
    err = await error_of(r, 409)
    assert err["code"] == "mutable-conflict" and err["details"] == {"sequence": 1}
    r = await client.put(f"/api/v1/file/{w}?local_path=/etc/passwd", data=b"", headers=AUTH)
    assert (await error_of(r, 400))["code"] == "bad-request"
    r = await client.put(f"/api/v1/file/{w}", data=b"y", headers={})  # no token
    assert r.status in (401, 403)
    bad = w[:-3] + ("aaa" if not w.endswith("aaa") else "bbb")
    err = await error_of(await client.get(f"/api/v1/info/{bad}"), 400)
    assert err["code"] == "bad-cap"
    # the same body is still there: nothing published by any refusal
    r = await client.get(f"/api/v1/file/{rc}")
    assert await r.read() == b"x" * 99 and r.headers["X-P2pstore-Sequence"] == "1"


async def test_a_live_directory_body_must_be_a_directory_object(
    client: TestClient[Any, Any],
) -> None:
    r = await client.post("/api/v1/file?mutable=true&dir=true", data=b"not a dir", headers=AUTH)
    assert (await error_of(r, 400))["code"] == "bad-directory"


async def test_a_backend_without_mutable_files_says_so() -> None:
    c = await _client(make_backend())
    try:
        r = await c.post("/api/v1/file?mutable=true", data=b"x" * 99, headers=AUTH)
        assert (await error_of(r, 400))["code"] == "no-mutable-files"
    finally:
        await c.close()

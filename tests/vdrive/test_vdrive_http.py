"""The vdrive through the real HTTP API (aiohttp test server): listing, the
read-only dircap a stat returns, and linking a received dircap into another drive
(`POST /vdrive/link` with a p2ps:dir: cap)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from p2pstore.app.drive import VdriveApplication
from p2pstore.immutable import EncodingParams
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.testing.vdrive import local_vdrive
from p2pstore.vdrive.objects import CachingStore, MemoryObjectStore
from p2pstore.web.http_app import create_app

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def start(vdrive: Any) -> TestClient[Any, Any]:
    backend = MemoryApplication(params=EncodingParams.create(2, 3, 4096), vdrive=vdrive)
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(backend, TOKEN), host="127.0.0.1")
    )
    await client.start_server()
    return client


async def post(c: TestClient[Any, Any], route: str, body: dict[str, Any]) -> Any:
    r = await c.post(f"/api/v1/vdrive/{route}", json=body, headers=AUTH)
    return r.status, await r.json()


async def test_dircap_hand_over_through_the_api() -> None:
    grid = CachingStore(MemoryObjectStore())  # both nodes see the same grid
    alice = await start(VdriveApplication(local_vdrive(store=grid)))
    bob = await start(VdriveApplication(local_vdrive(store=grid)))
    ref = await start(MemoryVdrive())
    try:
        r = await alice.post("/api/v1/file", data=b"z" * 5000, headers=AUTH)
        cap = (await r.json())["cap"]
        assert (await post(alice, "mkdir", {"path": "/proj/src", "parents": True}))[0] == 201
        assert (await post(alice, "link", {"path": "/proj/src/main.c", "cap": cap}))[0] == 201
        r = await alice.get("/api/v1/vdrive/stat?path=/proj", headers=AUTH)
        dircap = (await r.json())["entry"]["cap"]
        assert dircap.startswith("p2ps:dir:")
        # bob links the read-only snapshot into his private drive and browses it
        status, doc = await post(bob, "link", {"path": "private:/from-alice", "cap": dircap})
        assert (status, doc["sequence"]) == (201, 1)
        r = await bob.get("/api/v1/vdrive/ls?path=private:/from-alice/src", headers=AUTH)
        entries = (await r.json())["entries"]
        assert [e["name"] for e in entries] == ["main.c"] and entries[0]["cap"] == cap
        # alice's later change does not show in bob's snapshot
        await post(alice, "unlink", {"path": "/proj/src/main.c"})
        r = await bob.get("/api/v1/vdrive/ls?path=private:/from-alice/src", headers=AUTH)
        assert len((await r.json())["entries"]) == 1
        # refusals: a bad dircap, replace with a dircap, a vdrive that cannot link them
        status, doc = await post(bob, "link", {"path": "/x", "cap": "p2ps:dir:chk:1"})
        assert (status, doc["error"]["code"]) == (400, "bad-cap")
        status, doc = await post(bob, "link", {"path": "/x", "cap": dircap, "replace": True})
        assert status == 400
        status, doc = await post(ref, "link", {"path": "/x", "cap": dircap})
        assert (status, doc["error"]["code"]) == (400, "bad-cap")
    finally:
        for c in (alice, bob, ref):
            await c.close()

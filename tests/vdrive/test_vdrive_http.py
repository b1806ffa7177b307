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


async def test_make_dir_stores_a_whole_directory_object() -> None:
    grid = CachingStore(MemoryObjectStore(convergence_secret=bytes(32)))  # as a node's
    c = await start(VdriveApplication(local_vdrive(store=grid)))
    ref = await start(MemoryVdrive())
    try:
        r = await c.post("/api/v1/file", data=b"z" * 5000, headers=AUTH)
        cap = (await r.json())["cap"]
        sub = {
            "entries": [{"name": "f", "kind": "file", "cap": cap, "mtime": 1000.5, "mode": 0o600}]
        }
        r = await c.post("/api/v1/dir", json=sub, headers=AUTH)
        assert r.status == 201
        subcap = (await r.json())["cap"]
        assert subcap.startswith("p2ps:dir:")
        # the same entries give the same cap (convergent), so unchanged folders cost nothing
        r = await c.post("/api/v1/dir", json=sub, headers=AUTH)
        assert (await r.json())["cap"] == subcap
        top = {"entries": [{"name": "sub", "kind": "dir", "cap": subcap, "mode": 0o750}]}
        topcap = (await (await c.post("/api/v1/dir", json=top, headers=AUTH)).json())["cap"]
        assert (await post(c, "link", {"path": "private:/snap", "cap": topcap}))[0] == 201
        r = await c.get("/api/v1/vdrive/ls?path=private:/snap/sub", headers=AUTH)
        (entry,) = (await r.json())["entries"]
        assert (entry["cap"], entry["mtime"], entry["mode"]) == (cap, 1000.5, 0o600)
        r = await c.get("/api/v1/vdrive/stat?path=private:/snap/sub", headers=AUTH)
        assert (await r.json())["entry"]["mode"] == 0o750
        # refusals: each a clear 400, nothing half made
        f = {"name": "f", "kind": "file", "cap": cap}
        for body, code in (
            ({"entries": [f, f]}, "bad-request"),
            ({"entries": [{**f, "cap": "p2ps:nope"}]}, "bad-cap"),
            ({"entries": [{**f, "kind": "dir"}]}, "bad-cap"),
            ({"entries": [{**f, "mode": 0o20000}]}, "bad-request"),
            ({"entries": [{**f, "mode": True}]}, "bad-json"),
            ({"entries": [{**f, "mtime": "x"}]}, "bad-json"),
            ({"entries": [{**f, "name": "a/b"}]}, "bad-path"),
            ({"entries": [{**f, "kind": "link"}]}, "bad-json"),
            ({"entries": "x"}, "bad-json"),
            ([1], "bad-json"),
        ):
            r = await c.post("/api/v1/dir", json=body, headers=AUTH)
            assert (r.status, (await r.json())["error"]["code"]) == (400, code), body
        r = await c.post("/api/v1/dir", data=b"{not json", headers=AUTH)
        assert r.status == 400
        r = await c.post("/api/v1/dir", json={"entries": []})
        assert r.status == 401  # the token is needed
        r = await ref.post("/api/v1/dir", json={"entries": []}, headers=AUTH)
        assert r.status == 400  # a vdrive that cannot make directory objects says so
    finally:
        await c.close()
        await ref.close()


async def test_make_dir_body_is_bounded(monkeypatch: Any) -> None:
    from p2pstore.web import drive_api

    monkeypatch.setattr(drive_api, "MAX_DIR_BODY", 1000)
    c = await start(VdriveApplication(local_vdrive()))
    try:
        big = {"entries": [{"name": f"n{i}", "kind": "file", "cap": "x"} for i in range(100)]}
        r = await c.post("/api/v1/dir", json=big, headers=AUTH)
        assert r.status == 413
    finally:
        await c.close()

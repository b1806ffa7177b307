"""The HTTP API (p2pstore.web) over a real aiohttp test server on 127.0.0.1 with the
in-memory backend: real encoding, real caps, every route, errors and auth."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from p2pstore.app.errors import Unrecoverable
from p2pstore.immutable import EncodingParams, LiteralCap, ReadCap, parse_cap
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.web.context import ApiLimits
from p2pstore.web.http_app import create_app, runner_kwargs

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PARAMS = EncodingParams.create(3, 10, 128 * 1024)


def make_backend(vdrive: bool = True) -> MemoryApplication:
    return MemoryApplication(params=PARAMS, vdrive=MemoryVdrive() if vdrive else None)


@pytest.fixture
async def backend() -> MemoryApplication:
    return make_backend()


async def _client(backend: Any, limits: ApiLimits | None = None) -> TestClient[Any, Any]:
    limits = limits or ApiLimits()
    server = TestServer(
        create_app(backend, TOKEN, limits=limits), host="127.0.0.1", **runner_kwargs(limits)
    )
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    return client


@pytest.fixture
async def client(backend: MemoryApplication) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _client(backend)
    yield c
    await c.close()


async def _gen(data: bytes, step: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]


async def upload(c: TestClient[Any, Any], data: bytes, mode: str = "convergent") -> dict[str, Any]:
    r = await c.post(f"/api/v1/file?mode={mode}", data=_gen(data), headers=AUTH)
    assert r.status == 201, await r.text()
    doc: dict[str, Any] = await r.json()
    return doc


async def error_of(r: aiohttp.ClientResponse, status: int) -> Mapping[str, Any]:
    assert r.status == status, await r.text()
    assert r.headers["Content-Type"].startswith("application/json")
    body = await r.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    err: Mapping[str, Any] = body["error"]
    return err


async def test_upload_streaming_and_download(client: TestClient[Any, Any]) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    doc = await upload(client, data)
    cap = parse_cap(doc["cap"])
    assert isinstance(cap, ReadCap) and cap.size == len(data) == doc["size"]
    assert doc["verify_cap"] == cap.verify_cap().to_string()
    r = await client.get(f"/api/v1/file/{doc['cap']}")
    assert r.status == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "sandbox" in r.headers["Content-Security-Policy"]
    assert await r.read() == data
    # convergent: the same bytes give the same cap; random: a new one
    assert (await upload(client, data[:200_000]))["cap"] == (await upload(client, data[:200_000]))[
        "cap"
    ]
    a = await upload(client, data[:1000], mode="random")
    b = await upload(client, data[:1000], mode="random")
    assert a["cap"] != b["cap"]


async def test_upload_with_content_length_and_literal(client: TestClient[Any, Any]) -> None:
    r = await client.post("/api/v1/file", data=b"tiny", headers=AUTH)
    doc = await r.json()
    assert r.status == 201 and doc["verify_cap"] is None
    assert parse_cap(doc["cap"]) == LiteralCap(b"tiny")
    r = await client.get(f"/api/v1/file/{doc['cap']}")
    assert await r.read() == b"tiny"
    r = await client.post("/api/v1/file", data=b"", headers=AUTH)
    empty = (await r.json())["cap"]
    r = await client.get(f"/api/v1/file/{empty}")
    assert r.status == 200 and await r.read() == b""
    r = await client.get(f"/api/v1/file/{empty}", headers={"Range": "bytes=0-"})
    assert (await error_of(r, 416))["code"] == "range-not-satisfiable"


async def test_ranges(client: TestClient[Any, Any]) -> None:
    data = os.urandom(400_000)
    cap = (await upload(client, data))["cap"]
    url = f"/api/v1/file/{cap}"
    for header, start, end in [
        ("bytes=0-0", 0, 1),
        ("bytes=131000-263000", 131000, 263001),
        ("bytes=399990-", 399990, 400000),
        ("bytes=-5", 399995, 400000),
        ("bytes=100-9999999", 100, 400000),
    ]:
        r = await client.get(url, headers={"Range": header})
        assert r.status == 206, header
        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/400000"
        assert r.headers["Content-Length"] == str(end - start)
        assert await r.read() == data[start:end]
    r = await client.get(url, headers={"Range": "bytes=400000-"})
    err = await error_of(r, 416)
    assert r.headers["Content-Range"] == "bytes */400000"
    assert err["details"] == {"size": 400000}
    r = await client.get(url, headers={"Range": "bytes=0-1,5-6"})  # multi: whole
    assert r.status == 200 and await r.read() == data
    etag = r.headers["ETag"]
    r = await client.get(url, headers={"Range": "bytes=0-1", "If-Range": etag})
    assert r.status == 206
    r = await client.get(url, headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert r.status == 200
    r = await client.head(url)
    assert r.status == 200 and r.headers["Content-Length"] == "400000"
    r = await client.get(url + "?filename=report%20v1.pdf")
    assert "filename*=UTF-8''report%20v1.pdf" in r.headers["Content-Disposition"]


async def test_bad_caps(client: TestClient[Any, Any]) -> None:
    r = await client.get("/api/v1/file/p2ps:chk:3:10:1000:abc:def")
    err = await error_of(r, 400)
    assert err["code"] == "bad-cap" and "key" in err["message"]
    r = await client.get("/api/v1/info/nonsense")
    assert "must start with" in (await error_of(r, 400))["message"]
    doc = await upload(client, os.urandom(1000))
    r = await client.get(f"/api/v1/file/{doc['verify_cap']}")
    assert (await error_of(r, 400))["code"] == "verify-cap-cannot-read"
    # a well-formed cap of a file nobody stored
    other = parse_cap(doc["cap"])
    assert isinstance(other, ReadCap)
    missing = ReadCap(3, 10, 1000, bytes(32), other.ext_hash).to_string()
    r = await client.get(f"/api/v1/file/{missing}")
    assert (await error_of(r, 404))["code"] == "file-not-found"
    # a mistyped ext hash: shares exist but none matches the cap
    wrong = ReadCap(3, 10, 1000, other.key, bytes(32)).to_string()
    r = await client.get(f"/api/v1/file/{wrong}")
    assert (await error_of(r, 503))["code"] == "unrecoverable"


async def test_info_and_check_verify_repair(
    client: TestClient[Any, Any], backend: MemoryApplication
) -> None:
    data = os.urandom(300_000)
    doc = await upload(client, data)
    cap = parse_cap(doc["cap"])
    assert isinstance(cap, ReadCap)
    r = await client.get(f"/api/v1/info/{doc['cap']}")
    info = await r.json()
    assert info["kind"] == "chk" and info["size"] == 300_000 and info["k"] == 3
    assert info["storage"]["shares_held"] == list(range(10))
    r = await client.get(f"/api/v1/info/{doc['verify_cap']}")
    assert (await r.json())["kind"] == "chk-verify"
    backend.delete_share(cap, 1)
    backend.corrupt_share(cap, 2, 5000)
    r = await client.get(f"/api/v1/check/{doc['cap']}")
    rep = await r.json()
    assert rep["shares_good"] == 9 and not rep["healthy"] and not rep["verified"]
    r = await client.get(f"/api/v1/check/{doc['verify_cap']}?verify=true")
    rep = await r.json()
    assert rep["shares_good"] == 8 and rep["recoverable"] and rep["verified"]
    assert any("share 2" in p for p in rep["problems"])
    r = await client.get(f"/api/v1/check/{doc['cap']}?repair=true")
    assert "POST" in (await error_of(r, 400))["message"]
    r = await client.post(f"/api/v1/check/{doc['verify_cap']}?verify=true")
    assert r.status == 401
    r = await client.post(f"/api/v1/check/{doc['verify_cap']}?verify=true", headers=AUTH)
    rep = await r.json()
    assert rep["repaired"] and rep["healthy"] and rep["details"]["shares_replaced"] == [1, 2]
    r = await client.get(f"/api/v1/check/{doc['cap']}?verify=1")
    assert (await r.json())["shares_good"] == 10
    # the repaired shares alone (plus one original) still give the file
    for i in range(10):
        if i not in (1, 2, 3):
            backend.delete_share(cap, i)
    r = await client.get(f"/api/v1/file/{doc['cap']}")
    assert await r.read() == data
    lit = (await upload(client, b"x"))["cap"]
    r = await client.get(f"/api/v1/check/{lit}")
    assert (await r.json())["healthy"]
    r = await client.get(f"/api/v1/info/{lit}")
    assert (await r.json())["storage"] is None


async def test_auth_and_host(client: TestClient[Any, Any]) -> None:
    for method, url in [
        ("POST", "/api/v1/file"),
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/peers"),
        ("GET", "/api/v1/vdrive/ls?path=/"),
        ("POST", "/api/v1/vdrive/mkdir"),
        ("PUT", "/api/v1/vdrive/file?path=/x"),
    ]:
        r = await client.request(method, url, data=b"x")
        err = await error_of(r, 401)
        assert err["code"] == "token-required" and "api.token" in err["message"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await client.request(method, url, data=b"x", headers={"Authorization": "Bearer no"})
        assert (await error_of(r, 403))["code"] == "token-invalid"
        r = await client.request(method, url, data=b"x", headers={"Authorization": "Basic x"})
        assert r.status == 401
    r = await client.get("/api/v1/status", headers=AUTH)
    status = await r.json()
    assert status["backend"] == "memory" and status["api_version"] == 1
    r = await client.get("/api/v1/peers", headers=AUTH)
    assert await r.json() == {"peers": []}
    r = await client.get("/api/v1/", headers={"Host": "evil.example:80"})
    assert (await error_of(r, 403))["code"] == "bad-host"
    r = await client.get("/api/v1/", headers={"Host": "localhost:1234"})
    assert r.status == 200 and (await r.json())["version"] == 1


async def test_route_errors_and_limits(client: TestClient[Any, Any]) -> None:
    r = await client.get("/api/v1/nothing-here")
    assert (await error_of(r, 404))["code"] == "not-found"
    r = await client.get("/api/v1/files/p2ps:lit:nbswy3dp:xxxxxxxx")
    assert "p2ps:" not in (await error_of(r, 404))["message"]
    r = await client.delete("/api/v1/status", headers=AUTH)
    assert (await error_of(r, 405))["code"] == "method-not-allowed"
    big = b'{"path": "' + b"a" * 70_000 + b'"}'
    r = await client.post("/api/v1/vdrive/mkdir", data=big, headers=AUTH)
    assert (await error_of(r, 413))["code"] == "too-large"
    r = await client.post("/api/v1/vdrive/mkdir", data=b"[1]", headers=AUTH)
    assert (await error_of(r, 400))["code"] == "bad-json"
    # nesting deeper than the interpreter's stack: a 400, not a RecursionError and 500
    deep = b"[" * 30_000 + b"]" * 30_000
    r = await client.post("/api/v1/vdrive/mkdir", data=deep, headers=AUTH)
    assert (await error_of(r, 400))["code"] == "bad-json"
    r = await client.post("/api/v1/file?mode=weird", data=b"x", headers=AUTH)
    assert "mode" in (await error_of(r, 400))["message"]
    r = await client.get("/")
    assert r.status == 200 and "api/v1" in await r.text()
    r = await client.get("/api/v1/", headers={"X-Big": "a" * 9000})
    assert r.status in (400, 431)  # aiohttp refuses over-long header lines itself


async def test_vdrive_routes(client: TestClient[Any, Any]) -> None:
    async def post(route: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        return await client.post(f"/api/v1/vdrive/{route}", json=body, headers=AUTH)

    r = await post("mkdir", {"path": "/docs"})
    assert r.status == 201 and (await r.json())["sequence"] == 1
    r = await post("mkdir", {"path": "/docs"})
    assert (await error_of(r, 409))["code"] == "exists"
    r = await post("mkdir", {"path": "/a/b/c", "parents": True})
    assert (await r.json())["sequence"] == 2
    data = os.urandom(200_000)
    r = await client.put("/api/v1/vdrive/file?path=/docs/report.bin", data=_gen(data), headers=AUTH)
    put = await r.json()
    assert r.status == 201 and put["path"] == "shared:/docs/report.bin" and put["sequence"] == 3
    r = await client.put(
        "/api/v1/vdrive/file?path=/docs/late.bin&expected_sequence=1", data=data, headers=AUTH
    )
    err = await error_of(r, 409)  # uploaded, but the conditional link failed: cap given back
    assert err["code"] == "sequence-mismatch" and err["details"]["uploaded_cap"] == put["cap"]
    r = await client.put("/api/v1/vdrive/file?path=/nodir/x", data=b"x", headers=AUTH)
    assert (await error_of(r, 404))["code"] == "not-found"
    r = await client.get("/api/v1/vdrive/ls?path=shared:/docs", headers=AUTH)
    ls = await r.json()
    assert ls["sequence"] == 3
    [entry] = ls["entries"]
    assert entry["name"] == "report.bin" and entry["kind"] == "file" and entry["size"] == 200_000
    assert entry["cap"] == put["cap"] and entry["verify_cap"] == put["verify_cap"]
    r = await client.get("/api/v1/vdrive/file?path=/docs/report.bin", headers=AUTH)
    assert await r.read() == data and "report.bin" in r.headers["Content-Disposition"]
    r = await client.get(
        "/api/v1/vdrive/file?path=/docs/report.bin", headers={**AUTH, "Range": "bytes=-10"}
    )
    assert r.status == 206 and await r.read() == data[-10:]
    r = await client.get("/api/v1/vdrive/file?path=/docs", headers=AUTH)
    assert (await error_of(r, 409))["code"] == "is-a-directory"
    r = await post("link", {"path": "private:/mine", "cap": put["cap"]})
    assert r.status == 201 and (await r.json())["sequence"] == 1  # private drive's own seq
    r = await post("link", {"path": "private:/mine", "cap": put["cap"]})
    assert (await error_of(r, 409))["code"] == "exists"
    r = await post("link", {"path": "/x", "cap": put["verify_cap"]})
    assert (await error_of(r, 400))["code"] == "verify-cap-cannot-read"
    r = await post("rename", {"src": "/docs/report.bin", "dst": "/a/r.bin", "expected_sequence": 0})
    err = await error_of(r, 409)
    assert err["code"] == "sequence-mismatch" and err["details"] == {"sequence": 3}
    r = await post("rename", {"src": "/docs/report.bin", "dst": "/a/r.bin", "expected_sequence": 3})
    assert (await r.json())["sequence"] == 4
    r = await post("rename", {"src": "/a", "dst": "private:/a"})
    assert (await error_of(r, 400))["code"] == "cross-drive"
    r = await post("rename", {"src": "/a", "dst": "/a/b/a"})
    assert (await error_of(r, 400))["code"] == "bad-path"
    r = await post("unlink", {"path": "/a"})
    assert (await error_of(r, 409))["code"] == "directory-not-empty"
    r = await post("unlink", {"path": "/a", "recursive": True})
    assert r.status == 200
    r = await client.get("/api/v1/vdrive/stat?path=/a", headers=AUTH)
    assert r.status == 404
    r = await client.get("/api/v1/vdrive/ls?path=/docs/../etc", headers=AUTH)
    assert (await error_of(r, 400))["code"] == "bad-path"
    r = await client.get("/api/v1/vdrive/ls", headers=AUTH)
    assert (await error_of(r, 400))["code"] == "bad-path"


async def test_vdrive_unavailable() -> None:
    c = await _client(make_backend(vdrive=False))
    try:
        r = await c.get("/api/v1/vdrive/ls?path=/", headers=AUTH)
        err = await error_of(r, 503)
        assert err["code"] == "vdrive-unavailable"
        r = await c.put("/api/v1/vdrive/file?path=/x", data=b"abc", headers=AUTH)
        assert (await error_of(r, 503))["code"] == "vdrive-unavailable"
        r = await c.get("/api/v1/status", headers=AUTH)
        assert (await r.json())["memory_store"]["files"] == 0  # nothing was uploaded
    finally:
        await c.close()


async def _raw(port: int, request: bytes, *, then_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    if then_close:
        writer.close()
        return b""
    try:
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


async def test_aborted_upload_stores_nothing(
    client: TestClient[Any, Any], backend: MemoryApplication
) -> None:
    assert client.port is not None
    head = (
        f"POST /api/v1/file?mode=random HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: 5000000\r\n\r\n"
    ).encode()
    await _raw(client.port, head + os.urandom(200_000))
    await asyncio.sleep(0.3)
    assert (await backend.status())["memory_store"]["files"] == 0


async def test_upload_idle_timeout(backend: MemoryApplication) -> None:
    c = await _client(backend, ApiLimits(idle_timeout=0.2))
    try:
        assert c.port is not None
        head = (
            f"POST /api/v1/file HTTP/1.1\r\nHost: 127.0.0.1:{c.port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\nabc"
        ).encode()
        reply = await _raw(c.port, head, then_close=False)
        assert reply.startswith(b"HTTP/1.1 408") and b"upload-timeout" in reply
    finally:
        await c.close()


async def test_upload_size_limit(backend: MemoryApplication) -> None:
    c = await _client(backend, ApiLimits(max_upload_bytes=1000))
    try:
        r = await c.post("/api/v1/file", data=b"x" * 1001, headers=AUTH)
        assert (await error_of(r, 413))["code"] == "too-large"
        r = await c.post("/api/v1/file", data=_gen(b"x" * 5000, 100), headers=AUTH)
        assert (await error_of(r, 413))["code"] == "too-large"
    finally:
        await c.close()


class _FailingBackend(MemoryApplication):
    """Fails a download after its first chunk (headers already sent)."""

    async def download(self, cap: Any, offset: int, length: int) -> AsyncIterator[bytes]:
        inner = await super().download(cap, offset, length)

        async def gen() -> AsyncIterator[bytes]:
            yield await anext(inner)
            raise Unrecoverable("shares vanished")

        return gen()


async def test_mid_stream_failure_gives_a_short_body() -> None:
    c = await _client(_FailingBackend(params=PARAMS))
    try:
        cap = (await upload(c, os.urandom(500_000)))["cap"]
        r = await c.get(f"/api/v1/file/{cap}")
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    finally:
        await c.close()


async def test_status_lists_transfers_in_progress(client: TestClient[Any, Any]) -> None:
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield os.urandom(100_000)
        await gate.wait()
        yield os.urandom(100_000)

    task = asyncio.create_task(client.post("/api/v1/file?mode=random", data=slow(), headers=AUTH))
    try:
        for _ in range(200):
            r = await client.get("/api/v1/status", headers=AUTH)
            transfers = (await r.json())["transfers"]
            if transfers and transfers[0]["done"] >= 100_000:
                break
            await asyncio.sleep(0.01)
        [t] = transfers
        assert t["kind"] == "upload" and t["size"] is None and t["done"] == 100_000
    finally:
        gate.set()
        r = await task
    assert r.status == 201
    r = await client.get("/api/v1/status", headers=AUTH)
    assert (await r.json())["transfers"] == []


# -- local files (?local_path=) ----------------------------------------------------
async def test_local_path_uploads(client: TestClient[Any, Any], tmp_path: Any) -> None:
    data = os.urandom(200_000)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    r = await client.get("/api/v1/")
    assert "local_path" in (await r.json())["features"]
    r = await client.post("/api/v1/file", params={"local_path": str(f)}, headers=AUTH)
    assert r.status == 201, await r.text()
    doc = await r.json()
    assert doc["size"] == len(data)
    assert doc["cap"] == (await upload(client, data))["cap"]  # as if the bytes were sent
    r = await client.put(
        "/api/v1/vdrive/file", params={"path": "/f.bin", "local_path": str(f)}, headers=AUTH
    )
    assert r.status == 201 and (await r.json())["path"] == "shared:/f.bin"
    r = await client.get("/api/v1/vdrive/file?path=/f.bin", headers=AUTH)
    assert await r.read() == data
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(f)
    for path, status, code in (
        ("relative/x", 400, "bad-local-path"),
        (str(tmp_path / "missing"), 404, "local-file-not-found"),
        (str(tmp_path / "d"), 400, "bad-local-path"),
        (str(tmp_path / "link"), 400, "bad-local-path"),
    ):
        r = await client.post("/api/v1/file", params={"local_path": path}, headers=AUTH)
        assert (r.status, (await r.json())["error"]["code"]) == (status, code), path
    os.mkfifo(tmp_path / "fifo")  # refused at once: opening it must not wait for a writer
    r = await client.post(
        "/api/v1/file", params={"local_path": str(tmp_path / "fifo")}, headers=AUTH
    )
    assert (r.status, (await r.json())["error"]["code"]) == (400, "bad-local-path")
    st = f.stat()
    seen = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    q = {"local_path": str(f), "local_id": seen}
    assert (await client.post("/api/v1/file", params=q, headers=AUTH)).status == 201
    q["local_id"] = f"{st.st_dev}:{st.st_ino + 1}:{st.st_size}:{st.st_mtime_ns}"
    r = await client.post("/api/v1/file", params=q, headers=AUTH)
    assert (r.status, (await r.json())["error"]["code"]) == (400, "local-path-mismatch")
    r = await client.post("/api/v1/file", params={"local_path": str(f)}, data=b"xyz", headers=AUTH)
    assert r.status == 400  # a body and a path: which one?
    r = await client.post("/api/v1/file", params={"local_path": str(f)})
    assert r.status == 401  # the token is needed


class _Changing(MemoryApplication):
    """Appends to the file while it is being uploaded."""

    path: Any = None

    async def upload_file(self, fd: int, size: int, **kw: Any) -> Any:
        with open(self.path, "ab") as f:  # noqa: ASYNC230 - a test
            f.write(b"more")
        return await super().upload_file(fd, size, **kw)


async def test_a_local_file_changing_during_upload_links_nothing(tmp_path: Any) -> None:
    backend = _Changing(params=PARAMS, vdrive=MemoryVdrive())
    f = tmp_path / "log"
    f.write_bytes(os.urandom(100_000))
    backend.path = f
    c = await _client(backend)
    try:
        r = await c.put(
            "/api/v1/vdrive/file", params={"path": "/log", "local_path": str(f)}, headers=AUTH
        )
        assert (r.status, (await r.json())["error"]["code"]) == (409, "file-changed")
        r = await c.get("/api/v1/vdrive/ls?path=/", headers=AUTH)
        assert (await r.json())["entries"] == []
    finally:
        await c.close()

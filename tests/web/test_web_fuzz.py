"""Fuzz the API's request parsing over real HTTP: arbitrary caps, vdrive paths,
query flags and JSON bodies never produce a 5xx, and every error has the JSON
error shape."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.immutable import EncodingParams
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.web.server import ApiServer

TOKEN = "fuzz"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    backend = MemoryApplication(params=EncodingParams.create(3, 10, 4096), vdrive=MemoryVdrive())
    server = ApiServer(backend, TOKEN)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield server.port
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        doc = (
            json.loads(data)
            if resp.getheader("Content-Type", "").startswith("application/json")
            else None
        )
        return resp.status, doc
    finally:
        conn.close()


def check(status: int, doc: Any) -> None:
    assert status < 500, doc
    if status >= 400:
        assert isinstance(doc, dict) and set(doc) == {"error"}
        assert isinstance(doc["error"]["code"], str) and doc["error"]["message"]


_text = st.text(max_size=120)
_cap_like = st.one_of(
    _text,
    st.builds(lambda s: "p2ps:" + s, _text),
    st.builds(lambda a, b: f"p2ps:chk:{a}:{b}", st.integers(-5, 300), _text),
    st.builds(lambda s: "p2ps:lit:" + s, st.text("abcdefghijklmnopqrstuvwxyz234567:", max_size=60)),
)


@settings(max_examples=150)
@given(cap=_cap_like, route=st.sampled_from(["file", "info", "check"]), flag=_text)
def test_fuzz_cap_routes(port: int, cap: str, route: str, flag: str) -> None:
    q = urllib.parse.urlencode({"verify": flag})
    status, doc = request(port, "GET", f"/api/v1/{route}/{urllib.parse.quote(cap, safe='')}?{q}")
    check(status, doc)


@settings(max_examples=150)
@given(path=_text, route=st.sampled_from(["ls", "stat", "file"]))
def test_fuzz_vdrive_paths(port: int, path: str, route: str) -> None:
    q = urllib.parse.urlencode({"path": path}, encoding="utf-8", errors="surrogatepass")
    status, doc = request(port, "GET", f"/api/v1/vdrive/{route}?{q}")
    check(status, doc)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)
_body = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "path": _json | _text,
            "src": _json | _text,
            "dst": _json | _text,
            "cap": _json | _cap_like,
            "parents": _json,
            "replace": _json,
            "recursive": _json,
            "expected_sequence": _json,
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=200)
@given(body=_body, route=st.sampled_from(["mkdir", "link", "unlink", "rename"]))
def test_fuzz_vdrive_json(port: int, body: bytes, route: str) -> None:
    status, doc = request(port, "POST", f"/api/v1/vdrive/{route}", body)
    check(status, doc)

"""How long the API client waits for an upload's reply (p2pstore/api_http.py).

The node answers an upload only once the file is placed; over a home uplink that
takes far longer than the client's socket timeout (a 1 GB file at 20 Mbit/s: over
20 minutes). The client waits as long as the node says the tagged upload is still
running, and gives up on a node that stays silent and does not know the upload.
So does a ``check`` (a verify reads every share, a repair uploads). The timeout is
cut to 0.5 s here; the uploads and checks take 1 s.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pstore.api_client import NodeClient, TransferError
from p2pstore.api_http import STALL_POLLS
from p2pstore.immutable import EncodingParams
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive

from .test_cli_ops import serving

SLOW = 1.0  # seconds the node takes to place an upload
TIMEOUT = 0.5  # the client's socket timeout in these tests


@pytest.fixture
def slow_node(tmp_path: Path) -> Iterator[tuple[Path, MemoryApplication]]:
    """A node whose uploads take SLOW seconds after their body has arrived."""
    backend = MemoryApplication(
        params=EncodingParams.create(3, 10, 64 * 1024), vdrive=MemoryVdrive()
    )
    real_file, real_body, real_check = backend.upload_file, backend.upload, backend.check

    async def upload_file(*a: Any, **kw: Any) -> Any:
        await asyncio.sleep(SLOW)
        return await real_file(*a, **kw)

    async def upload(chunks: Any, **kw: Any) -> Any:
        body = [c async for c in chunks]  # the whole body first, as a convergent put

        async def again() -> Any:
            for c in body:
                yield c

        await asyncio.sleep(SLOW)
        return await real_body(again(), **kw)

    async def check(*a: Any, **kw: Any) -> Any:  # a verify over a home link: minutes
        await asyncio.sleep(SLOW)
        return await real_check(*a, **kw)

    backend.check = check  # type: ignore[method-assign]
    backend.upload_file = upload_file  # type: ignore[method-assign]
    backend.upload = upload  # type: ignore[method-assign]
    with serving(tmp_path / "node", backend):
        yield tmp_path / "node", backend


def test_a_slow_upload_or_check_is_waited_for_while_the_node_works_on_it(
    slow_node: tuple[Path, MemoryApplication], tmp_path: Path
) -> None:
    root, _ = slow_node
    data = os.urandom(50_000)
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    client = NodeClient.for_node(root, timeout=TIMEOUT)
    t0 = time.monotonic()
    by_path = client.put(str(f))  # the node reads the file in place: no body at all
    assert time.monotonic() - t0 >= SLOW
    by_body = client.put(io.BytesIO(data), size=len(data))  # the body, then silence
    assert by_path["cap"] == by_body["cap"] and by_path["size"] == len(data)
    linked = client.put_path(str(f), "/f.bin", size=len(data))  # the vdrive route too
    assert linked["cap"] == by_path["cap"]
    back = io.BytesIO()
    client.get(by_path["cap"], back)
    assert back.getvalue() == data
    assert client.check(by_path["cap"], verify=True)["healthy"] is True
    assert client.check(by_path["cap"], repair=True)["healthy"] is True
    # a check is followed by its client only: the node's transfer lists leave it out
    status = client.status()
    assert "check" not in str(status["recent_transfers"]) and status["transfers"] == []


def test_an_upload_that_stops_moving_is_given_up_on(
    slow_node: tuple[Path, MemoryApplication], tmp_path: Path
) -> None:
    """Placing, but its bytes where they were for STALL_POLLS asks: a wedged upload
    ends the wait (the old socket timeout's bound, now counted in asks). Before it
    places anything (a convergent key's pass over a large file reports nothing) it
    is waited for however long."""
    root, backend = slow_node
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(1000))
    real = backend.upload_file
    client = NodeClient.for_node(root, timeout=TIMEOUT)

    async def long_key_pass(*a: Any, **kw: Any) -> Any:
        await asyncio.sleep((STALL_POLLS + 2) * TIMEOUT)  # nothing reported meanwhile
        return await real(*a, **kw)

    backend.upload_file = long_key_pass  # type: ignore[method-assign]
    assert client.put(str(f))["size"] == 1000

    async def wedged(*a: Any, **kw: Any) -> Any:
        kw["progress"](4096)  # one segment placed, then nothing
        await asyncio.sleep(60)

    backend.upload_file = wedged  # type: ignore[method-assign]
    t0 = time.monotonic()
    with pytest.raises(TransferError, match="made no progress"):
        client.put(str(f))
    assert time.monotonic() - t0 < (STALL_POLLS + 3) * TIMEOUT


class _Silent(http.server.BaseHTTPRequestHandler):
    """A node that takes every upload and never answers, and knows no transfer."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(30)

    def do_GET(self) -> None:
        body = b'{"error": {"code": "not-found", "message": "no such transfer"}}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_silent_node_that_does_not_know_the_upload_is_given_up_on() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = NodeClient(f"http://127.0.0.1:{server.server_port}/", "t", timeout=TIMEOUT)
        t0 = time.monotonic()
        with pytest.raises(TransferError, match="no answer from the node's API"):
            client.put(io.BytesIO(b"x" * 1000), size=1000)
        assert time.monotonic() - t0 < 10 * TIMEOUT
    finally:
        server.shutdown()
        server.server_close()

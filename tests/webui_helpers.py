"""Shared fixtures for the web UI tests: a memory backend reporting every status
key the front page understands, and login/CSRF helpers for aiohttp clients."""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from p2pstore.app.contract import PeerInfo
from p2pstore.app.drive import VdriveApplication
from p2pstore.immutable import EncodingParams
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.testing.vdrive import local_vdrive

TOKEN = "web-ui-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PARAMS = EncodingParams.create(3, 10, 64 * 1024)
NODE_ID = "aaaabbbbccccddddeeeeffffgggghhhhiiiijjjj"
PEER_ID = "kkkkllllmmmmnnnnooooppppqqqqrrrrsssstttt"
NOW = time.time()


def full_status() -> dict[str, Any]:
    """Every key docs/web-ui.md lists, as the assembled node should report them."""
    return {
        "node_id": NODE_ID,
        "nickname": "alice-laptop",
        "version": "0.1.0",
        "started_at": NOW - 3725,
        "listen_host": "0.0.0.0",
        "listen_port": 4433,
        "advertised": "192.0.2.7:4433",
        "introducer": False,
        "backend": "grid",
        "seeds": [
            {
                "address": "198.51.100.1:4433",
                "node_id": PEER_ID,
                "nickname": "intro-1",
                "reachable": True,
                "rtt_ms": 12.5,
                "last_contact": NOW - 30,
            },
            {
                "address": "198.51.100.2:4433",
                "node_id": None,
                "reachable": False,
                "rtt_ms": None,
                "last_contact": None,
                "error": "timed out",
            },
        ],
        "dht": {"routing_table_size": 42, "buckets": 7},
        "storage": {"used": 3 << 30, "quota": 10 << 30, "shares": 1234, "enabled": True},
        "peers_known": 5,
        "peers_connected": 1,
    }


def full_peers() -> list[PeerInfo]:
    return [
        PeerInfo(
            PEER_ID,
            "198.51.100.1:4433",
            connected=True,
            last_seen=NOW - 2,
            details={
                "rtt_ms": 12.5,
                "nickname": "intro-1",
                "storage": True,
                "storage_available": 5 << 30,
            },
        ),
        PeerInfo("z" * 32, "203.0.113.9:4433", connected=False, last_seen=NOW - 600),
    ]


def grid_service_status() -> dict[str, Any]:
    """The shape p2pstore/node/grid_service.py reports (keys under ``details``)."""
    return {
        "node_id": NODE_ID,
        "nickname": "bob",
        "backend": "grid",
        "listen_host": "127.0.0.1",
        "listen_port": 5555,
        "peers_known": 3,
        "peers_connected": 2,
        "storage_used": 4096,
        "details": {
            "service": "grid",
            "storage_enabled": True,
            "storage": {"shares": 17, "uploads": 0, "available": 1 << 20, "max_bytes": 1 << 30},
            "dht": {"contacts": 3, "buckets": {"150": 2, "158": 1, "3": 0}, "records": 9},
            "join": {"reached": 2, "failed": 1, "joined_at": NOW - 60},
        },
    }


def make_backend(*, full: bool = True, vdrive: str = "memory") -> MemoryApplication:
    """Files in memory; the drives either in memory or the real vdrive package
    (``p2pstore.vdrive``: signed records and directory objects, all local)."""
    drives: Any = MemoryVdrive() if vdrive == "memory" else VdriveApplication(local_vdrive())
    return MemoryApplication(
        params=PARAMS,
        vdrive=drives,
        node_info=full_status if full else None,
        peer_source=full_peers if full else None,
        max_bytes=256 << 20,
    )


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    m = _CSRF.search(page)
    assert m, "no CSRF field on the page"
    return m.group(1)


async def login(client: TestClient[Any, Any]) -> str:
    """Log the client's cookie jar in through a one-time ticket; the CSRF token."""
    r = await client.post("/api/v1/ui/login-ticket", headers=AUTH)
    assert r.status == 201, await r.text()
    url = (await r.json())["login_url"]
    path = "/" + url.split("/", 3)[3]
    r = await client.get(path, allow_redirects=False)
    assert r.status == 200 and "You are logged in" in await r.text()
    r = await client.get("/")
    assert r.status == 200
    return csrf_of(await r.text())


def upload_form(
    csrf: str | None, folder: str, files: list[tuple[str, bytes]], **extra: str
) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)  # as browsers send names
    if csrf is not None:
        form.add_field("csrf", csrf)
    form.add_field("dir", folder)
    for k, v in extra.items():
        form.add_field(k, v)
    for name, data in files:
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return form

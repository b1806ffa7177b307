"""Soak (slow): many concurrent uploads, aborts, lease cancels and expiries across a
grid, with the crawler running; afterwards every server's accounts match its disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import pytest

from p2pstore.storage import LeaseCrawler, StorageConfig, StorageError
from p2pstore.storage.scan import scan_usage
from p2pstore.testing.storage_grid import StorageGrid
from quic_transport.identity import NodeId

pytestmark = pytest.mark.slow


async def test_soak(tmp_path: Path) -> None:
    cfg = StorageConfig(max_bytes=400_000, max_write=8192, lease_duration=50.0)
    rng = random.Random(7)
    with StorageGrid(tmp_path, 4, cfg) as grid:
        crawlers = [LeaseCrawler(gs.server, per_tick=5, interval=0.005) for gs in grid.servers]
        for c in crawlers:
            c.start()
        owners = [NodeId(bytes([i]) * 20) for i in range(6)]
        outcomes: dict[str, int] = {}

        async def worker(w: int) -> None:
            for step in range(60):
                owner = rng.choice(owners)
                api = grid[rng.randrange(4)].client(owner, via_rpc=bool(w % 2))
                si = hashlib.blake2b(f"{rng.randrange(40)}".encode(), digest_size=20).digest()
                shnum = rng.randrange(4)
                size = rng.randrange(1, 40_000)
                try:
                    op = rng.random()
                    if op < 0.6:
                        await api.allocate(si, shnum, size if rng.random() < 0.5 else None)
                        for off in range(0, size, 8192):
                            await api.write(si, shnum, off, os.urandom(min(8192, size - off)))
                        if rng.random() < 0.2:
                            await api.abort(si, shnum)
                        else:
                            await api.close_share(si, shnum)
                    elif op < 0.8:
                        await api.cancel_lease(si)
                    else:
                        await api.add_lease(si)
                    outcomes["ok"] = outcomes.get("ok", 0) + 1
                except StorageError as e:
                    outcomes[e.code] = outcomes.get(e.code, 0) + 1
                if step % 10 == 0:
                    grid.clock.advance(rng.choice([1.0, 20.0, 60.0]))

        await asyncio.gather(*(worker(w) for w in range(12)))
        for c in crawlers:
            await c.close()
        assert outcomes.get("ok", 0) > 100 and outcomes.get("quota-exceeded", 0) > 0, outcomes
        for gs in grid.servers:
            st = gs.server.stat()
            assert (st.uploads, st.reserved) == (0, 0)
            assert scan_usage(gs.server.layout) == (st.used, st.shares)
            assert st.used <= cfg.max_bytes
            assert os.listdir(gs.server.layout.incoming) == []

"""The in-process storage grid helper: many servers, and the break/hang/corrupt/
delete switches other suites rely on."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from p2pstore.storage import NoSuchShare, NoSuchUpload, StorageConfig, Unavailable
from p2pstore.testing.storage_grid import StorageGrid, grid_node_id
from quic_transport.identity import NodeId

ALICE = NodeId(b"A" * 20)
SI = hashlib.blake2b(b"file", digest_size=20).digest()


@pytest.mark.parametrize("via_rpc", [False, True])
async def test_grid_upload_and_faults(tmp_path: Path, via_rpc: bool) -> None:
    with StorageGrid(tmp_path, 5, StorageConfig(max_write=1000)) as grid:
        assert len({gs.node_id for gs in grid.servers}) == 5
        assert grid[2].node_id == grid_node_id(2)
        clients = grid.clients(ALICE, via_rpc=via_rpc)
        for i, c in enumerate(clients[:4]):
            await c.allocate(SI, i, 100)
            await c.write(SI, i, 0, bytes([i]) * 100)
            await c.close_share(SI, i)
        assert grid.shares(SI) == {i: {i: 100} for i in range(4)}

        grid[0].broken()
        with pytest.raises(Unavailable) as info:
            await clients[0].read(SI, 0, 0, 10)
        assert info.value.peer == grid[0].node_id.b32
        grid[0].heal()
        assert await clients[0].read(SI, 0, 0, 3) == b"\x00" * 3

        grid[1].hang()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(clients[1].list_shares(SI), 0.05)
        pending = asyncio.ensure_future(clients[1].read(SI, 1, 0, 2))
        await asyncio.sleep(0.01)
        assert not pending.done()
        grid[1].heal()
        assert await pending == b"\x01\x01"

        pos = grid[2].corrupt_share(SI, 2)
        data = await clients[2].read(SI, 2, 0, 100)
        assert pos == 50 and data[50] == 0x02 ^ 0xFF and data[:50] == b"\x02" * 50

        grid[3].delete_share(SI, 3)
        with pytest.raises(NoSuchShare):
            await clients[3].read(SI, 3, 0, 1)
        assert sum(1 for gs in grid.servers if gs.calls["read"]) == 4
        assert grid.delete_all(SI) == 3  # servers 0, 1, 2 still held one each
        assert grid.shares(SI) == {}


def test_grid_delete_all_and_clock(tmp_path: Path) -> None:
    with StorageGrid(tmp_path, 2) as grid:
        s = grid[0].server
        for n in range(3):
            s.allocate(SI, n, ALICE, 1)
            s.write(SI, n, ALICE, 0, b"x")
            s.close_share(SI, n, ALICE)
        assert grid[0].delete_all(SI) == 3
        assert grid.shares(SI) == {}
        t = grid.clock()
        grid.clock.advance(5)
        assert s.clock() == t + 5


@pytest.mark.parametrize("via_rpc", [False, True])
async def test_grid_restart_and_custom_break(tmp_path: Path, via_rpc: bool) -> None:
    class ConnectErrorStandIn(Exception):
        pass

    with StorageGrid(tmp_path, 1) as grid:
        c = grid[0].client(ALICE, via_rpc=via_rpc)
        await c.allocate(SI, 0, 2)
        await c.write(SI, 0, 0, b"ok")
        await c.close_share(SI, 0)
        await c.allocate(SI, 1, 2)  # in progress when the node "reboots"
        await c.write(SI, 1, 0, b"x")
        grid[0].restart()
        assert await c.list_shares(SI) == {0: 2}  # the same client follows the restart
        assert await c.read(SI, 0, 0, 2) == b"ok"
        assert [le.owner for le in grid[0].server.leases(SI)] == [ALICE.raw]
        with pytest.raises(NoSuchUpload):
            await c.write(SI, 1, 1, b"y")
        grid[0].broken(ConnectErrorStandIn)
        with pytest.raises(ConnectErrorStandIn):
            await c.stat()
        grid[0].heal()
        assert (await c.stat()).shares == 1

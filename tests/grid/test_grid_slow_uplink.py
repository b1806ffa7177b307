"""The stall rule over a slow uplink (p2pstore/grid/sender.py, ShareSender._lag): when
every share's writes are slow because they share one slow link, none is taken for a
stalled peer; a peer far slower than the others still is. In process, real storage
servers, writes slowed by a wrapper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from p2pstore.grid import SendConfig, UploadConfig, Uploader, bytes_source, static_peers
from p2pstore.storage import StorageAPI
from p2pstore.testing.storage_grid import GridServer, StorageGrid

from .test_grid_inprocess import OWNER, PARAMS, SECRET, data_of, ranked_servers


def _slowed(delays: dict[GridServer, float], default: float) -> Callable[[GridServer], StorageAPI]:
    """Storage clients whose every write takes ``delays[gs]`` (else ``default``) s."""

    def storage(gs: GridServer) -> StorageAPI:
        inner = gs.client(OWNER)
        pause = delays.get(gs, default)

        class Client:
            def __getattr__(self, name: str) -> object:
                attr = getattr(inner, name)
                if name != "write":
                    return attr

                async def write(*a: object) -> object:
                    await asyncio.sleep(pause)
                    return await attr(*a)

                return write

        return Client()  # type: ignore[return-value]

    return storage


async def _upload(
    grid: StorageGrid, slow: float, default: float, lag: float
) -> tuple[list[GridServer], dict[int, GridServer]]:
    data = data_of(24 * PARAMS.segment_size, 5)
    find = static_peers(grid.servers)
    probe = await Uploader(find, lambda gs: gs.client(OWNER), params=PARAMS).upload_convergent(
        bytes_source(data), SECRET
    )
    si = probe.cap.storage_index  # type: ignore[union-attr]
    grid.delete_all(si)
    ranked = ranked_servers(grid, si)
    storage = _slowed({ranked[3]: slow}, default)
    send = SendConfig(op_timeout=60.0, lag_timeout=lag, use_bulk=False)
    up = Uploader(find, storage, UploadConfig(send=send), params=PARAMS)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    return ranked, {k: v for k, v in res.placements.items()}  # type: ignore[misc]


async def test_writers_all_slowed_by_one_link_are_not_stalled(
    tmp_path: Path, stepwise: None
) -> None:
    """Each block takes every writer 0.12 s (one 0.16 s), above the 0.05 s lag_timeout:
    before the rule scaled with the writers' pace, shares moved peer after peer until
    the upload failed (bench_links, 100 MiB over 20 Mbit/s)."""
    with StorageGrid(tmp_path, 12) as grid:
        ranked, placed = await _upload(grid, slow=0.16, default=0.12, lag=0.05)
        assert placed == {i: ranked[i] for i in range(10)}  # nobody was replaced


async def test_a_peer_far_slower_than_the_others_is_still_replaced(
    tmp_path: Path, stepwise: None
) -> None:
    with StorageGrid(tmp_path, 12) as grid:
        ranked, placed = await _upload(grid, slow=5.0, default=0.01, lag=0.05)
        assert placed[3] != ranked[3]  # moved on
        assert len(set(placed.values())) == 10

"""vdrive scale (docs/vdrive.md): time and bytes moved for a change at depth 5 in namespaces
of 1,000 / 10,000 / 100,000 entries, for changes at depth 1/5/10 (cost follows the
path length), and for listing a directory of 1,000 entries (cold: from the store;
warm: from the cap-keyed cache). JSON lines.

The store is :class:`MemoryObjectStore` with the grid's default encoding (3-of-10,
real AES-CTR, zfec and hash trees), so "bytes moved" are the plaintext bytes of
directory objects written/read and the share bytes that would travel to storage
servers (x N/k). The change runs through :class:`DriveWriter` (copy-on-write, seal,
sign, publish to an in-process record DHT), i.e. everything but the network.
"""

from __future__ import annotations

import asyncio
import json
import time

from p2pstore.immutable import EncodingParams, ReadCap
from p2pstore.testing.vdrive import MemoryRecordDht
from p2pstore.vdrive.dirnode import DirCap, Directory, Entry
from p2pstore.vdrive.objects import CachingStore, MemoryObjectStore
from p2pstore.vdrive.ops import Link, list_dir
from p2pstore.vdrive.root_record import SHARED_NAME, RootPointer, new_read_secret
from p2pstore.vdrive.writer import DriveWriter, WritePolicy
from quic_transport.identity import NodeKey

FILE = ReadCap(3, 10, 123_456, bytes(range(32)), bytes(range(32, 64)))
PARAMS = EncodingParams()  # 3-of-10, 1 MiB segments: the grid's default
NOW = 1_790_000_000.0
RUNS = 5


async def build(store: MemoryObjectStore, entries: int, depth: int, side: int = 20) -> DirCap:
    """A namespace of about ``entries`` entries: ``bulk/gNN/bNN/`` buckets of 100 files
    (fan-out at most 100 at every level), plus a chain ``level0/.../level{depth-1}`` of
    directories with ``side`` files each, where the change happens. The directories
    on the changed path have the same sizes whatever ``entries`` is, so any growth of
    the change's cost with ``entries`` would be a cost in namespace size."""
    buckets = max(0, (entries - depth * (side + 1)) // 101)
    groups: dict[str, Entry] = {}
    for g in range(0, buckets, 100):
        bucket_entries = {}
        for b in range(g, min(buckets, g + 100)):
            d = Directory({f"file{i:03d}": Entry.file(FILE, NOW) for i in range(100)})
            bucket_entries[f"b{b:04d}"] = Entry.directory(DirCap(await store.put(d.encode())), NOW)
        cap = DirCap(await store.put(Directory(bucket_entries).encode()))
        groups[f"g{g // 100:03d}"] = Entry.directory(cap, NOW)
    root: dict[str, Entry] = {}
    if groups:
        root["bulk"] = Entry.directory(DirCap(await store.put(Directory(groups).encode())), NOW)
    below: tuple[str, DirCap] | None = None
    for level in reversed(range(depth)):
        items = {f"f{i:02d}": Entry.file(FILE, NOW) for i in range(side)}
        if below is not None:
            items[below[0]] = Entry.directory(below[1], NOW)
        cap = DirCap(await store.put(Directory(items).encode()))
        below = (f"level{level}", cap)
    if below is not None:
        root[below[0]] = Entry.directory(below[1], NOW)
    return DirCap(await store.put(Directory(root).encode()))


async def change(entries: int, depth: int) -> dict[str, object]:
    rows: list[tuple[float, dict[str, object]]] = []
    for run in range(RUNS):
        store = MemoryObjectStore(PARAMS, convergence_secret=bytes(32))
        root = await build(store, entries, depth)
        key = NodeKey.generate()
        w = DriveWriter(
            signer=key,
            name=SHARED_NAME,
            read_secret=new_read_secret(),
            store=store,
            dht=MemoryRecordDht(),
            policy=WritePolicy.only_owner(key.node_id),
            state_path=None,
        )
        w.head = RootPointer(1, root, NOW)
        w._loaded = True
        before = store.stats.snapshot()
        path = (*(f"level{i}" for i in range(depth)), f"new{run}")
        t0 = time.perf_counter()
        res = await w.apply(Link(path, FILE), expected_sequence=1, writer=key.node_id)
        dt = time.perf_counter() - t0
        after = store.stats.snapshot()
        row: dict[str, object] = {
            "bench": "vdrive-change",
            "namespace_entries": entries,
            "depth": depth,
            "seconds": round(dt, 5),
            "dirs_read": res.loaded,
            "dirs_written": res.written,
            "bytes_read": after["get_bytes"] - before["get_bytes"],
            "bytes_written": after["put_bytes"] - before["put_bytes"],
            "share_bytes_written": after["stored_bytes"] - before["stored_bytes"],
            "record_bytes": len(next(iter(w.dht.records.values())).value),  # type: ignore[attr-defined]
        }
        rows.append((dt, row))
    rows.sort(key=lambda r: r[0])
    return {**rows[0][1], "runs": RUNS, "seconds_worst": round(rows[-1][0], 5)}


async def listing(n: int) -> list[dict[str, object]]:
    store = MemoryObjectStore(PARAMS, convergence_secret=bytes(32))
    d = Directory({f"name-{i:05d}.txt": Entry.file(FILE, NOW) for i in range(n)})
    t0 = time.perf_counter()
    data = d.encode()
    cap = DirCap(await store.put(data))
    t_store = time.perf_counter() - t0
    root = DirCap(await store.put(Directory({"big": Entry.directory(cap, NOW)}).encode()))
    out = []
    for label, s in (("cold", None), ("warm", CachingStore(store))):
        times = []
        for _ in range(RUNS):
            st = s or CachingStore(store)
            if label == "warm":
                await list_dir(st, root, ("big",))
            t0 = time.perf_counter()
            listed = await list_dir(st, root, ("big",))
            times.append(time.perf_counter() - t0)
            assert len(listed) == n
        out.append(
            {
                "bench": "vdrive-list",
                "entries": n,
                "cache": label,
                "seconds": round(min(times), 5),
                "seconds_worst": round(max(times), 5),
                "object_bytes": len(data),
                "store_seconds": round(t_store, 5),
            }
        )
    return out


async def run() -> None:
    for entries in (1_000, 10_000, 100_000):
        print(json.dumps(await change(entries, 5)), flush=True)
    for depth in (1, 10, 20):
        print(json.dumps(await change(10_000, depth)), flush=True)
    for row in await listing(1_000):
        print(json.dumps(row), flush=True)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()

"""Where directory objects live: the :class:`ObjectStore` Protocol and its implementations.

The vdrive logic only needs "store these bytes immutably, give me a cap" and "give
me the verified bytes under this cap". Implementations:

- :class:`MemoryObjectStore`: real encryption, erasure coding and verification
  (``p2pstore.immutable``) with the shares kept in a dict — unit tests, benches;
- :class:`GridObjectStore`: the grid's ``Uploader``/``Downloader`` (a node);
- :class:`CachingStore`: wraps any store with a bounded LRU of decoded bytes keyed
  by cap. Safe because the bytes under a cap never change (the cap holds their
  hash); it is what makes repeated reads of an unchanged namespace cheap.

Every store counts objects and bytes moved (:class:`StoreStats`) for the bench.
Literal caps never touch a store: their bytes are in the cap.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from p2pstore.immutable import (
    EncodingParams,
    ImmutableError,
    LiteralCap,
    ReadCap,
    encode_bytes,
    read_bytes,
)

from .errors import VdriveRemoteError

FileCap = ReadCap | LiteralCap


class ObjectStore(Protocol):
    async def put(self, data: bytes) -> FileCap: ...

    async def get(self, cap: FileCap) -> bytes: ...


@dataclass
class StoreStats:
    puts: int = 0
    put_bytes: int = 0  # plaintext bytes handed to put
    stored_bytes: int = 0  # share bytes written (memory store), 0 if unknown
    gets: int = 0
    get_bytes: int = 0  # plaintext bytes returned by get (after the cache, if any)
    cache_hits: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


class MemoryObjectStore:
    """Objects encoded for real, shares held in memory (``shares[storage_index]``)."""

    def __init__(
        self, params: EncodingParams | None = None, *, convergence_secret: bytes | None = None
    ) -> None:
        self.params = params or EncodingParams.create(1, 1, 1 << 20)
        self.secret = convergence_secret
        self.shares: dict[bytes, dict[int, bytes]] = {}
        self.stats = StoreStats()

    async def put(self, data: bytes) -> FileCap:
        cap, shares = encode_bytes(data, self.params, convergence_secret=self.secret)
        self.stats.puts += 1
        self.stats.put_bytes += len(data)
        if isinstance(cap, ReadCap):
            self.shares[cap.storage_index] = dict(enumerate(shares))
            self.stats.stored_bytes += sum(len(s) for s in shares)
        return cap

    async def get(self, cap: FileCap) -> bytes:
        self.stats.gets += 1
        if isinstance(cap, LiteralCap):
            data = cap.data
        else:
            shares = self.shares.get(cap.storage_index)
            if shares is None:
                raise VdriveRemoteError("grid-error", "directory object not found in the store")
            try:
                data = read_bytes(cap, shares)
            except ImmutableError as e:
                raise VdriveRemoteError("grid-error", f"directory object unreadable: {e}") from None
        self.stats.get_bytes += len(data)
        return data


class GridObjectStore:
    """Directory objects through the grid: convergent upload under ``secret``
    (re-storing an unchanged directory is idempotent), verified download."""

    def __init__(self, uploader: Any, downloader: Any, convergence_secret: bytes) -> None:
        # uploader: p2pstore.grid.Uploader; downloader: p2pstore.grid.Downloader
        self.uploader = uploader
        self.downloader = downloader
        self.secret = convergence_secret
        self.stats = StoreStats()

    async def put(self, data: bytes) -> FileCap:
        from p2pstore.grid import bytes_source  # the grid is optional for unit tests

        try:
            res = await self.uploader.upload_convergent(bytes_source(data), self.secret)
        except Exception as e:
            raise VdriveRemoteError("grid-error", f"storing a directory failed: {e}") from None
        self.stats.puts += 1
        self.stats.put_bytes += len(data)
        cap: FileCap = res.cap
        return cap

    async def get(self, cap: FileCap) -> bytes:
        self.stats.gets += 1
        if isinstance(cap, LiteralCap):
            return cap.data
        try:
            data: bytes = await self.downloader.read_all(cap)
        except Exception as e:
            raise VdriveRemoteError("grid-error", f"reading a directory failed: {e}") from None
        self.stats.get_bytes += len(data)
        return data


class DecodedCache:
    """An LRU of decoded objects (directories) by cap string: at most ``max_items``
    objects and ``max_weight`` in total, an object weighing ``len(obj) + 1`` (its
    entries), so a few huge directories cannot hold unbounded memory."""

    def __init__(self, max_items: int = 512, max_weight: int = 200_000) -> None:
        self.max_items = max_items
        self.max_weight = max_weight
        self._items: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._weight = 0

    def get(self, key: str) -> object | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: str, value: object) -> None:
        weight = (len(value) if hasattr(value, "__len__") else 0) + 1
        if weight > self.max_weight // 2:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._weight -= old[1]
        self._items[key] = (value, weight)
        self._weight += weight
        while len(self._items) > self.max_items or self._weight > self.max_weight:
            _, (_, w) = self._items.popitem(last=False)
            self._weight -= w


class CachingStore:
    """An LRU of object bytes by cap, at most ``max_bytes`` (default 64 MiB), and of
    decoded directories (``directories``, used by ``ops.load_dir``)."""

    def __init__(self, inner: ObjectStore, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.inner = inner
        self.directories = DecodedCache()
        self.max_bytes = max_bytes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self.stats = StoreStats()

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:
            return
        old = self._cache.pop(key, None)
        if old is not None:
            self._size -= len(old)
        self._cache[key] = data
        self._size += len(data)
        while self._size > self.max_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._size -= len(dropped)

    async def put(self, data: bytes) -> FileCap:
        cap = await self.inner.put(data)
        self.stats.puts += 1
        self.stats.put_bytes += len(data)
        self._remember(cap.to_string(), data)
        return cap

    async def get(self, cap: FileCap) -> bytes:
        key = cap.to_string()
        hit = self._cache.get(key)
        self.stats.gets += 1
        if hit is not None:
            self._cache.move_to_end(key)
            self.stats.cache_hits += 1
            return hit
        data = await self.inner.get(cap)
        self.stats.get_bytes += len(data)
        self._remember(key, data)
        return data

"""The grid's uploader, downloader and health in one object, wired over QUIC and a
DHT lookup: a test and benchmark harness (the node composes the same parts itself
in ``p2pstore/node/grid_service.py`` and ``p2pstore/app/grid.py``).

``put`` picks the mode: a re-openable source with a convergence secret is
convergent, anything else random-key (one pass).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic

from p2pstore.grid.download import DownloadConfig, Downloader
from p2pstore.grid.health import CheckResult, Health, HealthConfig, RepairResult, VerifyResult
from p2pstore.grid.peers import ContactLike, FindPeers, P, Progress, StorageFor, lookup_peers
from p2pstore.grid.upload import Reopenable, UploadConfig, Uploader, UploadResult
from p2pstore.immutable import EncodingParams, LiteralCap, ReadCap, VerifyCap
from p2pstore.storage import StorageAPI
from p2pstore.storage.bulk import QuicStorageClient, StreamEndpoint
from quic_transport import PeerAddress
from quic_transport.identity import NodeId


class GridClient(Generic[P]):
    def __init__(
        self,
        find_peers: FindPeers[P],
        storage_for: StorageFor[P],
        *,
        convergence_secret: bytes | None = None,
        params: EncodingParams | None = None,
        upload: UploadConfig | None = None,
        download: DownloadConfig | None = None,
        health: HealthConfig | None = None,
    ) -> None:
        self.params = params or EncodingParams()
        self._secret = convergence_secret
        self.uploader = Uploader(find_peers, storage_for, upload, params=self.params)
        self.downloader = Downloader(find_peers, storage_for, download)
        self.health = Health(find_peers, storage_for, health)

    @classmethod
    def over_quic(
        cls,
        endpoint: StreamEndpoint,
        lookup: Callable[[NodeId], Awaitable[Sequence[ContactLike]]],
        *,
        include: Sequence[PeerAddress] = (),
        local: tuple[PeerAddress, StorageAPI] | None = None,
        call_timeout: float = 30.0,
        **kwargs: Any,
    ) -> GridClient[PeerAddress]:
        """Storage over ``endpoint`` (``QuicStorageClient`` per peer, cached), peers
        from ``lookup`` (``DhtNode.lookup``) plus ``include``. ``local`` is this node's
        own address and storage (e.g. a ``LocalStorageClient``) when it serves
        storage: it becomes a candidate like any peer, reached without the network
        (a transport cannot dial its own node ID)."""
        clients: dict[PeerAddress, StorageAPI] = {}
        if local is not None:
            clients[local[0]] = local[1]
            include = [*include, local[0]]

        def storage_for(peer: PeerAddress) -> StorageAPI:
            c = clients.get(peer)
            if c is None:
                c = clients[peer] = QuicStorageClient(
                    endpoint, peer, timeout=call_timeout, stream_timeout=call_timeout
                )
            return c

        return GridClient(lookup_peers(lookup, include=include), storage_for, **kwargs)

    async def put(
        self,
        source: Reopenable | AsyncIterable[bytes],
        *,
        size: int | None = None,
        happy: int | None = None,
        progress: Progress | None = None,
    ) -> UploadResult[P]:
        """Upload: convergent if ``source`` is re-openable (a callable returning a
        fresh async iterable) and a convergence secret is set, else random-key."""
        if callable(source) and self._secret is not None:
            return await self.uploader.upload_convergent(
                source, self._secret, happy=happy, progress=progress
            )
        chunks = source() if callable(source) else source
        return await self.uploader.upload_random(chunks, happy=happy, progress=progress, size=size)

    def get(
        self,
        cap: ReadCap | LiteralCap,
        *,
        offset: int = 0,
        length: int | None = None,
        progress: Progress | None = None,
    ) -> AsyncIterator[bytes]:
        """Verified plaintext of ``[offset, offset+length)``, in order."""
        return self.downloader.read(cap, offset=offset, length=length, progress=progress)

    async def check(self, cap: ReadCap | VerifyCap) -> CheckResult:
        return await self.health.check(cap)

    async def verify(self, cap: ReadCap | VerifyCap) -> VerifyResult:
        return await self.health.verify(cap)

    async def repair(
        self, cap: ReadCap | VerifyCap, *, verify: bool = False, happy: int | None = None
    ) -> RepairResult:
        return await self.health.repair(cap, verify=verify, happy=happy)

    async def renew(self, cap: ReadCap | VerifyCap) -> dict[str, str | None]:
        return await self.health.renew(cap)

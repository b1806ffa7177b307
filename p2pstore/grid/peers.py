"""What the grid layer needs from the world: peers, a lookup, a storage factory.

Invariants:
- A peer is anything with a ``node_id`` (:class:`quic_transport.identity.NodeId`):
  a ``quic_transport.PeerAddress``, a DHT ``Contact``, or a test object. The grid
  never looks inside it beyond that; ``storage_for(peer)`` turns it into a
  :class:`p2pstore.storage.StorageAPI`.
- ``find_peers(storage_index, count)`` returns up to ``count`` storage peers, any
  order (the grid ranks them by XOR distance itself); in a node it is a DHT lookup
  (:func:`lookup_peers`), in tests a static list (:func:`static_peers`).
- Failures are classified here once: :func:`describe` turns any exception from a
  storage call into a short reason, :func:`share_specific` says whether it concerns
  only that one share (so the peer may still take others).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from p2pstore.immutable import ImmutableError
from p2pstore.storage import AlreadyUploading, ClosedShare, StorageAPI, StorageError
from quic_transport import PeerAddress
from quic_transport.identity import NodeId


class Peer(Protocol):
    @property
    def node_id(self) -> NodeId: ...


P = TypeVar("P", bound=Peer)

#: the most share data one read asks for: the servers' ``max_read`` (1 MiB) less
#: room for the reply's framing, which must fit the transport's 1 MiB message cap
#: (a whole 1 MiB block of a k = 1 file did not: ``result-too-large``)
READ_CHUNK = (1 << 20) - 4096

FindPeers = Callable[[bytes, int], Awaitable[Sequence[P]]]
StorageFor = Callable[[P], StorageAPI]
#: ``progress(bytes_done, total_bytes_or_None)``
Progress = Callable[[int, int | None], None]


@runtime_checkable
class BulkShareWriter(Protocol):
    """Optional extension of a StorageAPI: write consecutive bytes of an allocated
    share from an async iterable in one bulk stream (the transport's upload
    exchange). Returns the number of bytes written."""

    async def stream_write(
        self, storage_index: bytes, shnum: int, offset: int, chunks: AsyncIterable[bytes]
    ) -> int: ...


@runtime_checkable
class WholeShareWriter(Protocol):
    """Optional extension of a StorageAPI: allocate, write and close a whole share in
    one call (``storage.put``), for shares small enough to send at once."""

    async def put_share(
        self, storage_index: bytes, shnum: int, data: bytes, lease: int | None = None
    ) -> ClosedShare: ...


def static_peers(peers: Sequence[P]) -> FindPeers[P]:
    """A ``find_peers`` over a fixed list (tests, or a grid without the DHT)."""

    async def find(storage_index: bytes, count: int) -> Sequence[P]:
        target = int.from_bytes(storage_index, "big")
        ranked = sorted(peers, key=lambda p: int(p.node_id) ^ target)
        return ranked[:count]

    return find


class ContactLike(Protocol):
    """What a DHT lookup returns per node (``dht.Contact``)."""

    @property
    def node_id(self) -> NodeId: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


def lookup_peers(
    lookup: Callable[[NodeId], Awaitable[Sequence[ContactLike]]],
    *,
    include: Sequence[PeerAddress] = (),
) -> FindPeers[PeerAddress]:
    """A ``find_peers`` over a DHT lookup (``DhtNode.lookup``: the k closest
    contacts to a 160-bit key). The storage index is the key. ``include`` adds
    peers the lookup never returns, such as this node itself when it serves
    storage; the grid ranks everything by distance anyway."""

    async def find(storage_index: bytes, count: int) -> Sequence[PeerAddress]:
        contacts = await lookup(NodeId(storage_index))
        out: dict[NodeId, PeerAddress] = {p.node_id: p for p in include}
        for c in contacts:
            out.setdefault(c.node_id, PeerAddress(c.node_id, c.host, c.port))
        target = int.from_bytes(storage_index, "big")
        return sorted(out.values(), key=lambda p: int(p.node_id) ^ target)[:count]

    return find


def describe(e: BaseException) -> str:
    """A short, secret-free reason for a failed storage call."""
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, StorageError):
        return f"refused: {e.wire_code}: {e.message[:200]}"
    if isinstance(e, ImmutableError):
        return f"bad data: {str(e)[:200]}"
    name = type(e).__name__
    text = str(e)[:200]
    return f"{name}: {text}" if text else name


def share_specific(e: BaseException) -> bool:
    """True if the failure concerns only this share (the peer may take others)."""
    return isinstance(e, AlreadyUploading)

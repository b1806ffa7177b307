"""How the upload-helper client checks the shares a helper placed without moving
them (docs/helper.md, "What the client checks"): each server hashes its share's
blocks with a nonce of the upload (``storage.hashv``), against :class:`Probe`'s
hashes of the local encoding; a server that cannot hash gets one block read at
random (:func:`spot_checked`)."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence

from p2pstore.base.tasks import bounded
from p2pstore.immutable import EncodedSegment, Encoder, SegmentGeometry, ShareLayout
from p2pstore.immutable.crypto import TAG_BLOCK, tagged_hash
from p2pstore.storage import StorageAPI

from .download import read_ranges
from .peers import READ_CHUNK, describe

log = logging.getLogger(__name__)

#: ranges per verification read (the servers' ``max_readv_ranges``)
MAX_RANGES = 64
#: share bytes one ``storage.hashv`` call covers (the servers' default ``max_hash``)
HASH_BYTES = 16 << 20


class Probe:
    """What a server holding a share answers to ``storage.hashv`` with this upload's
    nonce: SHA-256 of the nonce and a group of consecutive blocks (at most
    ``HASH_BYTES``), for every group of every share. Computed from the local
    encoding in its thread; the nonce reaches the servers only when they are asked,
    so only a server that holds the blocks can answer (a share's trailer holds the
    block hashes, and a fixed prefix could be answered from them)."""

    def __init__(self, geometry: SegmentGeometry) -> None:
        self.geometry = geometry
        self.nonce = secrets.token_bytes(16)
        self.per_group = max(1, HASH_BYTES // geometry.params.block_size)
        n = geometry.params.n
        self._open = [hashlib.sha256(self.nonce) for _ in range(n)]
        self.digests: list[list[bytes]] = [[] for _ in range(n)]

    def add(self, segments: Sequence[EncodedSegment]) -> None:
        for seg in segments:
            for share, block in enumerate(seg.blocks):
                self._open[share].update(block)
            j = seg.index + 1
            if j % self.per_group == 0 or j == self.geometry.num_segments:
                for share, h in enumerate(self._open):
                    self.digests[share].append(h.digest())
                    self._open[share] = hashlib.sha256(self.nonce)

    def groups(self, layout: ShareLayout) -> list[tuple[int, int]]:
        """The byte range of each group of blocks in a share."""
        out = []
        for first in range(0, self.geometry.num_segments, self.per_group):
            last = min(first + self.per_group, self.geometry.num_segments) - 1
            start = layout.block_range(first)[0]
            end = sum(layout.block_range(last))
            out.append((start, end - start))
        return out


async def probed(
    api: StorageAPI, si: bytes, share: int, layout: ShareLayout, probe: Probe, each: float
) -> list[int] | None:
    """The first segment of each group of blocks of ``share`` on ``api`` that differs
    from the local encoding, hashed by the server with the upload's nonce (no block
    crosses the network), each call bounded by ``each`` seconds; None if the server
    cannot hash them (a server that predates ``storage.hashv``, or refuses or fails
    the call): the caller checks that share another way."""
    bad: list[int] = []
    for g, rng in enumerate(probe.groups(layout)):
        try:
            (got,) = await bounded(api.hashv(si, share, probe.nonce, [rng]), each)
        except Exception as e:
            log.info("helper upload: share %d not hashed by its server: %s", share, describe(e))
            return None
        if got != probe.digests[share][g]:
            bad.append(g * probe.per_group)
    return bad


async def spot_checked(
    api: StorageAPI, si: bytes, share: int, layout: ShareLayout, enc: Encoder, each: float
) -> list[int]:
    """One block of ``share`` chosen at random, read (within the servers' limits) and
    checked against the local leaf: ``[its segment]`` if it differs."""
    j = secrets.randbelow(layout.num_segments)
    reads = read_ranges(
        api,
        si,
        share,
        [layout.block_range(j)],
        max_read=READ_CHUNK,
        max_ranges=MAX_RANGES,
        timeout=each,
    )
    (block,) = await bounded(reads, each)
    return [j] if tagged_hash(TAG_BLOCK, block) != enc.block_hash(share, j) else []

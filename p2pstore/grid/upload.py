"""Upload: plaintext chunks in, shares on the peers nearest the storage index out.

:class:`Uploader` drives the sans-I/O :class:`p2pstore.immutable.Encoder` in a worker
thread and a :class:`ShareSender` on the event loop, so encoding segment j+1 overlaps
sending segment j. Its dependencies are injected: ``find_peers`` (the DHT lookup in a
node, a static list in tests) and ``storage_for`` (a StorageAPI per peer).

Invariants:
- Memory is bounded by a few segments whatever the file size: input chunks are cut
  to at most one segment before encoding, the sender buffers at most ``window``
  segments' blocks per share, and nothing else holds file data.
- Literal files (at most 55 bytes) contact no peer.
- Before sending, every candidate peer is asked which shares of this storage index
  it holds; shares already stored (the same file uploaded again) are not re-sent.
  After the upload their extension-block copy is compared with the one just
  computed, and a lease is added; a mismatching copy does not count.
- The upload succeeds only when happiness (docs/grid.md) reaches ``happy``;
  otherwise :class:`UploadError` reports exactly what was placed where and why every
  other share failed. Shares whose peer failed mid-stream are re-placed by
  regeneration from the placed shares (``regenerate.replace_shares``) while untried
  peers remain.
- ``on_uploaded`` (optional) is called with every successful :class:`UploadResult`,
  re-uploads of already-stored files included, after the upload completed; an
  error it raises is logged and never fails the upload (the node uses it to track
  the files whose leases it renews: :mod:`p2pstore.grid.lease_renewal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic

from p2pstore.base.tasks import bounded
from p2pstore.immutable import (
    CiphertextEncoder,
    ConvergenceHasher,
    EncodedSegment,
    Encoder,
    EncodingParams,
    ExtensionBlock,
    LiteralCap,
    ReadCap,
    SegmentGeometry,
    ShareLayout,
    ShareTrailer,
    VerifyCap,
)
from p2pstore.immutable.crypto import TAG_BLOCK, tagged_hash
from p2pstore.immutable.errors import LocalError as ImmutableLocalError
from p2pstore.immutable.params import LITERAL_MAX
from p2pstore.storage import StorageAPI
from quic_transport.identity import NodeId

from . import feeding
from .download import DownloadConfig, Downloader
from .errors import GridLocalError, UploadError
from .peers import FindPeers, P, Progress, StorageFor, describe
from .placement import PeerKey, SharePlacer, rank_peers
from .quality import QualitySource
from .regenerate import list_existing, replace_shares
from .sender import Regenerate, SendConfig, ShareSender
from .sources import Reopenable, aiter_bytes, bytes_source, fd_source, file_source

__all__ = [
    "Reopenable",
    "UploadConfig",
    "UploadResult",
    "Uploader",
    "aiter_bytes",
    "bytes_source",
    "fd_source",
    "file_source",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UploadConfig:
    happy: int = 7
    send: SendConfig = field(default_factory=SendConfig)
    #: peers to ask the lookup for; None means 2*N (spares for fallback)
    lookup_count: int | None = None
    #: bound on the "which shares do you hold?" round before sending
    list_timeout: float = 10.0
    #: re-place shares lost mid-stream by regenerating them from placed shares
    replace_lost: bool = True
    #: the lease term (seconds) a new share gets until the whole upload succeeds; then
    #: each holder extends it to its full term. An uploader killed part-way leaves
    #: shares that expire within this, not a month later (docs/grid.md, "Upload errors")
    provisional_lease: int | None = 6 * 3600


@dataclass(frozen=True, slots=True)
class UploadResult(Generic[P]):
    cap: ReadCap | LiteralCap | VerifyCap  # VerifyCap: upload_ciphertext
    size: int
    placements: dict[int, P]  # share number -> the peer holding it
    happiness: int
    shares_sent: int  # written now
    shares_present: int  # found already stored, not re-sent
    peers_found: int
    #: the upload helper that placed the shares (docs/helper.md); None: this node
    helper: str | None = None
    #: helpers tried first that failed, each with why
    helper_failures: tuple[str, ...] = ()


def _check_happy(params: EncodingParams, happy: int) -> None:
    if not isinstance(happy, int) or not 1 <= happy <= params.n:
        raise GridLocalError(f"happy must be between 1 and N={params.n}, got {happy!r}")
    if happy < params.k:
        raise GridLocalError(f"happy ({happy}) must be at least k ({params.k})")


class Uploader(Generic[P]):
    def __init__(
        self,
        find_peers: FindPeers[P],
        storage_for: StorageFor[P],
        config: UploadConfig | None = None,
        *,
        params: EncodingParams | None = None,
        on_uploaded: Callable[[UploadResult[P]], None] | None = None,
        quality: QualitySource | None = None,
    ) -> None:
        self.find_peers = find_peers
        #: what this node knows of each peer (reachability, observed uptime): better
        #: peers among the candidates get shares first (placement.rank_peers)
        self.quality = quality
        self.storage_for = storage_for
        self.config = config or UploadConfig()
        self.params = params or EncodingParams()
        self.on_uploaded = on_uploaded

    def announce(self, result: UploadResult[P]) -> UploadResult[P]:
        """Pass an upload made elsewhere (through a helper) to ``on_uploaded``."""
        return self._uploaded(result)

    def _uploaded(self, result: UploadResult[P], announce: bool = True) -> UploadResult[P]:
        if self.on_uploaded is not None and announce:
            try:
                self.on_uploaded(result)
            except Exception:
                log.exception("on_uploaded hook failed (the upload itself succeeded)")
        return result

    async def upload_convergent(
        self,
        source: Reopenable,
        convergence_secret: bytes,
        *,
        params: EncodingParams | None = None,
        happy: int | None = None,
        progress: Progress | None = None,
    ) -> UploadResult[P]:
        """Two passes over ``source()``: key from the first, encode the second."""
        params = params or self.params
        happy = self.config.happy if happy is None else happy
        _check_happy(params, happy)
        with feeding.encoder_thread() as ex:
            loop = asyncio.get_running_loop()
            hasher = ConvergenceHasher(convergence_secret, params)
            async for chunk in source():
                await loop.run_in_executor(ex, hasher.update, chunk)
            key, size = hasher.key(), hasher.size
            # the second pass is hashed too: a file rewritten in between is refused
            recheck = ConvergenceHasher(convergence_secret, params)
            enc = Encoder(key, params, expected_size=size, recheck=recheck)
            regen = _regenerator(
                source, lambda: Encoder(key, params, expected_size=size), params, enc
            )
            return await self._run(enc, source(), size, params, happy, progress, ex, regen)

    async def upload_ciphertext(
        self,
        source: Reopenable,
        storage_index: bytes,
        size: int,
        *,
        params: EncodingParams | None = None,
        happy: int | None = None,
        announce: bool = False,
    ) -> UploadResult[P]:
        """Encode and place ciphertext made elsewhere, without its key (an upload
        helper, docs/helper.md): the result's cap is a :class:`VerifyCap`. ``source``
        is re-read to re-place a share that moved mid-upload."""
        params = params or self.params
        happy = self.config.happy if happy is None else happy
        _check_happy(params, happy)
        with feeding.encoder_thread() as ex:

            def fresh() -> Encoder:
                return CiphertextEncoder(storage_index, params, size)

            enc = fresh()
            regen = _regenerator(source, fresh, params, enc)
            return await self._run(enc, source(), size, params, happy, None, ex, regen, announce)

    async def upload_random(
        self,
        chunks: AsyncIterable[bytes],
        *,
        params: EncodingParams | None = None,
        happy: int | None = None,
        progress: Progress | None = None,
        size: int | None = None,
        announce: bool = True,
    ) -> UploadResult[P]:
        """One pass with a random key (pipes, HTTP bodies). ``size``, if known,
        lets servers reserve exact space and progress report a total. Without
        ``announce`` the upload is not passed to ``on_uploaded`` (a mutable file's
        version: its leases follow the mutable file, docs/mutable.md)."""
        params = params or self.params
        happy = self.config.happy if happy is None else happy
        _check_happy(params, happy)
        with feeding.encoder_thread() as ex:
            enc = Encoder.with_random_key(params)
            return await self._run(enc, chunks, size, params, happy, progress, ex, None, announce)

    async def _run(
        self,
        enc: Encoder,
        chunks: AsyncIterable[bytes],
        size: int | None,
        params: EncodingParams,
        happy: int,
        progress: Progress | None,
        ex: ThreadPoolExecutor,
        regenerate: Regenerate | None = None,
        announce: bool = True,
    ) -> UploadResult[P]:
        loop = asyncio.get_running_loop()
        seg_size = params.segment_size
        job: _Job[P] | None = None
        fed = 0

        def on_progress(segments: int) -> None:
            if progress is not None:
                progress(min(fed, segments * seg_size), size)

        try:
            encoded = feeding.encoded(chunks, enc, seg_size, ex)
            async with contextlib.aclosing(encoded):
                async for n, segs in encoded:
                    fed += n
                    if size is not None and fed > size:
                        raise GridLocalError(f"source yielded more than its {size} bytes")
                    for seg in segs:
                        if job is None:
                            job = await self._open(
                                enc.storage_index, params, size, happy, on_progress, regenerate
                            )
                        await job.sender.send(seg)
            if size is not None and fed != size:
                raise GridLocalError(f"source yielded {fed} bytes, not the {size} declared")
            try:
                result = await loop.run_in_executor(ex, enc.finish)
            except ImmutableLocalError as e:  # e.g. the source changed between passes
                raise GridLocalError(str(e)) from e
            if isinstance(result.cap, LiteralCap):
                if progress is not None:
                    progress(fed, fed)
                return self._uploaded(UploadResult(result.cap, fed, {}, 0, 0, 0, 0), announce)
            if job is None:
                job = await self._open(
                    enc.storage_index, params, fed, happy, on_progress, regenerate
                )
            for seg in result.segments:
                await job.sender.send(seg)
            await job.sender.finish(result.trailers)
            assert result.extension is not None
            await job.confirm_present(result.extension)
            cap = result.cap
            if (
                self.config.replace_lost
                and job.placer.unplaced()
                and regenerate is None
                and isinstance(cap, ReadCap)
            ):
                # one-pass mode: read the file back from the placed shares and
                # re-encode it with the same key (docs/grid.md, "Peers that vanish")
                await self._reencode_lost(job, cap, enc, fed, result.trailers)
            if self.config.replace_lost and job.placer.unplaced():
                await self._replace_lost(job, cap)
            if progress is not None:
                progress(fed, fed)
            if job.placer.happiness() < happy:
                await job.release_sent()
            else:
                await job.keep_sent()
            return self._uploaded(job.result(cap, fed, happy), announce)
        finally:
            if job is not None:
                await job.sender.aclose()

    async def _replace_lost(self, job: _Job[P], cap: ReadCap | VerifyCap) -> None:
        """Regenerate the shares lost mid-stream and place them on the next peers."""
        loop = asyncio.get_running_loop()
        lost = sorted(job.placer.unplaced())
        log.info(
            "upload %s: re-placing share(s) %s lost mid-stream (%s)",
            cap.verify_cap().storage_index.hex()[:16],
            lost,
            "; ".join(f"{s}: {job.placer.reasons.get(s, '?')}" for s in lost),
        )
        t0 = loop.time()
        await replace_shares(
            cap.verify_cap(),
            job.placer,
            job.peers,
            self.storage_for,
            self.config.send,
        )
        log.info(
            "upload: re-placement took %.1f s; still unplaced: %s",
            loop.time() - t0,
            sorted(job.placer.unplaced()) or "none",
        )

    async def _reencode_lost(
        self,
        job: _Job[P],
        cap: ReadCap,
        main: Encoder,
        size: int,
        trailers: Sequence[ShareTrailer],
    ) -> None:
        """Place the unplaced shares by re-encoding the file, read back (verified) from
        the shares just placed, with the upload's own key: one pass whatever the
        number of shares lost, every block checked against the main pass's hashes."""
        placer = job.placer
        lost = placer.unplaced()
        if len(placer.placed) < cap.k:
            return  # nothing to read back from: the fallback says why
        targets = [s for s in lost if placer.assign(s) is not None]
        if not targets:
            return
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        holders = [job.peers[p] for p in set(placer.placed.values())]

        async def find(_si: bytes, _count: int) -> list[P]:
            return holders

        down = Downloader(
            find, self.storage_for, DownloadConfig(op_timeout=self.config.send.op_timeout)
        )
        regen = _regenerator(
            lambda: down.read(cap),
            lambda: Encoder(cap.key, job.params, expected_size=size),
            job.params,
            main,
        )
        layout = ShareLayout.for_share(SegmentGeometry(job.params, size), 0)
        sender: ShareSender[P] = ShareSender(
            job.si,
            placer,
            job.peers,
            self.storage_for,
            alloc_size=layout.share_length,
            config=self.config.send,
            regenerate=regen,
        )
        # writers seeded with only their trailer re-encode every block (sender.py)
        sender.start(targets, replacement=True)
        try:
            await sender.finish([t for t in trailers if t.share_number in targets])
        except Exception as e:
            log.info("upload: read-back re-encoding failed: %s", describe(e))
        finally:
            await sender.aclose()
            for s in targets:
                if s in placer.pending:
                    placer.failed(s, placer.pending[s], "re-encoding failed", reassign=False)
        log.info(
            "upload: %d share(s) re-encoded from the placed shares in %.1f s; unplaced: %s",
            len(targets),
            loop.time() - t0,
            sorted(placer.unplaced()) or "none",
        )

    async def _open(
        self,
        si: bytes,
        params: EncodingParams,
        size: int | None,
        happy: int,
        on_progress: Callable[[int], None],
        regenerate: Regenerate | None,
    ) -> _Job[P]:
        count = self.config.lookup_count or 2 * params.n
        found = list(await self.find_peers(si, count))
        peers: dict[PeerKey, P] = {}
        for p in found:
            peers.setdefault(p.node_id.raw, p)
        existing, dead = await list_existing(si, peers, self.storage_for, self.config.list_timeout)
        ranked = [p for p in rank_peers(si, peers, quality=self.quality) if p not in dead]
        if len(ranked) < happy:  # happiness can never exceed the live peers: fail now
            raise UploadError(
                placed={},
                happiness=0,
                happy=happy,
                reasons={s: "not attempted: too few live storage peers" for s in range(params.n)},
                peers_found=len(found),
                peer_failures={_b32(p): why for p, why in dead.items()},
                live=len(ranked),
            )
        placer = SharePlacer(params.n, ranked, existing)
        placer.excluded.update(dead)
        alloc = None
        if size is not None and size > LITERAL_MAX:
            alloc = ShareLayout.for_share(SegmentGeometry(params, size), 0).share_length
        sender = ShareSender(
            si,
            placer,
            peers,
            self.storage_for,
            alloc_size=alloc,
            config=self.config.send,
            on_progress=on_progress,
            regenerate=regenerate,
            lease=self.config.provisional_lease,
        )
        sender.start(sorted(placer.initial()))
        return _Job(si, params, peers, placer, sender, len(found), self.storage_for, dead)


def _regenerator(
    source: Reopenable, fresh: Callable[[], Encoder], params: EncodingParams, main: Encoder
) -> Regenerate:
    """Re-encode one share's early blocks from the source (a share moved mid-upload,
    sender.py). Each block must hash to the leaf the main pass recorded for it, so a
    source that changed between passes can never yield a share that does not verify."""
    seg_size = params.segment_size

    async def regenerate(share: int, end: int | None) -> AsyncGenerator[bytes, None]:
        enc = fresh()

        def blocks_of(segs: list[EncodedSegment] | tuple[EncodedSegment, ...]) -> list[bytes]:
            out = []
            for seg in segs:
                if end is not None and seg.index >= end:
                    break
                block = seg.blocks[share]
                if tagged_hash(TAG_BLOCK, block) != main.block_hash(share, seg.index):
                    raise GridLocalError(
                        f"the file changed during the upload (segment {seg.index} differs)"
                    )
                out.append(block)
            return out

        done = 0
        async for chunk in source():
            view = memoryview(chunk)
            for i in range(0, len(view), seg_size):
                piece = view[i : i + seg_size]
                segs = await asyncio.to_thread(enc.feed, piece)
                for block in await asyncio.to_thread(blocks_of, segs):
                    yield block
                    done += 1
                    if end is not None and done >= end:
                        return
        res = await asyncio.to_thread(enc.finish)
        for block in blocks_of(res.segments):
            yield block

    return regenerate


@dataclass
class _Job(Generic[P]):
    si: bytes
    params: EncodingParams
    peers: dict[PeerKey, P]
    placer: SharePlacer
    sender: ShareSender[P]
    peers_found: int
    storage_for: StorageFor[P]
    unreachable: dict[PeerKey, str]

    async def confirm_present(self, ext: ExtensionBlock) -> None:
        """Check shares found already stored: their extension block copy must equal
        ours, and we add our lease. A share that fails either is unplaced."""
        layout = ShareLayout.from_extension(ext, 0)
        want = ext.to_bytes()
        claims: list[tuple[int, PeerKey]] = [
            (s, p)
            for s, p in self.placer.placed.items()
            if s not in self.sender.sent  # present before, or found on allocate
        ]
        claims += [(s, p) for p, shares in self.placer.extra.items() for s in shares]

        async def confirm(share: int, peer: PeerKey) -> str | None:
            api = self.storage_for(self.peers[peer])
            t = self.sender.config.op_timeout
            try:
                got = await bounded(api.read(self.si, share, *layout.ext_range()), t)
                if got != want:
                    return "stored share belongs to a different encoding"
                await bounded(api.add_lease(self.si), t)
            except Exception as e:
                return describe(e)
            return None

        results = await asyncio.gather(*(confirm(s, p) for s, p in claims))
        for (share, peer), why in zip(claims, results, strict=True):
            if why is None:
                continue
            if self.placer.placed.get(share) == peer:
                self.placer.lost(share, why)
            else:
                self.placer.extra.get(peer, set()).discard(share)

    async def release_sent(self) -> None:
        """A failed upload leaves nothing it made alive: drop our lease wherever we
        stored a share now; a server deletes shares no other live lease covers
        (docs/grid.md, "Upload errors"). Best effort: what fails here expires."""
        await self._each_holder("cancelling the lease", lambda api: api.cancel_lease(self.si))

    async def keep_sent(self) -> None:
        """The upload succeeded: extend the provisional lease of every share we stored
        to the holder's full term. A holder that fails it keeps the share for the
        provisional term only (the file then counts one share fewer, which the
        custodians repair like any lost share: docs/grid.md, "Upload errors")."""
        await self._each_holder("extending the lease", lambda api: api.add_lease(self.si))

    async def _each_holder(
        self, what: str, call: Callable[[StorageAPI], Awaitable[object]]
    ) -> None:
        """``call`` at every peer this upload stored a share on, in parallel, each
        bounded by the op timeout; a failure is logged, never raised."""
        peers = {self.placer.placed[s] for s in self.sender.sent if s in self.placer.placed}
        t = self.sender.config.op_timeout

        async def one(peer: PeerKey) -> None:
            try:
                await bounded(call(self.storage_for(self.peers[peer])), t)
            except Exception as e:
                log.info("%s on %s failed: %s", what, _b32(peer)[:12], describe(e))

        await asyncio.gather(*(one(p) for p in peers))

    def result(self, cap: ReadCap | VerifyCap, size: int, happy: int) -> UploadResult[P]:
        placer = self.placer
        h = placer.happiness()
        if h < happy:
            reasons = {s: placer.reasons.get(s, "not placed") for s in placer.unplaced()}
            raise UploadError(
                placed={s: _b32(p) for s, p in placer.placed.items()},
                happiness=h,
                happy=happy,
                reasons=reasons,
                peers_found=self.peers_found,
                peer_failures={_b32(p): why for p, why in self.unreachable.items()},
            )
        present = sum(1 for s in placer.placed if s not in self.sender.sent)
        return UploadResult(
            cap,
            size,
            {s: self.peers[p] for s, p in sorted(placer.placed.items())},
            h,
            len(self.sender.sent & set(placer.placed)),
            present,
            self.peers_found,
        )


def _b32(peer: PeerKey) -> str:
    return NodeId(peer).b32

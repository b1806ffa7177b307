"""Upload helper, the client side (docs/helper.md).

:class:`HelpedUploader` is an :class:`Uploader` front: a convergent upload that
should go through a helper is encrypted and encoded here as usual, but only the
ciphertext leaves, once, to a helper that erasure codes it and places the shares.

Invariants:
- The client trusts nothing the helper says about the result. It encodes the file
  itself (CPU only, nothing sent), then asks the peers nearest the storage index
  which shares they hold and checks every claimed share: its header and trailer
  (hash trees, share chain, extension block) must equal the local encoding's, and
  its server's hashes of all its blocks with a nonce of this upload
  (``storage.hashv``, :class:`Probe`) must equal the local ones. Only shares
  that pass count toward happiness; below ``happy`` the helper failed. So a
  helper that drops, corrupts or mixes up data never yields a cap. With servers
  that cannot hash, one random block per share is read instead, and the whole
  file is downloaded once unless k shares were hashed whole.
- A helper that refuses, vanishes or fails verification is reported and the next
  one is tried; after the last, the file is uploaded directly. The result names
  the helper used (``helper``) and every failure before it (``helper_failures``).
- A helper that already holds part of the ciphertext (an interrupted upload)
  receives only the rest; one whose grid already holds the file receives nothing.
- One-pass random-key uploads (mutable versions) and literal files always go direct:
  a one-pass source cannot be re-read for a retry. A random-key upload of a source
  that can be read again (:meth:`HelpedUploader.upload_random_from`: a local file,
  or a body the node spooled) goes through helpers, with a fresh key each try.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol

from p2pstore.base.tasks import bounded
from p2pstore.immutable import (
    BadShareError,
    ConvergenceHasher,
    EncodedSegment,
    Encoder,
    EncodeResult,
    EncodingParams,
    ReadCap,
    SegmentGeometry,
    ShareLayout,
)
from p2pstore.immutable.crypto import random_key
from p2pstore.immutable.errors import LocalError as ImmutableLocalError
from p2pstore.immutable.params import LITERAL_MAX
from p2pstore.immutable.share_layout import HEADER_SIZE
from quic_transport.errors import TransportError

from . import feeding
from .download import Downloader, read_ranges
from .errors import FileShrank, GridLocalError
from .helper import HelperError
from .helper_verify import MAX_RANGES as MAX_RANGES  # re-exported (tests)
from .helper_verify import Probe, probed, spot_checked
from .peers import READ_CHUNK, P, Progress, describe
from .placement import happiness
from .regenerate import list_existing
from .sources import Reopenable
from .upload import Uploader, UploadResult

log = logging.getLogger(__name__)

USES = ("never", "always", "slow")
#: tries of one helper when its connection breaks (each resumes from its spool)
RESUME_TRIES = 3
RESUME_PAUSE = 1.0
#: a helper that failed is tried after the others for this long (seconds)
FAILED_FOR = 600.0


class HelperAPI(Protocol):
    """One helper, as the client reaches it (``helper_rpc.RpcHelperClient``)."""

    name: str

    async def start(self, si: bytes, params: EncodingParams, size: int) -> dict[str, Any]: ...

    async def push(self, si: bytes, offset: int, chunks: AsyncIterator[bytes]) -> int: ...

    async def finish(self, si: bytes, size: int) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class HelperUse:
    #: "never", "always" (when a helper is known), or "slow": when this node's
    #: measured upload rate is below ``slow_below`` bytes/s
    use: str = "never"
    slow_below: int = 2_500_000
    #: bound on each verification read
    verify_timeout: float = 30.0
    #: download the whole file once placed when fewer than k shares were hashed whole
    #: by their servers (size bytes down; see docs/helper.md)
    read_back: bool = True


class HelpedUploader(Generic[P]):
    """Convergent uploads through a helper when :class:`HelperUse` says so; all
    else (and every fallback) through ``direct``. ``helpers`` returns the helpers
    to try at the time of the upload; they are tried in :meth:`ranked` order."""

    def __init__(
        self,
        direct: Uploader[P],
        helpers: Callable[[], Awaitable[Sequence[HelperAPI]]],
        config: HelperUse,
    ) -> None:
        if config.use not in USES:
            raise ValueError(f"helper use must be one of {', '.join(USES)}")
        self.direct = direct
        self.helpers = helpers
        self.use = config
        #: this node's measured upload rate, bytes per second (:meth:`_measured`)
        self.uplink: float | None = None
        #: each helper's measured throughput: file bytes per second of a whole upload
        #: through it (push, placement and verification), from uploads of 4 MiB or more
        self.helper_rates: dict[str, float] = {}
        #: when each helper last failed (``time.monotonic``)
        self._failed_at: dict[str, float] = {}
        #: ciphertext bytes the last upload through each helper pushed
        self._pushed: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"HelpedUploader(use={self.use.use}, uplink={self.uplink})"

    def wanted(self) -> bool:
        if self.use.use == "always":
            return True
        if self.use.use == "slow":
            return self.uplink is not None and self.uplink < self.use.slow_below
        return False

    async def upload_random(self, chunks: Any, **kwargs: Any) -> UploadResult[P]:
        """One pass, directly (a source that cannot be read again); measured for
        ``use = "slow"`` like any direct upload."""
        params = kwargs.get("params") or self.direct.params
        return await self._directly(self.direct.upload_random(chunks, **kwargs), params, [])

    async def upload_convergent(
        self,
        source: Reopenable,
        convergence_secret: bytes,
        *,
        params: EncodingParams | None = None,
        happy: int | None = None,
        progress: Progress | None = None,
    ) -> UploadResult[P]:
        params = params or self.direct.params
        happy = self.direct.config.happy if happy is None else happy
        failures: list[str] = []
        fresh_key = False  # set once a helper left shares that are not this file's
        if self.wanted():
            hasher = ConvergenceHasher(convergence_secret, params)
            async for chunk in source():
                await asyncio.to_thread(hasher.update, chunk)
            size = hasher.size
            if size > LITERAL_MAX:
                done, fresh_key = await self._through_helpers(
                    source, size, params, happy, progress, failures, hasher.key
                )
                if done is not None:
                    return done
        if fresh_key:
            upload = self.direct.upload_random(
                source(), params=params, happy=happy, progress=progress, size=size
            )
        else:
            upload = self.direct.upload_convergent(
                source, convergence_secret, params=params, happy=happy, progress=progress
            )
        return await self._directly(upload, params, failures)

    async def upload_random_from(
        self,
        source: Reopenable,
        size: int,
        *,
        params: EncodingParams | None = None,
        happy: int | None = None,
        progress: Progress | None = None,
    ) -> UploadResult[P]:
        """A random-key upload of a source that can be read again (a pipe or an HTTP
        body its caller spooled): through helpers like a convergent upload, each try
        with a fresh key, and directly after the last."""
        params = params or self.direct.params
        happy = self.direct.config.happy if happy is None else happy
        failures: list[str] = []
        if self.wanted() and size > LITERAL_MAX:
            done, _ = await self._through_helpers(
                source, size, params, happy, progress, failures, random_key
            )
            if done is not None:
                return done
        upload = self.direct.upload_random(
            source(), params=params, happy=happy, progress=progress, size=size
        )
        return await self._directly(upload, params, failures)

    async def _directly(
        self, upload: Awaitable[UploadResult[P]], params: EncodingParams, failures: list[str]
    ) -> UploadResult[P]:
        """A direct upload (after the helpers that failed, if any): timed for the
        measured uplink, and carrying those failures."""
        t0 = time.monotonic()
        res = await upload
        self._measure(res, params, time.monotonic() - t0)
        if failures:
            log.warning("uploaded directly after: %s", "; ".join(failures))
            res = _with(res, None, tuple(failures))
        return res

    async def _through_helpers(
        self,
        source: Reopenable,
        size: int,
        params: EncodingParams,
        happy: int,
        progress: Progress | None,
        failures: list[str],
        key: Callable[[], bytes],
    ) -> tuple[UploadResult[P] | None, bool]:
        """Try each usable helper in turn (:meth:`ranked`): the announced result, or
        None with every failure added to ``failures``; and whether a helper left
        shares that are not this file's (the next try then needs a fresh key)."""
        fresh_key = False
        for helper in self.ranked(await self.helpers()):
            try:
                t0 = time.monotonic()
                k = random_key() if fresh_key else key()
                self._pushed.pop(helper.name, None)
                res = await self._resuming(helper, source, k, size, params, happy, progress)
                # rated by what was pushed: a file the grid held, or a resumed push,
                # says little of the helper's pace
                self._rate(helper.name, self._pushed.pop(helper.name, 0), time.monotonic() - t0)
                return self.direct.announce(_with(res, helper.name, tuple(failures))), fresh_key
            except _Poisoned as e:
                fresh_key = True
                failures.append(f"{helper.name}: {e}; next try with a fresh key")
            except (FileShrank, ImmutableLocalError, GridLocalError):
                raise  # this side's file or settings: no helper would do better
            except Exception as e:
                failures.append(f"{helper.name}: {_why(e)}")
                if getattr(e, "code", None) == "helper-busy":
                    log.warning("upload helper %s; trying the next way", failures[-1])
                    continue  # busy now, not broken: it keeps its place
            self._failed_at[helper.name] = time.monotonic()
            log.warning("upload helper %s; trying the next way", failures[-1])
        if not failures:
            failures.append("no upload helper is known or reachable")
        return None, fresh_key

    def ranked(self, helpers: Sequence[HelperAPI]) -> list[HelperAPI]:
        """The order to try ``helpers`` in: those not measured yet, in their
        configured order (so each is measured once it is usable); then the measured
        ones, fastest first; a helper that failed in the last ``FAILED_FOR`` seconds
        after all of them."""
        now = time.monotonic()

        def key(item: tuple[int, HelperAPI]) -> tuple[bool, bool, float, int]:
            place, h = item
            at = self._failed_at.get(h.name)
            failed = at is not None and now - at < FAILED_FOR
            rate = self.helper_rates.get(h.name)
            return (failed, rate is not None, -(rate or 0.0), place)

        return [h for _, h in sorted(enumerate(helpers), key=key)]

    def _rate(self, name: str, pushed: int, took: float) -> None:
        """A helper's throughput from an upload through it that pushed ``pushed``
        bytes (4 MiB or more) in ``took`` seconds in all."""
        if pushed >= 4 << 20 and took > 0:
            old, rate = self.helper_rates.get(name), pushed / took
            self.helper_rates[name] = rate if old is None else 0.5 * old + 0.5 * rate
        self._failed_at.pop(name, None)

    def _measure(self, res: UploadResult[P], params: EncodingParams, took: float) -> None:
        self._measured(res.size // params.k * res.shares_sent, took)

    def _measured(self, sent: int, took: float) -> None:
        """Bytes this node sent in ``took`` seconds (shares, or ciphertext to a helper):
        the upload rate ``use = "slow"`` compares, from transfers of 4 MiB or more."""
        if sent >= 4 << 20 and took > 0:
            rate = sent / took
            self.uplink = rate if self.uplink is None else 0.5 * self.uplink + 0.5 * rate

    async def _resuming(
        self,
        helper: HelperAPI,
        source: Reopenable,
        key: bytes,
        size: int,
        params: EncodingParams,
        happy: int,
        progress: Progress | None,
    ) -> UploadResult[P]:
        """:meth:`_via`, again from where the helper's spool stopped after a broken
        connection (``RESUME_TRIES`` in all, with a growing pause)."""
        for attempt in range(1, RESUME_TRIES + 1):
            try:
                return await self._via(helper, source, key, size, params, happy, progress)
            except (ConnectionError, TimeoutError, TransportError) as e:
                if attempt == RESUME_TRIES:
                    raise
                log.info("upload helper %s: %s; resuming", helper.name[:12], describe(e))
                await asyncio.sleep(RESUME_PAUSE * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _via(
        self,
        helper: HelperAPI,
        source: Reopenable,
        key: bytes,
        size: int,
        params: EncodingParams,
        happy: int,
        progress: Progress | None,
    ) -> UploadResult[P]:
        enc = Encoder(key, params, expected_size=size)
        si = enc.storage_index
        answer = await helper.start(si, params, size)
        state, have = answer.get("state"), answer.get("have", 0)
        if state not in ("present", "send") or not isinstance(have, int) or not 0 <= have <= size:
            raise HelperError("bad-response", f"helper.start answered {answer!r:.200}")
        with feeding.encoder_thread() as ex:  # a cancel never waits for it
            stream = _Ciphertext(enc, source, params, size, ex, have, progress)
            if state == "send" and have < size:
                t0 = time.monotonic()
                got = await helper.push(si, have, stream.chunks())
                if got != size:
                    raise HelperError("helper-offset", f"helper has {got} of {size} bytes")
                self._measured(size - have, time.monotonic() - t0)  # the uplink, too
                self._pushed[helper.name] = size - have
            else:
                async for _ in stream.chunks():
                    pass  # the local encoding, to check the helper's shares against
            if state == "send":
                await helper.finish(si, size)
        result = stream.result
        assert result is not None and isinstance(result.cap, ReadCap)
        v = await self._verify(enc, result, stream.probe)
        h = v.happiness
        if v.bad and h < happy:
            raise _Poisoned(f"{v.bad} share(s) on the grid differ from this file's encoding")
        if v.bad:  # enough good ones: a storage peer's foreign copies, not the helper's
            log.warning("helper upload: %d foreign share(s) at this storage index", v.bad)
        if h < happy:
            raise HelperError(
                "helper-verify",
                f"only {h} verified holders of the shares the helper placed (happy is {happy})",
            )
        if self.use.read_back and v.whole < params.k:  # servers without storage.hashv
            await self._read_back(result.cap)
        return UploadResult(
            result.cap, size, v.placements, h, 0, len(v.placements), v.found, helper=helper.name
        )

    async def _read_back(self, cap: ReadCap) -> None:
        """Download the file (every block checked against the hash trees, which equal
        the local encoding's) and drop the bytes: one corrupt segment in every
        share would pass the per-share spot checks but not this."""
        up = self.direct
        down: Downloader[P] = Downloader(up.find_peers, up.storage_for)
        try:
            async for _ in down.read(cap):
                pass
        except Exception as e:
            raise _Poisoned(f"the placed shares do not read back ({describe(e)})") from None

    async def _verify(self, enc: Encoder, result: EncodeResult, probe: Probe) -> _Verified[P]:
        """Check every share the grid holds of this file against the local encoding
        and add this node's lease to the good ones."""
        up = self.direct
        si = enc.storage_index
        found = list(await up.find_peers(si, up.config.lookup_count or 2 * probe.geometry.params.n))
        peers = {p.node_id.raw: p for p in found}
        existing, _dead = await list_existing(si, peers, up.storage_for, up.config.list_timeout)
        geometry = probe.geometry
        trailers = {t.share_number: t for t in result.trailers}
        t = self.use.verify_timeout

        async def check(share: int, peer: bytes) -> tuple[bool | None, bool]:
            """(True: verified, False: differs, None: could not be read; whether
            the server hashed every block)."""
            trailer = trailers.get(share)
            if trailer is None:
                return False, False
            layout = ShareLayout.for_share(geometry, share)
            ranges = [(0, HEADER_SIZE), (trailer.trailer_offset, len(trailer.trailer))]
            api = up.storage_for(peers[peer])
            try:
                head, tail = await bounded(
                    read_ranges(
                        api,
                        si,
                        share,
                        ranges,
                        max_read=READ_CHUNK,
                        max_ranges=MAX_RANGES,
                        timeout=t,
                    ),
                    t,
                )
                if head != trailer.header or tail != trailer.trailer:
                    log.warning("helper upload: share %d on a peer differs", share)
                    return False, False
                bad = await probed(api, si, share, layout, probe, t)
                whole = bad is not None
                if bad is None:  # the server cannot hash: one block, read
                    bad = await spot_checked(api, si, share, layout, enc, t)
                if bad:
                    log.warning("helper upload: share %d differs from segment %d on", share, bad[0])
                    return False, False
                await bounded(api.add_lease(si), t)
            except BadShareError:  # shorter than this file's encoding
                log.warning("helper upload: share %d on a peer differs", share)
                return False, False
            except Exception as e:
                log.info("helper upload: share %d not verified: %s", share, describe(e))
                return None, False
            return True, whole

        claims = [(s, p) for s, holders in existing.items() for p in holders]
        oks = await asyncio.gather(*(check(s, p) for s, p in claims))
        holdings: dict[bytes, set[int]] = {}
        whole: set[int] = set()
        for (share, peer), (ok, hashed) in zip(claims, oks, strict=True):
            if ok:
                holdings.setdefault(peer, set()).add(share)
                if hashed:
                    whole.add(share)
        placements: dict[int, P] = {}
        for peer, shares in holdings.items():
            for s in shares:
                placements.setdefault(s, peers[peer])
        bad = sum(1 for ok, _ in oks if ok is False)
        return _Verified(
            dict(sorted(placements.items())), happiness(holdings), len(found), bad, len(whole)
        )


@dataclass(frozen=True, slots=True)
class _Verified(Generic[P]):
    placements: dict[int, P]  # share -> a holder whose copy verified
    happiness: int
    found: int  # peers the lookup found
    bad: int  # copies that differ from the local encoding
    whole: int  # distinct shares whose every block a server hashed and matched


class _Ciphertext:
    """Pass two of a convergent upload: encode locally, yield the ciphertext from
    byte ``skip`` on; ``result`` is the encoding's result once exhausted."""

    def __init__(
        self,
        enc: Encoder,
        source: Reopenable,
        params: EncodingParams,
        size: int,
        ex: ThreadPoolExecutor,
        skip: int,
        progress: Progress | None,
    ) -> None:
        self.enc, self.source, self.params, self.size = enc, source, params, size
        self.ex, self.skip, self.progress = ex, skip, progress
        self.result: EncodeResult | None = None
        self.probe = Probe(SegmentGeometry(params, size))

    def _feed(self, data: memoryview) -> list[EncodedSegment]:
        segments = self.enc.feed(data)
        self.probe.add(segments)
        return segments

    def _finish(self) -> EncodeResult:
        result = self.enc.finish()
        self.probe.add(result.segments)
        return result

    def _piece(self, seg: EncodedSegment) -> bytes:
        start = seg.index * self.params.segment_size
        length = min(self.params.segment_size, self.size - start)
        end = start + length
        if end <= self.skip:
            return b""
        data = b"".join(seg.blocks[: self.params.k])[:length]
        return data[max(0, self.skip - start) :]

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        seg_size = self.params.segment_size
        done = 0
        async for chunk in self.source():
            view = memoryview(chunk)
            for i in range(0, len(view), seg_size):
                for seg in await loop.run_in_executor(self.ex, self._feed, view[i : i + seg_size]):
                    piece = self._piece(seg)
                    done += len(piece)
                    if self.progress is not None:
                        self.progress(self.skip + done, self.size)
                    if piece:
                        yield piece
        self.result = await loop.run_in_executor(self.ex, self._finish)
        for seg in self.result.segments:
            piece = self._piece(seg)
            if piece:
                yield piece
        if self.progress is not None:
            self.progress(self.size, self.size)


class _Poisoned(Exception):
    """The grid holds shares at this storage index that are not this file's (a
    helper encoded other bytes): the same key would find them again."""


def _why(e: BaseException) -> str:
    if isinstance(e, HelperError):
        return f"{e.code}: {e.message}"
    code, message = getattr(e, "code", None), getattr(e, "message", None)
    if isinstance(code, str) and isinstance(message, str):
        return f"{code}: {message}"
    return describe(e)


def _with(res: UploadResult[P], helper: str | None, failures: tuple[str, ...]) -> UploadResult[P]:
    return dataclasses.replace(res, helper=helper, helper_failures=failures)

"""Stateful property test: random sequences of uploads, writes, closes, aborts, lease
operations, expiries and clock jumps against a plain in-memory model of the
documented semantics (docs/storage.md). After every step the server's listings,
contents, accounts and leases must equal the model's."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from p2pstore.storage import (
    AlreadyUploading,
    IncompleteShare,
    NoSuchLease,
    NoSuchShare,
    NoSuchUpload,
    OutOfRange,
    ShareExists,
    StorageConfig,
    StorageError,
    StorageServer,
)
from p2pstore.storage.scan import scan_usage
from p2pstore.testing.storage_grid import FakeClock
from quic_transport.identity import NodeId

SIS = [bytes([i]) * 20 for i in range(2)]
OWNERS = [NodeId(bytes([0x40 + i]) * 20) for i in range(3)]
DURATION = 100.0
MAX_SHARE = 64

Key = tuple[bytes, int]


class _Up:
    def __init__(self, owner: NodeId, size: int | None) -> None:
        self.owner = owner
        self.size = size
        self.data: dict[int, int] = {}  # offset -> byte


class StorageModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="storage-model-"))
        self.clock = FakeClock(1000.0)
        cfg = StorageConfig(
            max_share_size=MAX_SHARE, lease_duration=DURATION, upload_idle_timeout=10**9
        )
        self.server = StorageServer.open(self.dir / "s", cfg, clock=self.clock)
        self.uploads: dict[Key, _Up] = {}
        self.shares: dict[Key, bytes] = {}
        self.leases: dict[bytes, dict[bytes, float]] = {}

    def teardown(self) -> None:
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _expect(self, exc: type[StorageError] | None, fn: object, *args: object) -> object:
        assert callable(fn)
        try:
            result = fn(*args)
        except StorageError as e:
            assert exc is not None and type(e) is exc, f"got {e!r}, model expected {exc}"
            return None
        assert exc is None, f"model expected {exc.__name__}, call succeeded"
        return result

    def _drop_index(self, si: bytes) -> None:
        for key in [k for k in self.shares if k[0] == si]:
            del self.shares[key]
        self.leases.pop(si, None)

    def _has_shares(self, si: bytes) -> bool:
        return any(k[0] == si for k in self.shares)

    @rule(
        si=st.sampled_from(SIS),
        shnum=st.integers(0, 2),
        who=st.sampled_from(OWNERS),
        size=st.none() | st.integers(1, MAX_SHARE),
    )
    def allocate(self, si: bytes, shnum: int, who: NodeId, size: int | None) -> None:
        key = (si, shnum)
        exc = (
            AlreadyUploading if key in self.uploads else ShareExists if key in self.shares else None
        )
        self._expect(exc, self.server.allocate, si, shnum, who, size)
        if exc is None:
            self.uploads[key] = _Up(who, size)

    @rule(
        si=st.sampled_from(SIS),
        shnum=st.integers(0, 2),
        who=st.sampled_from(OWNERS),
        offset=st.integers(0, MAX_SHARE),
        data=st.binary(min_size=0, max_size=24),
    )
    def write(self, si: bytes, shnum: int, who: NodeId, offset: int, data: bytes) -> None:
        key = (si, shnum)
        up = self.uploads.get(key)
        exc: type[StorageError] | None = None
        if up is None or up.owner != who:
            exc = ShareExists if up is None and key in self.shares else NoSuchUpload
        elif offset + len(data) > (up.size if up.size is not None else MAX_SHARE):
            exc = OutOfRange
        self._expect(exc, self.server.write, si, shnum, who, offset, data)
        if exc is None and up is not None:
            for i, b in enumerate(data):
                up.data[offset + i] = b

    @rule(si=st.sampled_from(SIS), shnum=st.integers(0, 2), who=st.sampled_from(OWNERS))
    def close(self, si: bytes, shnum: int, who: NodeId) -> None:
        key = (si, shnum)
        up = self.uploads.get(key)
        exc: type[StorageError] | None = None
        if up is None or up.owner != who:
            exc = ShareExists if up is None and key in self.shares else NoSuchUpload
        else:
            end = up.size if up.size is not None else (max(up.data) + 1 if up.data else 0)
            if end == 0 or any(i not in up.data for i in range(end)):
                exc = IncompleteShare
        self._expect(exc, self.server.close_share, si, shnum, who)
        if exc is None and up is not None:
            del self.uploads[key]
            self.shares[key] = bytes(up.data[i] for i in range(end))
            self._lease(si, who)

    def _lease(self, si: bytes, who: NodeId) -> None:
        now = self.clock.now
        held = self.leases.get(si, {})
        held = {o: t for o, t in held.items() if t > now or o == who.raw}
        held[who.raw] = max(held.get(who.raw, 0.0), now + DURATION)
        self.leases[si] = held

    @rule(si=st.sampled_from(SIS), shnum=st.integers(0, 2), who=st.sampled_from(OWNERS))
    def abort(self, si: bytes, shnum: int, who: NodeId) -> None:
        key = (si, shnum)
        up = self.uploads.get(key)
        exc: type[StorageError] | None = None
        if up is None or up.owner != who:
            exc = ShareExists if up is None and key in self.shares else NoSuchUpload
        self._expect(exc, self.server.abort, si, shnum, who)
        if exc is None:
            del self.uploads[key]

    @rule(si=st.sampled_from(SIS), who=st.sampled_from(OWNERS), renew=st.booleans())
    def add_lease(self, si: bytes, who: NodeId, renew: bool) -> None:
        exc: type[StorageError] | None = None
        if not self._has_shares(si):
            exc = NoSuchShare
        elif renew and who.raw not in self.leases.get(si, {}):
            exc = NoSuchLease
        fn = self.server.renew_lease if renew else self.server.add_lease
        got = self._expect(exc, fn, si, who)
        if exc is None:
            self._lease(si, who)
            assert got == self.leases[si][who.raw]

    @rule(si=st.sampled_from(SIS), who=st.sampled_from(OWNERS))
    def cancel_lease(self, si: bytes, who: NodeId) -> None:
        held = self.leases.get(si, {})
        exc = None if who.raw in held else NoSuchLease
        removed = self._expect(exc, self.server.cancel_lease, si, who)
        if exc is None:
            now = self.clock.now
            rest = {o: t for o, t in held.items() if o != who.raw and t > now}
            if rest:
                self.leases[si] = rest
                assert removed == 0
            else:
                n = sum(1 for k in self.shares if k[0] == si)
                self._drop_index(si)
                assert removed == n

    @rule(seconds=st.sampled_from([1.0, 30.0, 60.0, 101.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(si=st.sampled_from(SIS))
    def expire(self, si: bytes) -> None:
        now = self.clock.now
        removed = self.server.expire(si)
        if not self._has_shares(si):
            self.leases.pop(si, None)
            assert removed == 0
            return
        live = {o: t for o, t in self.leases.get(si, {}).items() if t > now}
        if live:
            self.leases[si] = live
            assert removed == 0
        else:
            n = sum(1 for k in self.shares if k[0] == si)
            self._drop_index(si)
            assert removed == n

    @invariant()
    def matches_model(self) -> None:
        for si in SIS:
            want = {k[1]: len(v) for k, v in sorted(self.shares.items()) if k[0] == si}
            assert self.server.list_shares(si) == want
            for shnum, size in want.items():
                assert self.server.read(si, shnum, 0, MAX_SHARE) == self.shares[(si, shnum)]
                assert size > 0
            got = {le.owner: le.expires for le in self.server.leases(si)}
            assert got == self.leases.get(si, {})
        st_ = self.server.stat()
        assert st_.used == sum(len(v) for v in self.shares.values())
        assert st_.shares == len(self.shares)
        assert st_.uploads == len(self.uploads)
        reserved = sum(
            u.size if u.size is not None else (max(u.data) + 1 if u.data else 0)
            for u in self.uploads.values()
        )
        assert st_.reserved == reserved
        assert scan_usage(self.server.layout) == (st_.used, st_.shares)


StorageModel.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestStorageModel = StorageModel.TestCase

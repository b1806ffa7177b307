"""Root record sealing, the reader's checks (forged, foreign, replayed records), the
rollback guard's persistence, the writer's policy, conditional writes and
serialization, and the vdrive.apply wire adapter. No network."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.records import Record, sign_record
from p2pstore.immutable import LiteralCap, ReadCap
from p2pstore.testing.vdrive import MemoryRecordDht
from p2pstore.vdrive.dirnode import DirCap
from p2pstore.vdrive.drive import DriveReader
from p2pstore.vdrive.errors import VdriveLocalError, VdriveRemoteError
from p2pstore.vdrive.objects import MemoryObjectStore
from p2pstore.vdrive.ops import Link, Mkdir, list_dir
from p2pstore.vdrive.root_record import (
    SHARED_NAME,
    RootPointer,
    SeenStore,
    new_read_secret,
    open_pointer,
    seal_pointer,
)
from p2pstore.vdrive.rpc import RemoteWriter, handle_apply, parse_reply, request_body
from p2pstore.vdrive.writer import DriveWriter, WritePolicy
from quic_transport.identity import NodeKey

ROOT = DirCap(ReadCap(1, 1, 400, bytes(32), bytes(32)))
CAP = ReadCap(3, 10, 5000, bytes(range(32)), bytes(range(32, 64)))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_seal_open() -> None:
    key, secret = NodeKey.generate(), new_read_secret()
    p = RootPointer(7, ROOT, 123.5)
    v = seal_pointer(p, read_secret=secret, public_key=key.public_key, name=SHARED_NAME)
    assert ROOT.to_string().encode() not in v  # a storer sees no cap
    assert open_pointer(v, read_secret=secret, public_key=key.public_key, name=SHARED_NAME) == p
    for kwargs in [
        {"read_secret": new_read_secret(), "public_key": key.public_key, "name": SHARED_NAME},
        {"read_secret": secret, "public_key": NodeKey.generate().public_key, "name": SHARED_NAME},
        {"read_secret": secret, "public_key": key.public_key, "name": b"other"},
    ]:
        with pytest.raises(VdriveRemoteError) as e:
            open_pointer(v, **kwargs)  # type: ignore[arg-type]
        assert e.value.code == "bad-record"
    for bad in [b"", v[:30], b"\x02" + v[1:], v[:-1] + bytes([v[-1] ^ 1])]:
        with pytest.raises(VdriveRemoteError):
            open_pointer(bad, read_secret=secret, public_key=key.public_key, name=SHARED_NAME)


def test_seen_store_refuses_rollback_and_persists(tmp_path: Path) -> None:
    f = tmp_path / "state" / "vdrive_seen.json"
    s = SeenStore(f)
    s.check("d", RootPointer(3, ROOT))
    s.check("d", RootPointer(3, ROOT))  # same again is fine
    other = DirCap(LiteralCap(b"\xa0"))
    with pytest.raises(VdriveRemoteError) as e:
        s.check("d", RootPointer(3, other))  # equivocation
    assert e.value.code == "rollback"
    s2 = SeenStore(f)  # a restart remembers
    assert s2.highest("d") == 3
    with pytest.raises(VdriveRemoteError) as e:
        s2.check("d", RootPointer(2, ROOT))
    assert e.value.code == "rollback" and e.value.details == {"seen": 3, "offered": 2}
    f.write_text("{not json")
    assert SeenStore(f).highest("d") == 0 and f.with_suffix(".json.corrupt").exists()


def make_writer(key: NodeKey, dht: MemoryRecordDht, **kw: Any) -> DriveWriter:
    return DriveWriter(
        signer=key,
        name=SHARED_NAME,
        read_secret=kw.pop("secret", new_read_secret()),
        store=kw.pop("store", MemoryObjectStore()),
        dht=dht,
        policy=kw.pop("policy", WritePolicy.only_owner(key.node_id)),
        state_path=kw.pop("state_path", None),
    )


def reader_for(w: DriveWriter, dht: Any, seen: SeenStore | None = None) -> DriveReader:
    return DriveReader(
        source=dht,
        public_key=w.public_key,
        name=SHARED_NAME,
        read_secret=w.read_secret,
        store=w.store,
        seen=seen or SeenStore(None),
        max_age=0,
    )


class Replay:
    """A record source that serves whatever record the test chooses."""

    def __init__(self, rec: Record | None) -> None:
        self.rec = rec

    async def get(self, key: Any) -> Record | None:
        return self.rec


def test_reader_refuses_forged_foreign_and_replayed(tmp_path: Path) -> None:
    async def go() -> None:
        key, dht = NodeKey.generate(), MemoryRecordDht()
        w = make_writer(key, dht)
        await w.apply(Mkdir(("a",)), expected_sequence=None, writer=key.node_id)
        old = dht.records[next(iter(dht.records))]
        await w.apply(Link(("a", "f"), CAP), expected_sequence=None, writer=key.node_id)
        seen = SeenStore(tmp_path / "seen.json")
        r = reader_for(w, dht, seen)
        ptr = await r.pointer()
        assert ptr.sequence == 2 and "f" in await list_dir(w.store, ptr.root, ("a",))
        # replayed (older, validly signed) record: refused by a fresh reader that
        # shares the persisted seen file
        r2 = reader_for(w, Replay(old), SeenStore(tmp_path / "seen.json"))
        with pytest.raises(VdriveRemoteError) as e:
            await r2.pointer()
        assert e.value.code == "rollback"
        # the same reader keeps the newer pointer it already has
        r.source = Replay(old)
        assert (await r.pointer()).sequence == 2
        # forged: value changed, signature kept
        cur = dht.records[old.key]
        forged = dataclasses.replace(cur, value=cur.value[:-1] + bytes([cur.value[-1] ^ 1]))
        r3 = reader_for(w, Replay(forged))
        with pytest.raises(VdriveRemoteError) as e:
            await r3.pointer()
        assert e.value.code == "bad-record"
        # foreign: a validly signed record by another key under the same name
        mallory = NodeKey.generate()
        foreign = sign_record(mallory, SHARED_NAME, 99, cur.value, expires=cur.expires)
        with pytest.raises(VdriveRemoteError) as e:
            await reader_for(w, Replay(foreign)).pointer()
        assert e.value.code == "bad-record"

    run(go())


def test_policy_conflicts_and_serialization(tmp_path: Path) -> None:
    async def go() -> None:
        key, dht = NodeKey.generate(), MemoryRecordDht()
        alice, bob, eve = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
        policy = WritePolicy.from_list(key.node_id, [alice.node_id, bob.node_id], open=False)
        w = make_writer(key, dht, policy=policy, state_path=tmp_path / "private" / "head.json")
        with pytest.raises(VdriveLocalError) as e:
            await w.apply(Mkdir(("x",)), expected_sequence=None, writer=eve.node_id)
        assert e.value.code == "refused" and dht.publishes == 0
        r = await w.apply(Mkdir(("x",)), expected_sequence=0, writer=alice.node_id)
        assert (r.sequence, r.changed) == (1, True)
        # two concurrent writers, both conditional on sequence 1: one wins
        results = await asyncio.gather(
            w.apply(Link(("x", "a"), CAP), expected_sequence=1, writer=alice.node_id),
            w.apply(Link(("x", "b"), CAP), expected_sequence=1, writer=bob.node_id),
            return_exceptions=True,
        )
        oks = [x for x in results if not isinstance(x, BaseException)]
        errs = [x for x in results if isinstance(x, VdriveLocalError)]
        assert len(oks) == 1 and oks[0].sequence == 2
        assert len(errs) == 1 and errs[0].code == "sequence-mismatch"
        assert errs[0].details == {"sequence": 2}
        # unconditional concurrent writes are serialized: both land, sequences 3 and 4
        got = await asyncio.gather(
            *(
                w.apply(Link(("x", f"n{i}"), CAP), expected_sequence=None, writer=bob.node_id)
                for i in range(2)
            )
        )
        assert sorted(g.sequence for g in got) == [3, 4]
        # a restarted writer recovers its head from the private state file
        w2 = make_writer(
            key, MemoryRecordDht(), secret=w.read_secret, store=w.store, state_path=w.state_path
        )
        assert (await w2.load()).sequence == 4
        assert (tmp_path / "private" / "head.json").stat().st_mode & 0o077 == 0
        # open mode admits anyone
        w.policy = WritePolicy(key.node_id, open=True)
        assert (await w.apply(Mkdir(("e",)), expected_sequence=4, writer=eve.node_id)).sequence == 5

    run(go())


def test_rpc_adapter() -> None:
    async def go() -> None:
        key, dht = NodeKey.generate(), MemoryRecordDht()
        w = make_writer(key, dht, policy=WritePolicy(key.node_id, open=True))
        caller = NodeKey.generate().node_id

        async def call(body: Any) -> Any:
            return await handle_apply(w, caller, body)

        rw = RemoteWriter(call)
        assert (await rw.apply(Mkdir(("a",)), expected_sequence=0)).sequence == 1
        with pytest.raises(VdriveLocalError) as e:
            await rw.apply(Mkdir(("b",)), expected_sequence=0)
        assert e.value.code == "sequence-mismatch" and e.value.details == {"sequence": 1}
        with pytest.raises(VdriveLocalError) as e:
            await rw.apply(Mkdir(("a",)), expected_sequence=None)
        assert e.value.code == "exists"
        for body in [
            None,
            {},
            {**request_body(Mkdir(("a",)), None), "x": 1},
            {**request_body(Mkdir(("a",)), None), "drive": "private"},
            {**request_body(Mkdir(("a",)), None), "expected_sequence": -1},
            {
                **request_body(Mkdir(("a",)), None),
                "op": {"op": "mkdir", "path": ["."], "parents": 1},
            },
            {
                **request_body(Mkdir(("a",)), None),
                "op": {"op": "link", "path": ["z"], "cap": "x", "replace": False},
            },
            {
                **request_body(Mkdir(("a",)), None),
                "op": {"op": "mkdir", "path": ["a"] * 65, "parents": True},
            },
            # unhashable or odd values where a name is expected (a TypeError, once)
            {**request_body(Mkdir(("a",)), None), "op": {"op": [], "path": ["a"]}},
            {**request_body(Mkdir(("a",)), None), "op": {"op": {}, "path": ["a"]}},
            {**request_body(Mkdir(("a",)), None), "drive": []},
            {**request_body(Mkdir(("a",)), None), "op": []},
        ]:
            reply = await handle_apply(w, caller, body)
            assert reply["status"] == "error" and reply["code"] in ("bad-request", "bad-path")

        async def down(body: Any) -> Any:
            raise ConnectionError("no route")

        with pytest.raises(VdriveLocalError) as e:
            await RemoteWriter(down).apply(Mkdir(("z",)), expected_sequence=None)
        assert (
            e.value.code == "vdrive-unavailable"
            and "reading the drive still works" in e.value.message
        )
        for junk in [None, [], {"status": "ok"}, {"status": "weird", "sequence": 1}]:
            with pytest.raises(VdriveLocalError):
                parse_reply(junk)
        with pytest.raises(VdriveLocalError) as e:
            parse_reply({"status": "error", "code": "evil", "message": "m", "sequence": 1})
        assert e.value.code == "refused"

    run(go())


def test_failed_publish_is_retried_and_reported(tmp_path: Path) -> None:
    async def go() -> None:
        key, dht = NodeKey.generate(), MemoryRecordDht()
        w = make_writer(key, dht, state_path=tmp_path / "head.json")
        await w.apply(Mkdir(("a",)), expected_sequence=None, writer=key.node_id)
        dht.down = True
        r = await w.apply(Mkdir(("b",)), expected_sequence=None, writer=key.node_id)
        assert (r.sequence, r.published) == (2, False)  # saved, not yet published
        assert not await w.publish_pending()
        dht.down = False
        assert await w.publish_pending()
        reader = reader_for(w, dht)
        assert (await reader.pointer()).sequence == 2
        # a writer restarted from its head file republishes a head the DHT lacks
        dht2 = MemoryRecordDht()
        w2 = make_writer(key, dht2, secret=w.read_secret, store=w.store, state_path=w.state_path)
        assert (await w2.load()).sequence == 2
        assert await w2.publish_pending() and dht2.publishes == 1

    run(go())


_json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2**64)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_ops = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["mkdir", "link", "unlink", "rename", "x"]),
        "path": st.lists(st.text(max_size=5), max_size=3) | _json_like,
        "parents": st.booleans() | _json_like,
    }
)


@settings(max_examples=150)
@given(
    st.one_of(
        _json_like,
        st.fixed_dictionaries(
            {"drive": st.just("shared"), "op": _ops | _json_like, "expected_sequence": _json_like}
        ),
    )
)
def test_fuzz_vdrive_apply_always_answers(body: Any) -> None:
    async def go() -> None:
        key = NodeKey.generate()
        w = make_writer(key, MemoryRecordDht(), policy=WritePolicy(key.node_id, open=True))
        reply = await handle_apply(w, key.node_id, body)
        assert reply["status"] in ("ok", "error")
        if reply["status"] == "ok":
            assert parse_reply(reply).sequence == reply["sequence"]

    run(go())


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_fuzz_open_pointer(value: bytes) -> None:
    key = NodeKey.generate()
    with pytest.raises(VdriveRemoteError):
        open_pointer(value, read_secret=bytes(32), public_key=key.public_key, name=SHARED_NAME)


def test_a_change_whose_answer_was_lost_is_retried_not_redone(tmp_path: Path) -> None:
    """docs/vdrive.md, "Retries": the requester's op id makes a retry safe; the ids
    are saved with the head, so the answer survives the vdrive node's restart."""

    async def go() -> None:
        key, dht = NodeKey.generate(), MemoryRecordDht()
        state = tmp_path / "head.json"
        store = MemoryObjectStore()
        secret = new_read_secret()
        w = make_writer(key, dht, store=store, secret=secret, state_path=state)
        op_id = b"i" * 16
        first = await w.apply(
            Mkdir(("a",)), expected_sequence=None, writer=key.node_id, op_id=op_id
        )
        again = await w.apply(
            Mkdir(("a",)), expected_sequence=None, writer=key.node_id, op_id=op_id
        )
        assert (first.sequence, again.sequence, again.replayed) == (1, 1, True)
        with pytest.raises(VdriveLocalError, match="exists"):  # a new id: a new request
            await w.apply(Mkdir(("a",)), expected_sequence=None, writer=key.node_id)
        restarted = make_writer(key, dht, store=store, secret=secret, state_path=state)
        after = await restarted.apply(
            Mkdir(("a",)), expected_sequence=None, writer=key.node_id, op_id=op_id
        )
        assert after.replayed and after.sequence == 1
        # over the wire: the first answer is lost, the retry gets the change made once
        caller = NodeKey.generate().node_id
        key2 = NodeKey.generate()
        w2 = make_writer(key2, MemoryRecordDht(), policy=WritePolicy(key2.node_id, open=True))
        calls: list[Any] = []

        async def lossy(body: Any) -> Any:
            calls.append(body)
            reply = await handle_apply(w2, caller, body)
            if len(calls) == 1:
                raise TimeoutError("no reply within 30 s")  # applied, answer lost
            return reply

        done = await RemoteWriter(lossy).apply(Mkdir(("b",)), expected_sequence=None)
        assert done.sequence == 1 and len(calls) == 2
        assert calls[0]["op_id"] == calls[1]["op_id"] and len(calls[0]["op_id"]) == 16
        assert list(await list_dir(w2.store, w2.head.root, ())) == ["b"]

    run(go())


def test_settle_is_definite_and_survives_a_restart(tmp_path: Path) -> None:
    """docs/vdrive.md, "Retries": asking about an id that was made answers its
    sequence; about one that was not, marks it given up (saved with the head), so the
    change arriving later is refused instead of made behind its requester's back."""

    async def go() -> None:
        key, dht = NodeKey.generate(), MemoryRecordDht()
        state, store, secret = tmp_path / "head.json", MemoryObjectStore(), new_read_secret()
        w = make_writer(key, dht, store=store, secret=secret, state_path=state)
        me = key.node_id
        await w.apply(Mkdir(("a",)), expected_sequence=None, writer=me, op_id=b"m" * 16)
        made = await w.settle(b"m" * 16, writer=me)
        assert (made.applied, made.sequence) == (True, 1)
        late = b"l" * 16
        assert not (await w.settle(late, writer=me)).applied
        restarted = make_writer(key, dht, store=store, secret=secret, state_path=state)
        with pytest.raises(VdriveLocalError) as e:
            await restarted.apply(Mkdir(("b",)), expected_sequence=None, writer=me, op_id=late)
        assert e.value.code == "abandoned" and restarted.head.sequence == 1
        again = await restarted.settle(late, writer=me)
        assert (again.applied, again.sequence) == (False, 1)
        with pytest.raises(VdriveLocalError, match="may not ask"):
            await restarted.settle(late, writer=NodeKey.generate().node_id)

    run(go())


def test_remote_writer_settles_a_lost_answer_or_knows_it_was_not_sent() -> None:
    from p2pstore.vdrive.rpc import OUTCOME_METHOD, NotDelivered, handle_outcome

    async def go() -> None:
        key = NodeKey.generate()
        w = make_writer(key, MemoryRecordDht(), policy=WritePolicy(key.node_id, open=True))
        caller = NodeKey.generate().node_id
        sent: list[str] = []

        async def answer_lost(body: Any, method: str = "vdrive.apply") -> Any:
            sent.append(method)
            if method == OUTCOME_METHOD:
                return await handle_outcome(w, caller, body)
            await handle_apply(w, caller, body)  # made, then every answer is lost
            raise TimeoutError("no reply within 30 s")

        done = await RemoteWriter(answer_lost).apply(Mkdir(("x",)), expected_sequence=None)
        assert done.sequence == 1 and done.replayed
        assert sent == ["vdrive.apply", "vdrive.apply", OUTCOME_METHOD]

        async def never_sent(body: Any, method: str = "vdrive.apply") -> Any:
            sent.append(method)
            raise NotDelivered("no handshake")

        sent.clear()
        with pytest.raises(VdriveLocalError) as e:
            await RemoteWriter(never_sent).apply(Mkdir(("y",)), expected_sequence=None)
        assert e.value.details == {"outcome": "not-made"} and OUTCOME_METHOD not in sent

        async def dead(body: Any, method: str = "vdrive.apply") -> Any:
            raise TimeoutError("no reply")

        with pytest.raises(VdriveLocalError) as e:
            await RemoteWriter(dead).apply(Mkdir(("z",)), expected_sequence=None)
        assert e.value.details == {"outcome": "unknown"} and "not known" in e.value.message
        # the outcome adapter answers malformed requests with an error map
        for bad in ({"drive": "shared"}, {"drive": "shared", "op_id": b"x"}, [1]):
            assert (await handle_outcome(w, caller, bad))["code"] == "bad-request"

    run(go())


def test_op_ids_are_per_writer_and_recorded_only_with_their_change(tmp_path: Path) -> None:
    """One writer cannot settle (or flood out) another's ids; an id whose change could
    not be saved is not recorded; a change that alters nothing is still remembered."""

    async def go() -> None:
        key, dht = NodeKey.generate(), MemoryRecordDht()
        alice, bob = NodeKey.generate().node_id, NodeKey.generate().node_id
        state = tmp_path / "head.json"
        w = make_writer(key, dht, policy=WritePolicy(key.node_id, open=True), state_path=state)
        op = b"o" * 16
        await w.apply(Mkdir(("a",)), expected_sequence=None, writer=alice, op_id=op)
        assert not (await w.settle(op, writer=bob)).applied  # bob's own id, not alice's
        assert (await w.settle(op, writer=alice)).applied
        for i in range(300):  # bob floods his own ids: alice's stays
            await w.settle(i.to_bytes(16, "big"), writer=bob)
        assert (await w.settle(op, writer=alice)).applied
        # nothing to change (mkdir -p of an existing directory): still an answer
        same = await w.apply(
            Mkdir(("a",), True), expected_sequence=None, writer=alice, op_id=b"p" * 16
        )
        assert not same.changed and (await w.settle(b"p" * 16, writer=alice)).applied
        # the head cannot be saved: the change fails and its id is not recorded
        state.unlink()
        state.mkdir()
        with pytest.raises(VdriveLocalError) as e:
            await w.apply(Mkdir(("b",)), expected_sequence=None, writer=alice, op_id=b"q" * 16)
        assert e.value.code == "bad-state" and w.head.sequence == 1
        state.rmdir()
        assert not (await w.settle(b"q" * 16, writer=alice)).applied

    run(go())

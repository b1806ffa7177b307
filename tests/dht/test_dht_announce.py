"""Node announcements (sans-I/O): format, signing, validation, the bounded store,
the announcer's seq/refresh rules, and the new message fields (round trips + fuzz)."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.announce import (
    MAX_ANN_TTL,
    MAX_ANN_VALUE,
    Announcement,
    AnnouncementStore,
    Announcer,
    announcement_signed_bytes,
    sign_announcement,
    validate_announcement,
)
from dht.contact import Contact
from dht.errors import MessageError, RecordError
from dht.messages import (
    MAX_ANNS,
    AnnounceRequest,
    FindNodeRequest,
    GetRequest,
    GetResponse,
    NodesResponse,
    PingRequest,
    PutRequest,
)
from dht.records import sign_record
from quic_transport.identity import NodeId, NodeKey

NOW = 1_800_000_000
KEYS = [NodeKey.from_seed(bytes([i]) * 32) for i in range(40)]
KEY = KEYS[0]


def wire(body: Any) -> Any:
    return cbor2.loads(cbor2.dumps(body))


def ann(key: NodeKey = KEY, seq: int = 1, value: bytes = b"v", life: int = 600) -> Announcement:
    return sign_announcement(key, seq, value, expires=NOW + life)


# ---- format and validation -----------------------------------------------------------
def test_signed_bytes_known_answer() -> None:
    got = announcement_signed_bytes(b"P" * 32, 7, 9, b"val")
    assert got == (
        b"p2pstore dht announcement v1\x00"
        + b"P" * 32
        + (7).to_bytes(8, "big")
        + (9).to_bytes(8, "big")
        + (3).to_bytes(4, "big")
        + b"val"
    )


def test_valid_announcement_proves_its_node_id() -> None:
    a = ann()
    validate_announcement(a, now=NOW)
    assert a.node_id == KEY.node_id
    assert Announcement.from_wire(wire(a.to_wire())) == a
    assert "value=1 bytes" in repr(a) and a.signature.hex() not in repr(a)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"value": b"other"}, "bad-signature"),
        ({"seq": 2}, "bad-signature"),
        ({"pk": KEYS[1].public_key}, "bad-signature"),  # claims another node's ID
        ({"exp": NOW}, "expired"),
        ({"exp": NOW + MAX_ANN_TTL + 3600}, "ttl-too-long"),
    ],
)
def test_tampered_announcements_are_refused(change: dict[str, Any], reason: str) -> None:
    body = {**ann().to_wire(), **change}
    with pytest.raises(RecordError) as e:
        validate_announcement(Announcement.from_wire(body), now=NOW)
    assert e.value.reason == reason


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"pk": b"x"},
        {**ann().to_wire(), "extra": 1},
        {**ann().to_wire(), "pk": b"short"},
        {**ann().to_wire(), "seq": -1},
        {**ann().to_wire(), "seq": True},
        {**ann().to_wire(), "exp": 2**64},
        {**ann().to_wire(), "value": "text"},
        {**ann().to_wire(), "value": b"x" * (MAX_ANN_VALUE + 1)},
        {**ann().to_wire(), "sig": b"s" * 63},
    ],
)
def test_malformed_announcements_fail_the_schema(body: Any) -> None:
    with pytest.raises(RecordError):
        Announcement.from_wire(body)


@given(st.binary(max_size=MAX_ANN_VALUE), st.integers(0, 2**63 - 1), st.integers(1, MAX_ANN_TTL))
@settings(max_examples=30)
def test_announcement_round_trip(value: bytes, seq: int, life: int) -> None:
    a = sign_announcement(KEY, seq, value, expires=NOW + life)
    b = Announcement.from_wire(wire(a.to_wire()))
    assert b == a
    validate_announcement(b, now=NOW)


# ---- the store -----------------------------------------------------------------------
def test_store_keeps_one_per_node_highest_seq() -> None:
    s = AnnouncementStore(KEYS[5].node_id)
    assert s.put(ann(seq=1), NOW)
    assert not s.put(ann(seq=1), NOW)  # identical: no-op
    with pytest.raises(RecordError) as e:
        s.put(ann(seq=1, value=b"different"), NOW)
    assert e.value.reason == "stale"
    assert s.put(ann(seq=2, value=b"new"), NOW)
    assert len(s) == 1
    got = s.get(KEY.node_id, NOW)
    assert got is not None and got.value == b"new"


def test_store_refuses_forged_and_drops_expired() -> None:
    s = AnnouncementStore(KEYS[5].node_id)
    bad = Announcement.from_wire({**ann().to_wire(), "value": b"forged"})
    with pytest.raises(RecordError):
        s.put(bad, NOW)
    s.put(ann(life=10), NOW)
    assert s.closest(KEY.node_id, 5, NOW + 11) == []
    assert s.get(KEY.node_id, NOW + 11) is None
    assert len(s) == 0
    s.put(ann(life=10), NOW)
    assert s.expire(NOW + 11) == 1 and len(s) == 0


def test_full_store_keeps_the_announcers_nearest_itself() -> None:
    me = KEYS[0].node_id
    s = AnnouncementStore(me, max_count=10)
    others = sorted(KEYS[1:21], key=lambda k: me.distance(k.node_id))
    far, near = others[10:], others[:10]
    for k in far:
        s.put(ann(k), NOW)
    assert len(s) == 10
    for k in near:  # each closer newcomer evicts the farthest held
        s.put(ann(k), NOW)
    assert set(s.node_ids()) == {k.node_id for k in near}
    with pytest.raises(RecordError) as e:
        s.put(ann(far[0]), NOW)
    assert e.value.reason == "full"


def test_closest_orders_by_distance_and_bounds_count() -> None:
    s = AnnouncementStore(KEYS[0].node_id)
    for k in KEYS[1:]:
        s.put(ann(k), NOW)
    target = KEYS[7].node_id
    got = s.closest(target, 8, NOW)
    assert len(got) == 8
    assert got[0].node_id == target
    truth = sorted((k.node_id for k in KEYS[1:]), key=target.distance)[:8]
    assert [a.node_id for a in got] == truth


# ---- the announcer -------------------------------------------------------------------
def test_announcer_seq_grows_and_survives_restart() -> None:
    a = Announcer(KEY, ttl=600, interval=100)
    first = a.make(b"v1", None, NOW)
    second = a.make(b"v2", None, NOW)  # same millisecond: still a higher seq
    assert second.seq == first.seq + 1
    restarted = Announcer(KEY, ttl=600, interval=100)
    third = restarted.make(b"v3", None, NOW + 1)
    assert third.seq > second.seq
    validate_announcement(third, now=NOW)


def test_announcer_refresh_and_withdraw() -> None:
    a = Announcer(KEY, ttl=600, interval=100)
    assert a.refreshed(NOW) is None
    cur = a.make(b"v", None, NOW)
    assert a.refreshed(NOW + 200) == cur  # more than half its life left: resend as is
    fresh = a.refreshed(NOW + 400)
    assert fresh is not None and fresh.seq > cur.seq and fresh.expires == NOW + 1000
    w = a.withdrawal(NOW + 401)
    assert w is not None and w.withdrawn and w.seq > fresh.seq
    assert w.expires >= fresh.expires
    validate_announcement(w, now=NOW + 401)
    assert a.current is None and a.withdrawal(NOW + 402) is None


def test_announcer_refuses_bad_values() -> None:
    a = Announcer(KEY, ttl=600, interval=100)
    for value, ttl in ((b"", None), (b"x" * (MAX_ANN_VALUE + 1), None), (b"v", 0)):
        with pytest.raises(RecordError):
            a.make(value, ttl, NOW)
    with pytest.raises(RecordError):
        a.make(b"v", MAX_ANN_TTL + 1, NOW)


# ---- message fields ------------------------------------------------------------------
ids = st.binary(min_size=20, max_size=20).map(NodeId)


@given(ids, st.booleans(), st.booleans())
def test_lookup_requests_round_trip_flags(target: NodeId, client: bool, want: bool) -> None:
    f = FindNodeRequest(target, client, want)
    assert FindNodeRequest.from_body(wire(f.to_body())) == f
    g = GetRequest(target, client, want)
    assert GetRequest.from_body(wire(g.to_body())) == g
    assert PingRequest.from_body(wire(PingRequest(client).to_body())) == PingRequest(client)
    # Flags that are off are not sent, so servers-mode bodies are unchanged on the wire.
    if not client and not want:
        assert set(f.to_body()) == {"target"}


def test_put_and_announce_requests_round_trip() -> None:
    rec = sign_record(KEY, b"n", 0, b"v", expires=NOW + 60)
    p = PutRequest(rec, client=True)
    assert PutRequest.from_body(wire(p.to_body())) == p
    a = AnnounceRequest(ann(), client=True)
    assert AnnounceRequest.from_body(wire(a.to_body())) == a
    assert AnnounceRequest.from_body(wire(AnnounceRequest(ann()).to_body())).client is False


def test_responses_carry_announcements_in_their_own_field() -> None:
    anns = tuple(ann(k) for k in KEYS[:3])
    c = Contact(KEYS[4].node_id, "10.0.0.1", 4000)
    n = NodesResponse((c,), anns)
    body = wire(n.to_body())
    assert [Contact.from_wire(x) for x in body["nodes"]] == [c]
    assert NodesResponse.from_body(body) == n
    assert "anns" not in NodesResponse((c,)).to_body()
    g = GetResponse((c,), None, anns)
    assert GetResponse.from_body(wire(g.to_body())) == g


@pytest.mark.parametrize(
    "body",
    [
        {"target": bytes(20), "client": 1},
        {"target": bytes(20), "client": None},
        {"target": bytes(20), "want_anns": "yes"},
        {"target": bytes(20), "ann": True},
    ],
)
def test_bad_flags_are_refused(body: Any) -> None:
    with pytest.raises(MessageError):
        FindNodeRequest.from_body(body)


def test_response_announcement_limits() -> None:
    one = ann().to_wire()
    with pytest.raises(MessageError):
        NodesResponse.from_body({"nodes": [], "anns": [one] * (MAX_ANNS + 1)})
    with pytest.raises(MessageError):
        NodesResponse.from_body({"nodes": [], "anns": one})  # not an array
    with pytest.raises(MessageError):
        GetResponse.from_body({"nodes": [], "anns": [{**one, "pk": b"x"}]})
    with pytest.raises(MessageError):
        AnnounceRequest.from_body({"ann": {**one, "value": b"x" * (MAX_ANN_VALUE + 1)}})
    assert len(NodesResponse.from_body({"nodes": [], "anns": [one] * MAX_ANNS}).anns) == 20


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["pk", "seq", "exp", "value", "sig", "nodes", "anns", "ann", "x"]),
            inner,
            max_size=6,
        )
    ),
    max_leaves=12,
)


@given(_junk)
@settings(max_examples=200)
def test_decoders_fuzzed_raise_only_message_errors(body: Any) -> None:
    for decode in (
        NodesResponse.from_body,
        GetResponse.from_body,
        AnnounceRequest.from_body,
        FindNodeRequest.from_body,
    ):
        with contextlib.suppress(MessageError):
            decode(body)
    with contextlib.suppress(RecordError):
        Announcement.from_wire(body)


@given(st.lists(st.binary(min_size=0, max_size=8), min_size=1, max_size=3), st.data())
@settings(max_examples=50)
def test_mutated_valid_announcements_never_validate(parts: list[bytes], data: Any) -> None:
    good = ann(value=b"value").to_wire()
    field = data.draw(st.sampled_from(["seq", "value", "sig"]))
    mutated = dict(good)
    if field == "seq":
        mutated["seq"] = good["seq"] + data.draw(st.integers(1, 100))
    elif field == "value":
        mutated["value"] = b"".join(parts) + b"!"
    else:
        sig = bytearray(good["sig"])
        sig[data.draw(st.integers(0, 63))] ^= data.draw(st.integers(1, 255))
        mutated["sig"] = bytes(sig)
    with pytest.raises(RecordError):
        validate_announcement(Announcement.from_wire(mutated), now=NOW)


@given(
    st.lists(
        st.tuples(st.integers(0, 11), st.integers(0, 5), st.integers(1, 50), st.integers(0, 30)),
        max_size=40,
    )
)
@settings(max_examples=60, deadline=None)
def test_store_invariants_under_any_sequence(ops: list[tuple[int, int, int, int]]) -> None:
    """Bounded, one per announcer, never serves an expired one, never goes back in seq
    while it holds an announcer's live announcement, and keeps the announcers nearest
    itself when full."""
    me = KEYS[39].node_id
    s = AnnouncementStore(me, max_count=5)
    now = NOW
    best: dict[NodeId, int] = {}
    for who, seq, life, step in ops:
        now += step
        live = {x.node_id for x in s.closest(me, 40, now)}
        best = {n: q for n, q in best.items() if n in live}  # expired/evicted: forgotten
        a = sign_announcement(KEYS[who], seq, b"v", expires=now + life)
        try:
            s.put(a, now)
        except RecordError as e:
            assert e.reason in {"stale", "full"}
        assert len(s) <= 5
        held = s.closest(me, 40, now)
        assert len({x.node_id for x in held}) == len(held)
        assert all(x.expires > now for x in held)
        for x in held:
            assert x.seq >= best.get(x.node_id, -1)
            best[x.node_id] = x.seq
        if len(s) == 5:
            far = max(me.distance(x.node_id) for x in held)
            # a refused "full" newcomer was never nearer than everything held
            if a not in held and s.get(a.node_id, now) is None:
                assert me.distance(a.node_id) >= far or a.expires <= now

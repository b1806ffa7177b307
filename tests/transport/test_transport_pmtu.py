"""Sans-I/O tests of datagram-size probing (pmtu.py)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from quic_transport import pmtu
from quic_transport.config import TransportConfig

SECRET = b"s" * 32
ADDR = ("127.0.0.1", 9)


def nonces() -> itertools.count[int]:
    return itertools.count()


def make_search(high: int = 16384, rounds: int = 2) -> pmtu.PmtuSearch:
    counter = itertools.count()
    return pmtu.PmtuSearch(
        low=1200,
        high=high,
        rounds=rounds,
        nonce_source=lambda n: next(counter).to_bytes(n, "big"),
    )


def answer(probe: bytes, path_mtu: int) -> pmtu.ProbePacket | None:
    """A listener reached over a path carrying at most ``path_mtu`` bytes."""
    if len(probe) > path_mtu:
        return None
    pkt = pmtu.parse(probe)
    assert pkt is not None and len(probe) == pkt.size
    reply = pmtu.reply_to(pkt, SECRET, ADDR)
    assert reply is not None and len(reply) == len(probe)  # no amplification
    return pmtu.parse(reply)


def run(search: pmtu.PmtuSearch, path_mtu: int) -> int:
    probes = search.start()
    while probes:
        for p in probes:
            ack = answer(p, path_mtu)
            if ack is not None:
                search.on_packet(ack)
        if search.done:
            break
        probes = search.on_round_timeout()
    return search.result


def test_loopback_finds_the_ceiling_in_one_round() -> None:
    s = make_search()
    assert run(s, 65535) == 16384 and s.done


def test_ethernet_paths() -> None:
    """The largest UDP payload a 1,500-byte Ethernet MTU carries: 1,472 bytes over
    IPv4, 1,452 over IPv6 (and over IPv4 through PPPoE's 1,492, which carries 1,464)."""
    assert run(make_search(), 1472) == 1472
    assert run(make_search(), 1452) == 1452
    assert run(make_search(), 1464) == 1452


def test_capped_search_and_fallback() -> None:
    assert run(make_search(high=1452), 65535) == 1452
    assert run(make_search(), 1250) == 1232
    assert run(make_search(), 1200) == 1200  # nothing acknowledged: the QUIC minimum


def test_silent_peer_gives_minimum_and_no_confirm() -> None:
    s = make_search()
    probes = s.start()
    assert len(probes) == len(pmtu.candidate_sizes(1200, 16384))
    assert s.on_round_timeout()  # second round
    assert s.on_round_timeout() == []
    assert s.done and s.result == 1200 and s.confirm() is None


def test_confirm_token_binds_address_and_size() -> None:
    s = make_search()
    run(s, 65535)
    confirm = s.confirm()
    assert confirm is not None
    pkt = pmtu.parse(confirm)
    assert pkt is not None and pkt.kind == pmtu.TYPE_CONFIRM
    assert pmtu.confirmed_size(pkt, SECRET, ADDR) == 16384
    assert pmtu.confirmed_size(pkt, SECRET, ("127.0.0.1", 10)) is None
    assert pmtu.confirmed_size(pkt, b"other" * 8, ADDR) is None
    forged = pmtu.parse(pmtu.encode(pmtu.TYPE_CONFIRM, pkt.nonce, 16384, bytes(16)))
    assert forged is not None and pmtu.confirmed_size(forged, SECRET, ADDR) is None


def test_forged_ack_is_ignored() -> None:
    s = make_search()
    s.start()
    s.on_packet(pmtu.ProbePacket(pmtu.TYPE_ACK, b"\xff" * 16, 16384))
    assert s.result == 1200


@given(st.binary(max_size=100))
def test_parse_never_raises(data: bytes) -> None:
    pmtu.parse(data)
    pmtu.parse(pmtu.MAGIC + data)


def test_parse_checks_length_matches_size() -> None:
    probe = pmtu.encode(pmtu.TYPE_PROBE, bytes(16), 1300)
    assert pmtu.parse(probe) is not None
    assert pmtu.parse(probe[:-1]) is None
    assert pmtu.parse(pmtu.encode(pmtu.TYPE_PROBE, bytes(16), 1300)[:40]) is None
    assert probe[0] & 0x40 == 0  # QUIC fixed bit clear: never mistaken for QUIC


def test_default_ceiling_is_ipv4_loopback() -> None:
    high = TransportConfig().max_datagram_size
    assert high == 65507
    s = make_search(high=high)
    assert run(s, 65535) == 65507 and s.done


def test_sizes_the_host_cannot_send_end_the_search_early() -> None:
    """IPv6 loopback (65,488) or an Ethernet interface (1,500): the larger probes
    fail locally with EMSGSIZE, so the search ends when the largest probe that left
    the host is acknowledged, without waiting out the rounds."""
    for local_mtu, expected in ((65488, 65488), (1472, 1472), (1452, 1452), (1300, 1232)):
        s = make_search(high=65507)
        probes = s.start()
        for p in probes:
            if len(p) > local_mtu:
                s.on_unsendable(len(p))
        assert not s.done
        for p in probes:
            if len(p) <= local_mtu:
                ack = answer(p, local_mtu)
                assert ack is not None
                s.on_packet(ack)
        assert s.done and s.result == expected
        assert s.on_round_timeout() == []


def test_everything_unsendable_gives_the_minimum() -> None:
    s = make_search(high=65507)
    for p in s.start():
        s.on_unsendable(len(p))
    assert s.done and s.result == 1200 and s.confirm() is None
    s.on_unsendable(4096)  # again, or a size never probed: no effect
    assert s.done


def test_unsendable_size_is_not_probed_again() -> None:
    s = make_search(high=65507)
    s.start()
    s.on_unsendable(65507)
    again = s.on_round_timeout()
    assert again and all(len(p) < 65507 for p in again)

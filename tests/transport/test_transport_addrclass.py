"""Address classes (quic_transport/addrclass.py): what a node may send to because a
peer said so."""

from __future__ import annotations

import pytest

from quic_transport import addrclass as ac


@pytest.mark.parametrize(
    ("host", "cls"),
    [
        ("8.8.8.8", ac.GLOBAL),
        ("198.51.100.7", ac.GLOBAL),  # documentation ranges count as global
        ("2001:db8::1", ac.GLOBAL),
        ("2a00:1450::1", ac.GLOBAL),
        ("10.1.2.3", ac.PRIVATE),
        ("172.16.0.1", ac.PRIVATE),
        ("192.168.1.1", ac.PRIVATE),
        ("100.64.0.1", ac.PRIVATE),
        ("fd00::1", ac.PRIVATE),
        ("::ffff:192.168.1.1", ac.PRIVATE),
        ("127.0.0.1", ac.LOOPBACK),
        ("127.5.5.5", ac.LOOPBACK),
        ("::1", ac.LOOPBACK),
        ("169.254.0.1", ac.LINK_LOCAL),
        ("fe80::1", ac.LINK_LOCAL),
        ("224.0.0.1", ac.UNUSABLE),
        ("ff02::1", ac.UNUSABLE),
        ("255.255.255.255", ac.UNUSABLE),
        ("240.0.0.1", ac.UNUSABLE),
        ("0.0.0.0", ac.WILDCARD),
        ("::", ac.WILDCARD),
        ("example.org", ac.NAME),
        ("localhost", ac.NAME),
    ],
)
def test_classify(host: str, cls: str) -> None:
    assert ac.classify(host) == cls


def test_the_rule_follows_the_nodes_own_address() -> None:
    # a local grid on loopback keeps working
    assert ac.may_send("127.0.0.1", "127.0.0.1")
    # a home LAN grid keeps working; a home machine on a wildcard reaches its LAN
    assert ac.may_send("192.168.1.20", "192.168.1.10")
    assert ac.may_send("192.168.1.20", "0.0.0.0")
    # a public node is never aimed at loopback or private services
    assert not ac.may_send("127.0.0.1", "198.51.100.1")
    assert not ac.may_send("10.0.0.1", "198.51.100.1")
    assert not ac.may_send("127.0.0.1", "0.0.0.0")
    assert not ac.may_send("169.254.1.1", "192.168.1.10")
    # never: names, multicast, broadcast, unspecified
    for bad in ("example.org", "224.0.0.1", "255.255.255.255", "0.0.0.0"):
        assert not ac.may_send(bad, "127.0.0.1") and not ac.may_send(bad, "0.0.0.0")
    assert ac.may_send("8.8.8.8", "127.0.0.1")

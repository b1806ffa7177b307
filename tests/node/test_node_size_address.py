"""Size/duration strings and host:port parsing used by the node config and bootstrap lists."""

from __future__ import annotations

import ipaddress
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.node.address import HostPort, parse_host_port
from p2pstore.node.errors import AddressError
from p2pstore.node.size import (
    format_duration_exact,
    format_size,
    format_size_exact,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("123", 123),
        ("123B", 123),
        ("10kB", 10_000),
        ("10KB", 10_000),
        ("10GB", 10_000_000_000),
        ("10 GB", 10_000_000_000),
        ("500MiB", 500 * 1024**2),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("2TiB", 2 * 1024**4),
        ("1_000MB", 10**9),
        ("7KiB", 7 * 1024),
        (4096, 4096),
    ],
)
def test_parse_size_accepts(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10XB", "unknown unit 'XB'"),
        ("-5MB", "negative"),
        ("GB", "not a size"),
        ("", "not a size"),
        ("1e3", "not a size"),
        (-1, "negative"),
        (True, "expected a size"),
        ("99999999999TiB", "too large"),
    ],
)
def test_parse_size_rejects_with_reason(text: str | int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


@given(
    st.integers(min_value=0, max_value=10**6),  # under MAX_SIZE in every unit
    st.text("0123456789", min_size=1, max_size=30),
    st.sampled_from(["kB", "MB", "GiB", "TB", "b"]),
)
def test_parse_size_rounds_a_fraction_down_exactly(whole: int, digits: str, unit: str) -> None:
    factor = {"kB": 1000, "MB": 1000**2, "GiB": 1024**3, "TB": 1000**4, "b": 1}[unit]
    exact = Fraction(f"{whole}.{digits}") * factor
    assert parse_size(f"{whole}.{digits}{unit}") == exact.numerator // exact.denominator


@given(st.integers(min_value=0, max_value=2**62))
def test_format_size_exact_round_trips(n: int) -> None:
    assert parse_size(format_size_exact(n)) == n


def test_format_size_is_human() -> None:
    assert format_size(512) == "512 B"
    assert format_size(3 * 1024**3 // 2) == "1.5 GiB"


@given(st.integers(min_value=0, max_value=100 * 365 * 86400))
def test_duration_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration_exact(seconds)) == seconds


def test_parse_duration() -> None:
    assert parse_duration("31d") == 31 * 86400
    assert parse_duration("90m") == 5400
    assert parse_duration(20) == 20
    for bad, msg in (("3y", "unknown unit 'y'"), ("1.5h", "whole number"), (-3, "negative")):
        with pytest.raises(ValueError, match=msg):
            parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:80", "127.0.0.1", 80),
        ("[::1]:3456", "::1", 3456),
        ("[2001:DB8:0:0::1]:1", "2001:db8::1", 1),
        ("Example.ORG:443", "example.org", 443),
        ("0.0.0.0:0", "0.0.0.0", 0),
    ],
)
def test_parse_host_port(text: str, host: str, port: int) -> None:
    hp = parse_host_port(text)
    assert (hp.host, hp.port) == (host, port)
    assert parse_host_port(str(hp)) == hp


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:70000", "out of range 0..65535"),
        ("127.0.0.1", "expected host:port"),
        ("::1:80", "brackets"),
        ("[::1:80", "closing"),
        ("[nothost]:80", "not an IPv6"),
        ("host:http", "not a number"),
        ("bad_host!:80", "neither an IP address nor a DNS name"),
        ("1.2.3.999:80", "malformed IPv4"),
        (":80", "host is empty"),
    ],
)
def test_parse_host_port_rejects(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_host_port(text)


def test_port_zero_refused_when_dialling() -> None:
    with pytest.raises(AddressError, match="port 0"):
        parse_host_port("1.2.3.4:0", allow_port_zero=False)


@given(st.ip_addresses(), st.integers(min_value=0, max_value=65535))
def test_host_port_round_trip_ip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    hp = HostPort(ip.compressed, port)
    assert parse_host_port(str(hp)) == hp


@given(st.text(max_size=60))
def test_parse_host_port_total(text: str) -> None:
    try:
        hp = parse_host_port(text)
    except AddressError:
        return
    assert parse_host_port(str(hp)) == hp

"""The decoding budget (quic_transport/cbor_budget.py): hostile CBOR is refused
before cbor2 builds anything; every message the protocol sends passes."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import ConnectError, StreamClosedError, TransportConfig
from quic_transport.cbor_budget import DecodeBudgetExceeded, check_structure
from quic_transport.errors import FrameError
from quic_transport.framing import KIND_MSG, encode_header
from quic_transport.messages import decode_message

plain = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=60,
)


@given(plain)
def test_everything_cbor2_writes_for_plain_data_passes(value: object) -> None:
    check_structure(cbor2.dumps(value))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        check_structure(data)
    except FrameError:
        return


def test_a_megabyte_of_empty_maps_is_refused_at_once_in_little_memory() -> None:
    """Before: peak 75.6 MB and about half a second of the event loop per message."""
    payload = cbor2.dumps({"t": "ok", "r": [{}] * ((1 << 20) - 16)})
    tracemalloc.start()
    t0 = time.process_time()  # this process's CPU: not slowed by others on the machine
    with pytest.raises(DecodeBudgetExceeded):
        decode_message(payload)
    took = time.process_time() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * len(payload) and took < 0.2, (peak, took)


@pytest.mark.parametrize(
    "payload",
    [
        cbor2.dumps([[[]]] * 20_000),  # too many items
        b"\x9f" + b"\x00" * 10 + b"\xff",  # indefinite-length array
        cbor2.dumps(cbor2.CBORTag(28, [1])),  # value sharing
        cbor2.dumps(cbor2.CBORTag(2, b"\x01" * 100)),  # a huge bignum
        b"\xf0",  # simple value 16
    ],
)
def test_over_budget_shapes(payload: bytes) -> None:
    with pytest.raises(DecodeBudgetExceeded):
        check_structure(payload)


def test_truncation_and_lies_are_plain_frame_errors() -> None:
    for bad in (b"", b"\x5a\xff\xff\xff\xff", b"\x9a\xff\xff\xff\xff", b"\x82\x01", b"\x01\x01"):
        with pytest.raises(FrameError):
            check_structure(bad)


async def test_a_peer_sending_an_over_budget_message_is_cut_off_and_refused() -> None:
    cfg = TransportConfig(connect_timeout=1.0, pmtu_probe_timeout=0.1)
    async with endpoints(3, cfg) as (server, evil, good):
        assert await good.ping(address_of(server)) < 5.0
        conn = await evil._connection(address_of(server), 5.0)
        st_ = conn.open_stream()
        bomb = cbor2.dumps({"t": "req", "m": "x", "b": [{}] * 100_000})
        conn.send_stream_data(st_.stream_id, encode_header(KIND_MSG, len(bomb)) + bomb)
        with pytest.raises(StreamClosedError):
            await st_.next_item(3.0)
        st_.release()
        await asyncio.sleep(0.2)
        assert server.stats["penalized"] == 1
        # its address is refused new connections for a while (per host in the wild;
        # on loopback per host and port, so the rest of a local grid is not)
        with pytest.raises(ConnectError):
            await evil.ping(address_of(server), timeout=1.0)
        assert server.stats["penalty_dropped"] >= 1
        await good.disconnect(server.node_id)
        await asyncio.sleep(0.1)
        assert await good.ping(address_of(server)) < 5.0

"""Tests of the NAT topology harness itself (tests/nat_topology.py): that its routers
behave like home NAT routers in the ways the NAT features (docs/nat.md) rely on, so a
failing end-to-end NAT test points at p2pstore rather than at the harness.

Measured here (plain UDP from tests/nat_probe.py, no p2pstore code):
- an inner host reaches the public hosts and they see the router's public address;
  plain ``masquerade`` keeps the port and one mapping for every destination,
  ``random-fully`` gives each destination its own random port;
- unsolicited datagrams to the router never reach the inner host, even at a port
  with a live mapping, while the remote that mapping was made for gets through;
- a UDP simultaneous open between the two NATed hosts through the mappings a public
  rendezvous saw (what hole punching does) works through two plain-masquerade
  routers, in either order, and fails when either router is random-fully, or when
  the routers accept unsolicited input on wan (module doc of nat_topology).

Needs root, ``ip netns`` and nftables; skipped with the reason otherwise. About
16 s in all (one process), most of it the failing punches waiting out 2.5 s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ..nat_topology import NatMode, NatTopology, nat_topology, nat_unavailable, read_doc

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def nat_reason() -> str | None:
    return nat_unavailable()


def topology(
    reason: str | None, modes: tuple[NatMode, NatMode], **kw: bool
) -> Iterator[NatTopology]:
    if reason:
        pytest.skip(reason)
    with nat_topology(modes, **kw) as topo:
        yield topo


@pytest.fixture(params=["masquerade", "random-fully"])
def topo(request: pytest.FixtureRequest, nat_reason: str | None) -> Iterator[NatTopology]:
    yield from topology(nat_reason, (request.param, request.param))


def test_inner_host_reaches_public_hosts_as_the_router(topo: NatTopology) -> None:
    inner, router = topo.storage, topo.nat1
    with topo.echo(topo.seed1) as e1, topo.echo(topo.seed2) as e2:
        ask = ["ask", "--bind", f"{inner.addr}:5000", "--to", e1.addr, "--to", e2.addr]
        proc = topo.probe(inner, *ask)
        observed = read_doc(proc, "observed")
        proc.communicate(timeout=10)
    assert all(o is not None for o in observed), observed
    hosts = {o.rpartition(":")[0] for o in observed}
    ports = [int(o.rpartition(":")[2]) for o in observed]
    assert hosts == {router.public}  # the public side never sees 10.0.1.2
    if router.mode == "masquerade":
        assert ports == [5000, 5000]  # port kept, one mapping for every destination
    else:
        assert ports[0] != ports[1]  # a fresh random port per destination


def test_unsolicited_datagrams_do_not_reach_the_inner_host(topo: NatTopology) -> None:
    inner, router = topo.storage, topo.nat1
    with topo.echo(topo.seed1) as e1:
        # the inner host opens a mapping to seed1's echo server and listens on it
        # until the echo server pings it; meanwhile others send to that mapping and
        # to the inner host's port on the router
        ask = ["ask", "--bind", f"{inner.addr}:5000", "--to", e1.addr]
        listener = topo.probe(inner, *ask, "--listen", "30", "--until-ping")
        (mapping,) = read_doc(listener, "observed")
        assert mapping is not None
        s1, s2 = topo.seed1.addr, topo.seed2.addr
        senders = [
            topo.probe(topo.seed2, "send", "--bind", f"{s2}:3478", "--to", mapping),
            topo.probe(topo.seed1, "send", "--bind", f"{s1}:3479", "--to", mapping),
            topo.probe(topo.seed2, "send", "--bind", f"{s2}:0", "--to", f"{router.public}:5000"),
            topo.probe(topo.seed1, "send", "--bind", f"{s1}:0", "--to", f"{router.public}:4000"),
        ]
        for s in senders:
            assert read_doc(s, "sent") == 10
            s.communicate(timeout=10)
        e1.ping()  # after all that, the remote the mapping was made for still gets in
        received = read_doc(listener, "received")
        listener.communicate(timeout=10)
    assert [src for _, src in received] == [e1.addr], received
    assert json.loads(received[-1][0]) == {"ping": True}


@pytest.mark.parametrize(
    ("modes", "stagger", "works"),
    [
        (("masquerade", "masquerade"), 0.0, True),
        (("masquerade", "masquerade"), 0.3, True),
        (("random-fully", "random-fully"), 0.0, False),
        (("masquerade", "random-fully"), 0.3, False),
    ],
)
def test_simultaneous_open_through_both_nats(
    nat_reason: str | None, modes: tuple[NatMode, NatMode], stagger: float, works: bool
) -> None:
    for topo in topology(nat_reason, modes):
        with topo.echo(topo.seed1) as rendezvous:
            result = topo.simultaneous_open(
                topo.storage,
                topo.client,
                rendezvous=rendezvous,
                stagger=stagger,
                seconds=5.0 if works else 2.5,  # success ends early; keep failures short
            )
        assert result.mapping_a.startswith(f"{topo.nat1.public}:")
        assert result.mapping_b.startswith(f"{topo.nat2.public}:")
        assert result.connected is works, result


def test_routers_accepting_wan_input_break_punching(nat_reason: str | None) -> None:
    """Why the harness drops unsolicited wan input (nat_topology module doc): without
    it, the first punch reaching the other router before that side has sent leaves
    a conntrack entry there, and that side's own mapping then moves to another port."""
    for topo in topology(nat_reason, ("masquerade", "masquerade"), wan_input_drop=False):
        with topo.echo(topo.seed1) as rendezvous:
            result = topo.simultaneous_open(
                topo.storage, topo.client, rendezvous=rendezvous, stagger=0.3, seconds=2.5
            )
        assert not result.connected, result

"""NatManager on real sockets with a fake DHT (the dhtmode API as NAT.md states it):
a node behind a user-space NAT decides it is private, switches the DHT to client
mode, keeps anchors through its NAT and announces a record listing them."""

from __future__ import annotations

from typing import Any

from p2pstore.nat.manager import NatManager, NatSettings
from p2pstore.nat.peer_record import decode_record
from p2pstore.nat.punch import PunchService
from p2pstore.nat.reachability import DialbackLimits, DialbackServer
from p2pstore.testing.endpoints import endpoints
from quic_transport import PeerAddress, TransportConfig

from ..nat_helpers import UdpNat
from ..polling import until

FAST = TransportConfig(connect_timeout=2.0, close_timeout=0.2, pmtu_probe_timeout=0.1)


class FakeDht:
    def __init__(self) -> None:
        self.server = True
        self.modes: list[bool] = []
        self.announced: list[bytes] = []
        self.withdrawn = 0

    async def set_server(self, server: bool) -> None:
        self.server = server
        self.modes.append(server)

    async def announce(self, value: bytes, ttl: float = 3600.0) -> int:
        self.announced.append(value)
        return 1

    async def withdraw(self) -> int:
        self.withdrawn += 1
        return 1


SETTINGS = NatSettings(first_check_delay=0.0, tick=0.1, keepalive=5.0)


async def test_natted_node_goes_private_client_mode_and_announces() -> None:
    async with endpoints(3, FAST) as (b, r1, r2):
        nat = UdpNat(b.local_address, "restricted")
        try:
            for ep in (r1, r2):
                DialbackServer(ep, DialbackLimits(dial_timeout=1.5)).register()
                PunchService(ep).register()
            via = [PeerAddress(p.node_id, *nat.portal(p.local_address)) for p in (r1, r2)]
            dht = FakeDht()
            m = NatManager(b, b.key, dht, SETTINGS, stores=True, candidates=lambda: via)
            seen: list[str] = []

            async def hook(verdict: str) -> None:
                seen.append(verdict)

            m.verdict_hooks.append(hook)
            m.start()
            try:
                await until(lambda: m.verdict == "private")
                assert dht.modes[0] is True and dht.server is False  # server, then client
                assert seen == ["private"]
                await until(lambda: len(m.anchors) == 2 and dht.announced)
                await until(lambda: len(decode_record(dht.announced[-1]).relays) == 2)
                rec = decode_record(dht.announced[-1], expected=b.node_id)
                assert rec.reach == "private" and rec.storage and rec.direct == ()
                assert {r.relay_id for r in rec.relays} == {r1.node_id, r2.node_id}
                assert all(r.relayed is None for r in rec.relays)  # no relay package here
                st = m.status()
                assert st["reachability"] == "private" and st["dht_mode"] == "client"
                assert st["observed"] == "{}:{}".format(*nat.outside)
                assert st["nat_type"] == "cone" and len(st["relays"]) == 2
            finally:
                await m.close()
        finally:
            nat.close()


async def test_public_node_stays_server_and_withdraws() -> None:
    async with endpoints(3, FAST) as (a, r1, r2):
        for ep in (r1, r2):
            DialbackServer(ep).register()
        peers = [PeerAddress(p.node_id, *p.local_address) for p in (r1, r2)]
        dht = FakeDht()
        m = NatManager(a, a.key, dht, SETTINGS, stores=False, candidates=lambda: peers)
        m.start()
        try:
            await until(lambda: m.verdict == "public")
            await until(lambda: m.record is not None and m.record.reachable)
            assert dht.server is True and dht.announced == [] and dht.withdrawn == 0
            assert m.record is not None and m.record.direct == (a.local_address,)
            assert m.anchors == {}
        finally:
            await m.close()


def test_port_mapper_shapes() -> None:
    from p2pstore.nat import glue

    class Mapper:
        def __init__(self, value: Any) -> None:
            self.value = value

        def mapped_address(self) -> Any:
            return self.value

    assert glue.mapped_address(None) is None
    assert glue.mapped_address(Mapper(None)) is None
    assert glue.mapped_address(Mapper(("198.51.100.3", 4242))) == ("198.51.100.3", 4242)
    assert glue.mapped_address(Mapper(("bad host!", 1))) is None
    assert glue.mapped_address(Mapper(("1.2.3.4", 0))) is None


def test_port_mapper_status() -> None:
    from p2pstore.nat import glue

    class Mapper:
        def status(self) -> dict[str, Any]:
            return {"state": "mapped"}

    class Broken:
        def status(self) -> dict[str, Any]:
            raise RuntimeError("boom")

    assert glue.mapper_status(None) is None
    assert glue.mapper_status(Mapper()) == {"state": "mapped"}
    assert glue.mapper_status(Broken()) == {"state": "error", "reason": "boom"}

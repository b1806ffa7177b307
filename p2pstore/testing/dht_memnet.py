"""An in-memory network implementing ``DhtTransport`` for simulations and fast tests.

Each :class:`MemoryTransport` is one node's endpoint. Calls are delivered to the
registered handler of the node at ``(host, port)`` after a one-way latency, with every
body passed through a CBOR round trip (so nothing shared or non-encodable leaks between
nodes). Time comes from the running loop: under ``p2pstore.testing.vloop`` it is virtual.

Faults, all per node: ``kill`` (silently gone: requests to it and from it time out),
``drop_rate`` (a request or its reply is lost: the caller times out), and
:class:`Behaviour` for malicious nodes that answer garbage, far-away nodes, invented
nodes near the target, or forged records. The ID check of the real transport is
modelled: calling a contact whose ID does not match the node at that address fails
with ``PeerUnreachable``, so a liar cannot impersonate an honest node.
"""

from __future__ import annotations

import asyncio
import enum
import random
from dataclasses import dataclass
from typing import Any

import cbor2

from dht.contact import Contact
from dht.errors import PeerRejected, PeerTimeout, PeerUnreachable, RequestRejected
from dht.transport import Handler
from quic_transport.identity import NodeId


class Behaviour(enum.Enum):
    HONEST = "honest"
    GARBAGE = "garbage"  # replies that fail the schema
    FAR = "far"  # lookups answered with real but far-away nodes
    FAKE_CLOSE = "fake-close"  # lookups answered with invented IDs near the target
    FORGE = "forge"  # get answered with a record whose signature is broken
    FORGE_ANN = "forge-ann"  # lookups answered with a forged node announcement


@dataclass(frozen=True, slots=True)
class MemCallContext:
    peer_id: NodeId
    host: str
    port: int


class MemoryNetwork:
    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        latency: tuple[float, float] = (0.005, 0.05),
        drop_rate: float = 0.0,
        unreachable_delay: float = 1.0,
    ) -> None:
        self.rng = rng or random.Random(0)
        self.latency = latency
        self.drop_rate = drop_rate
        self.unreachable_delay = unreachable_delay
        self.nodes: dict[NodeId, MemoryTransport] = {}
        self._by_addr: dict[tuple[str, int], MemoryTransport] = {}
        self.messages = 0
        self.by_method: dict[str, int] = {}

    def add(self, node_id: NodeId) -> MemoryTransport:
        i = len(self._by_addr) + 1
        host = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        t = MemoryTransport(self, Contact(node_id, host, 4000 + (i >> 24)))
        self.nodes[node_id] = t
        self._by_addr[(t.contact.host, t.contact.port)] = t
        return t

    def kill(self, node_id: NodeId) -> None:
        self.nodes[node_id].alive = False

    def revive(self, node_id: NodeId) -> None:
        self.nodes[node_id].alive = True

    def set_behaviour(self, node_id: NodeId, behaviour: Behaviour) -> None:
        self.nodes[node_id].behaviour = behaviour

    def live_ids(self) -> list[NodeId]:
        return [n for n, t in self.nodes.items() if t.alive]

    def _delay(self) -> float:
        lo, hi = self.latency
        return self.rng.uniform(lo, hi)


class MemoryTransport:
    """One node's endpoint on a :class:`MemoryNetwork`; satisfies ``DhtTransport``."""

    def __init__(self, net: MemoryNetwork, contact: Contact) -> None:
        self.net = net
        self.contact = contact
        self.node_id = contact.node_id
        self.alive = True
        self.behaviour = Behaviour.HONEST
        self.handlers: dict[str, Handler] = {}

    def register(self, method: str, handler: Handler) -> None:
        self.handlers[method] = handler

    async def call(
        self,
        peer: Contact,
        method: str,
        body: Any,
        *,
        timeout: float,  # noqa: ASYNC109 (the contract takes a per-call timeout)
    ) -> Any:
        net = self.net
        net.messages += 1
        net.by_method[method] = net.by_method.get(method, 0) + 1
        target = net._by_addr.get((peer.host, peer.port))
        if target is None:
            await asyncio.sleep(min(timeout, net.unreachable_delay))
            raise PeerUnreachable(peer.node_id, "no endpoint at that address")
        try:
            async with asyncio.timeout(timeout):
                return await self._deliver(target, peer, method, body)
        except TimeoutError:
            raise PeerTimeout(peer.node_id, f"{method}: no reply in {timeout} s") from None

    async def _deliver(self, target: MemoryTransport, peer: Contact, method: str, body: Any) -> Any:
        net = self.net
        if not self.alive or not target.alive or net.rng.random() < net.drop_rate:
            await asyncio.Event().wait()  # lost: only the caller's timeout ends this
        await asyncio.sleep(net._delay())
        if target.node_id != peer.node_id:
            raise PeerUnreachable(peer.node_id, "peer could not prove its node ID")
        handler = target.handlers.get(method)
        if handler is None:
            raise PeerRejected(peer.node_id, "no-such-method", method)
        request = cbor2.loads(cbor2.dumps(body))
        ctx = MemCallContext(self.node_id, self.contact.host, self.contact.port)
        try:
            reply = await handler(ctx, request)
        except RequestRejected as e:
            await asyncio.sleep(net._delay())
            raise PeerRejected(peer.node_id, e.code, e.message) from None
        except Exception as e:
            await asyncio.sleep(net._delay())
            raise PeerRejected(peer.node_id, "internal", type(e).__name__) from None
        if target.behaviour is not Behaviour.HONEST:
            reply = target._misbehave(method, request, reply)
        encoded = cbor2.dumps(reply)
        await asyncio.sleep(net._delay())
        return cbor2.loads(encoded)

    def _misbehave(self, method: str, request: Any, reply: Any) -> Any:
        rng = self.net.rng
        b = self.behaviour
        if method not in ("dht.find_node", "dht.get"):
            return reply if b is not Behaviour.GARBAGE else [b"\x00" * rng.randrange(64)]
        if b is Behaviour.GARBAGE:
            return rng.choice(
                [
                    {"nodes": "x" * 50},
                    {"nodes": [[b"short", "h", 1]]},
                    {"nodes": [[rng.randbytes(20), "10.0.0.1", 99999]]},
                    {"nodes": [], "record": {"pk": b"x"}},
                    rng.randbytes(100),
                    {"nodes": [], "extra": 1},
                ]
            )
        target_raw = request.get("target") or request.get("key")
        t = int.from_bytes(target_raw, "big")
        if b is Behaviour.FAR:
            ids = rng.sample(list(self.net.nodes), min(60, len(self.net.nodes)))
            ids.sort(key=lambda n: -(int(n) ^ t))
            return {"nodes": [self.net.nodes[n].contact.to_wire() for n in ids[:20]]}
        if b is Behaviour.FAKE_CLOSE:
            fakes = []
            for _ in range(20):
                nid = (t ^ rng.getrandbits(120)).to_bytes(20, "big")
                fakes.append([nid, f"192.0.2.{rng.randrange(1, 255)}", 4000])
            return {"nodes": fakes}
        if b is Behaviour.FORGE_ANN:
            # Every announcement it holds goes out with a swapped value and a higher
            # seq (so it would win if believed); its signature no longer verifies.
            out = dict(reply)
            out["anns"] = [
                {**a, "value": b"forged:" + a["value"][:100], "seq": a["seq"] + 1}
                for a in out.get("anns", [])
            ]
            return out
        if b is Behaviour.FORGE and method == "dht.get":
            out = dict(reply)
            rec = out.get("record")
            if isinstance(rec, dict):
                rec = dict(rec)
                rec["value"] = b"forged" + rec["value"][:100]
                rec["seq"] = rec["seq"] + 1000
                out["record"] = rec
            else:
                out["record"] = {
                    "pk": rng.randbytes(32),
                    "name": b"",
                    "seq": 10**6,
                    "exp": 2**40,
                    "value": b"forged",
                    "sig": rng.randbytes(64),
                }
            return out
        return reply

"""A user-space UDP NAT for real-socket tests on 127.0.0.1 (no namespaces needed).

:class:`UdpNat` puts one inside endpoint (``inside``: its UDP address) behind one
outside socket (the NAT's public mapping, endpoint-independent: the same outside
port toward every destination). The inside endpoint reaches outside peer D by
dialing ``nat.portal(D)``: a local socket that forwards to D from the outside
socket, so D observes the outside address. Datagrams arriving at the outside
socket from source S are forwarded to the inside endpoint from S's portal, if the
filter allows:

- ``filtering="full"`` (full cone): from anyone;
- ``filtering="restricted"`` (port-restricted cone, the common home router): only
  from sources the inside endpoint has sent to through the NAT.

``dropped`` counts filtered datagrams. Everything is synchronous (sockets with
loop readers), so no task outlives :meth:`close`.

:class:`RecordingEndpoint` is the endpoint stand-in for handler tests without
sockets: it records what ``send_raw`` would have sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from quic_transport import Endpoint
from quic_transport.identity import NodeId

Addr = tuple[str, int]


class RecordingEndpoint:
    """Records the datagrams a handler sends with ``send_raw``; knows no peers."""

    node_id = NodeId(b"\x02" * 20)
    local_address = ("127.0.0.1", 1)

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def register(self, method: str, handler: Any) -> None:
        pass

    def peer_address(self, node_id: NodeId) -> None:
        return None

    def send_raw(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class UdpNat:
    def __init__(self, inside: Addr, filtering: str = "restricted") -> None:
        assert filtering in ("full", "restricted")
        self.inside = inside
        self.filtering = filtering
        self.contacted: set[Addr] = set()
        self.dropped = 0
        self._loop = asyncio.get_running_loop()
        self._socks: list[socket.socket] = []
        self._portals: dict[Addr, socket.socket] = {}
        self._out = self._socket(self._from_outside)

    def _socket(self, on_data: Callable[[bytes, Addr], None]) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        self._loop.add_reader(s.fileno(), self._drain, s, on_data)
        self._socks.append(s)
        return s

    @staticmethod
    def _drain(s: socket.socket, on_data: Callable[[bytes, Addr], None]) -> None:
        for _ in range(256):
            try:
                data, addr = s.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            on_data(data, (addr[0], addr[1]))

    @property
    def outside(self) -> Addr:
        host, port = self._out.getsockname()[:2]
        return (host, port)

    def portal(self, dest: Addr) -> Addr:
        """The local address the inside endpoint dials to reach ``dest`` via the NAT."""
        if dest not in self._portals:

            def to_dest(data: bytes, addr: Addr) -> None:
                self.contacted.add(dest)
                self._out.sendto(data, dest)

            self._portals[dest] = self._socket(to_dest)
        host, port = self._portals[dest].getsockname()[:2]
        return (host, port)

    def _from_outside(self, data: bytes, src: Addr) -> None:
        if self.filtering == "restricted" and src not in self.contacted:
            self.dropped += 1
            return
        self.portal(src)
        self._portals[src].sendto(data, self.inside)

    def close(self) -> None:
        for s in self._socks:
            self._loop.remove_reader(s.fileno())
            s.close()
        self._socks.clear()


async def reserve_body(relay: Endpoint, client: Endpoint) -> dict[str, Any]:
    """A ``relay.reserve`` body with a proof-of-work stamp (relay/work.py), for tests
    that call the RPC by hand."""
    import time

    from p2pstore.nat.relay import work as relay_work

    stamp = await asyncio.to_thread(
        relay_work.make_stamp, relay.node_id, client.node_id, time.time()
    )
    return {"work": stamp.to_body()}

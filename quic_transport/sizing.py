"""DatagramSizer: runs datagram-size searches (pmtu.py) over the endpoint's socket.

Owns the per-address caches: sizes this node discovered as a dialer, and sizes
dialers confirmed to this node as a listener (used for the connection they
open next). Both caches are bounded (least recently stored dropped first).

Invariants: at most one search per address runs at a time (later callers wait
for it); a confirmed size is only stored when its HMAC token checks out; sizes
never exceed ``config.max_datagram_size``. A probe is answered before any
authentication (that is its point), so its source address may be spoofed: the
ACK is never larger than the probe, and ACK bytes are bounded per source address
(IPv6: /64) and in total (:func:`probe_reply_budget`, docs/transport.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from . import echo, pmtu
from .config import TransportConfig

Addr = tuple[str, int]
CACHE_SIZE = 4096


#: bytes of probe ACKs: per source 512 KiB at once (two full searches), then
#: 128 KiB/s; in total 4 MiB at once, then 2 MiB/s
def probe_reply_budget() -> echo.ReplyLimiter:
    return echo.ReplyLimiter(
        per_source_rate=128 * 1024.0,
        per_source_burst=512 * 1024.0,
        total_rate=2 * 1024 * 1024.0,
        total_burst=4 * 1024 * 1024.0,
    )


def _remember(cache: OrderedDict[Addr, int], addr: Addr, size: int) -> None:
    cache[addr] = size
    cache.move_to_end(addr)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


class DatagramSizer:
    def __init__(self, config: TransportConfig, send: Callable[[bytes, Addr], bool]) -> None:
        """``send(datagram, addr)`` returns False if the local stack refused the
        datagram as too large (EMSGSIZE), True otherwise (sent, or dropped for
        another reason)."""
        self._config = config
        self._send = send
        self._secret = os.urandom(32)
        self._discovered: OrderedDict[Addr, int] = OrderedDict()
        self._confirmed: OrderedDict[Addr, int] = OrderedDict()
        # addr -> [the search running (gate, then full), its event]
        self._searches: dict[Addr, list[Any]] = {}
        self._replies = probe_reply_budget()
        self.replies_refused = 0

    def size_for_listener(self, addr: Addr) -> int:
        """Datagram size for a connection ``addr`` opens to us."""
        return self._confirmed.get(addr, self._config.min_datagram_size)

    async def discover(self, addr: Addr) -> int:
        """Datagram size to dial ``addr`` with (probing it unless cached)."""
        cfg = self._config
        if not cfg.pmtu_probe or cfg.max_datagram_size <= cfg.min_datagram_size:
            return cfg.min_datagram_size
        cached = self._discovered.get(addr)
        if cached is not None:
            return cached
        existing = self._searches.get(addr)
        if existing is not None:
            await existing[1].wait()
            return int(existing[0].result)
        low, high, rounds = cfg.min_datagram_size, cfg.max_datagram_size, cfg.pmtu_probe_rounds
        sizes = pmtu.candidate_sizes(low, high)
        # First one small probe: an address that does not answer it (a forged DHT
        # contact, a dead peer) costs a few hundred bytes, never the large probes.
        gate = pmtu.PmtuSearch(low=low, high=sizes[-1], rounds=rounds)
        box: list[Any] = [gate, asyncio.Event()]
        self._searches[addr] = box
        try:
            await self._run(gate, box[1], addr)
            confirm = None
            if gate.result > low and len(sizes) > 1:
                full = pmtu.PmtuSearch(low=gate.result, high=high, rounds=rounds)
                box[0] = full
                await self._run(full, box[1], addr)
                confirm = full.confirm()
            confirm = confirm or gate.confirm()
            if confirm is not None:
                self._send(confirm, addr)
        finally:
            del self._searches[addr]
            box[1].set()
        result = int(box[0].result)
        _remember(self._discovered, addr, result)
        return result

    async def _run(self, search: pmtu.PmtuSearch, event: asyncio.Event, addr: Addr) -> None:
        cfg = self._config
        probes = search.start()
        while probes:
            for p in probes:
                if not self._send(p, addr):
                    search.on_unsendable(len(p))  # a probe is exactly its size long
            if search.done:
                break
            try:
                async with asyncio.timeout(cfg.pmtu_probe_timeout):
                    while not search.done:
                        event.clear()
                        await event.wait()
            except TimeoutError:
                pass
            probes = search.on_round_timeout()

    def on_packet(self, data: bytes, addr: Addr) -> None:
        """A probe-protocol datagram arrived from ``addr``."""
        pkt = pmtu.parse(data)
        if pkt is None:
            return
        if pkt.kind == pmtu.TYPE_PROBE:
            reply = pmtu.reply_to(pkt, self._secret, addr)
            if reply is None or len(reply) > len(data):
                return
            if not self._replies.allow(addr[0], time.monotonic(), len(reply)):
                self.replies_refused += 1
                return
            self._send(reply, addr)
        elif pkt.kind == pmtu.TYPE_ACK:
            entry = self._searches.get(addr)
            if entry is not None:
                entry[0].on_packet(pkt)
                entry[1].set()
        else:
            size = pmtu.confirmed_size(pkt, self._secret, addr)
            if size is not None:
                _remember(self._confirmed, addr, min(size, self._config.max_datagram_size))

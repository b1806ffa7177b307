"""A small internet with two home networks behind NAT routers, built from Linux
network namespaces and nftables, for the NAT tests (docs/nat-tests.md).

Topology (every box is a namespace; interface names are fixed inside each one, so
two test runs never collide; namespace names carry the pid and a counter)::

    seed1 198.51.100.1 ─┐                              public "internet": a bridge
    seed2 198.51.100.2 ─┤  br0 (namespace pub)         in its own namespace, so
    nat1  198.51.100.11─┤                              the root namespace's
    nat2  198.51.100.12─┘                              firewall never sees it
    nat1 lan 10.0.1.1 ── storage 10.0.1.2   (default route via nat1)
    nat2 lan 10.0.2.1 ── client  10.0.2.2   (default route via nat2)

Each router forwards (ip_forward=1) and runs an nftables ruleset like a home router:
source NAT of everything leaving ``wan`` (``masquerade``, or ``masquerade
random-fully``), forwarding only LAN->WAN plus replies (``ct state
established,related``), and dropping unsolicited input on ``wan``.

The two NAT modes differ as real routers do:
- ``masquerade`` keeps the inner source port where it is free and reuses one
  mapping for every destination (endpoint-independent mapping), so the address a
  public peer observes is also the one another NATed peer can punch to.
- ``masquerade random-fully`` picks a random port per conntrack entry, i.e. per
  destination ("symmetric NAT"): the mapping a peer observes is useless to anyone
  else and hole punching fails; only a relay helps.

The ``wan`` input drop matters for punching: without it, an early punch datagram
arriving at the other router before that side has sent creates a conntrack entry on
that router (for local delivery), and the inside host's own outgoing datagram then
collides with it and gets a different port. Home routers drop such input, the
unconfirmed entry dies with the packet, and simultaneous open works in any order.
Both behaviours are measured in tests/nat/test_nat_topology.py.

Needs root, iproute2 with ``ip netns`` and nftables (``nft``) with NAT support in
the kernel; :func:`nat_unavailable` says what is missing so tests can skip.
Everything is removed by :meth:`NatTopology.destroy` (processes still running in
the namespaces, which only the tests started, are killed by pid first).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .netns import delete_namespaces, netns_unavailable, run

NatMode = Literal["masquerade", "random-fully"]
PUBLIC_NET = "198.51.100"  # TEST-NET-2: documentation addresses, never routed
PROBE = str(Path(__file__).with_name("nat_probe.py"))
_counter = itertools.count(1)


@dataclass(frozen=True)
class Host:
    """One machine: its namespace and its own (interface) address."""

    name: str
    ns: str
    addr: str


@dataclass(frozen=True)
class Router:
    """A NAT router: public address on ``wan``, LAN address on ``lan``."""

    name: str
    ns: str
    public: str
    lan: str
    mode: NatMode


def nft_ruleset(mode: NatMode, *, wan_input_drop: bool = True) -> str:
    """The home-router ruleset loaded into each NAT router (see the module doc)."""
    masq = "masquerade fully-random" if mode == "random-fully" else "masquerade"
    drop = 'iifname "wan" drop' if wan_input_drop else ""
    return f"""
table inet p2psnat {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    {drop}
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "wan" accept
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" {masq}
  }}
}}
"""


def nat_unavailable() -> str | None:
    """Why the NAT topology cannot be built here, or None when it can."""
    reason = netns_unavailable()
    if reason:
        return reason
    nft = shutil.which("nft") or ("/usr/sbin/nft" if os.access("/usr/sbin/nft", os.X_OK) else None)
    if nft is None:
        return "nftables (`nft`) is not installed (`make nat-tools` installs it as root)"
    probe = f"p2ps-nftprobe-{os.getpid()}"
    run("ip", "netns", "add", probe, check=False)
    try:
        ruleset = nft_ruleset("random-fully").replace('"wan"', '"lo"')
        r = run("ip", "netns", "exec", probe, nft, "-f", "-", stdin=ruleset, check=False)
        if r.returncode != 0:
            return f"the kernel refuses nftables NAT in a namespace: {r.stderr.strip()}"
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


class NatTopology:
    """Builds, runs commands in, and tears down the topology in the module doc."""

    def __init__(
        self,
        modes: tuple[NatMode, NatMode] = ("masquerade", "masquerade"),
        *,
        wan_input_drop: bool = True,
    ) -> None:
        tag = f"p2pn{os.getpid()}x{next(_counter)}"
        self.nft = shutil.which("nft") or "/usr/sbin/nft"
        self.wan_input_drop = wan_input_drop
        self.pub = f"{tag}-pub"
        self.seed1 = Host("seed1", f"{tag}-seed1", f"{PUBLIC_NET}.1")
        self.seed2 = Host("seed2", f"{tag}-seed2", f"{PUBLIC_NET}.2")
        self.nat1 = Router("nat1", f"{tag}-nat1", f"{PUBLIC_NET}.11", "10.0.1.1", modes[0])
        self.nat2 = Router("nat2", f"{tag}-nat2", f"{PUBLIC_NET}.12", "10.0.2.1", modes[1])
        self.storage = Host("storage", f"{tag}-storage", "10.0.1.2")  # behind nat1
        self.client = Host("client", f"{tag}-client", "10.0.2.2")  # behind nat2
        self._created: list[str] = []

    @property
    def namespaces(self) -> list[str]:
        return [
            self.pub,
            self.seed1.ns,
            self.seed2.ns,
            self.nat1.ns,
            self.nat2.ns,
            self.storage.ns,
            self.client.ns,
        ]

    def router_of(self, host: Host) -> Router:
        """The NAT router in front of an inner host."""
        return {self.storage.ns: self.nat1, self.client.ns: self.nat2}[host.ns]

    def _add_ns(self, ns: str) -> None:
        run("ip", "netns", "add", ns)
        self._created.append(ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def _wire(self, ns: str, ifname: str, addr: str, *, port: str) -> None:
        """A veth from the public bridge to ``ifname`` in ``ns``, with ``addr``/24."""
        run(
            "ip",
            "-n",
            self.pub,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            ns,
        )
        run("ip", "-n", self.pub, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
        run("ip", "-n", ns, "link", "set", ifname, "up")

    def create(self) -> None:
        for ns in self.namespaces:
            self._add_ns(ns)
        run("ip", "-n", self.pub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.pub, "link", "set", "br0", "up")
        self._wire(self.seed1.ns, "eth0", self.seed1.addr, port="p-seed1")
        self._wire(self.seed2.ns, "eth0", self.seed2.addr, port="p-seed2")
        for router, inner in ((self.nat1, self.storage), (self.nat2, self.client)):
            self._wire(router.ns, "wan", router.public, port=f"p-{router.name}")
            run(
                "ip",
                "-n",
                router.ns,
                "link",
                "add",
                "lan",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                inner.ns,
            )
            run("ip", "-n", router.ns, "addr", "add", f"{router.lan}/24", "dev", "lan")
            run("ip", "-n", router.ns, "link", "set", "lan", "up")
            run("ip", "-n", inner.ns, "addr", "add", f"{inner.addr}/24", "dev", "eth0")
            run("ip", "-n", inner.ns, "link", "set", "eth0", "up")
            run("ip", "-n", inner.ns, "route", "add", "default", "via", router.lan)
            run("ip", "netns", "exec", router.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            ruleset = nft_ruleset(router.mode, wan_input_drop=self.wan_input_drop)
            run("ip", "netns", "exec", router.ns, self.nft, "-f", "-", stdin=ruleset)

    def destroy(self) -> None:
        delete_namespaces(reversed(self._created))
        self._created.clear()

    # -- running things inside -------------------------------------------------

    def exec(
        self, host: Host | Router, *cmd: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", host.ns, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def probe(self, host: Host, *args: str) -> subprocess.Popen[str]:
        """Start tests/nat_probe.py in ``host`` (see its doc); JSON lines on stdout."""
        return subprocess.Popen(
            ["ip", "netns", "exec", host.ns, sys.executable, PROBE, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @contextmanager
    def echo(self, host: Host, port: int = 3478) -> Iterator[EchoServer]:
        """An echo server (nat_probe echo) on ``host``:``port`` for the block."""
        proc = self.probe(host, "echo", "--bind", f"{host.addr}:{port}")
        try:
            read_doc(proc, "ready")
            yield EchoServer(f"{host.addr}:{port}", proc)
        finally:
            stop_probe(proc)

    def simultaneous_open(
        self,
        a: Host,
        b: Host,
        *,
        rendezvous: str,
        port: int = 5000,
        seconds: float = 3.0,
        stagger: float = 0.0,
    ) -> PunchResult:
        """Each of ``a`` and ``b`` learns its public mapping from the echo server at
        ``rendezvous``, then both send to the other's mapping from that same socket
        (``b`` starts ``stagger`` seconds after ``a``), as hole punching does."""
        common = ["--rendezvous", rendezvous.addr, "--seconds", str(seconds)]
        pa = self.probe(a, "punch", "--bind", f"{a.addr}:{port}", "--name", a.name, *common)
        pb = self.probe(b, "punch", "--bind", f"{b.addr}:{port}", "--name", b.name, *common)
        try:
            ma, mb = read_doc(pa, "mapping"), read_doc(pb, "mapping")
            assert ma and mb, f"no mapping from the rendezvous: {ma!r} {mb!r}"
            assert pa.stdin is not None and pb.stdin is not None
            pa.stdin.write(f"{mb}\n")
            pa.stdin.flush()
            time.sleep(stagger)
            pb.stdin.write(f"{ma}\n")
            pb.stdin.flush()
            return PunchResult(ma, mb, read_doc(pa, "heard_from"), read_doc(pb, "heard_from"))
        finally:
            stop_probe(pa)
            stop_probe(pb)


@dataclass(frozen=True)
class EchoServer:
    """A running nat_probe echo server: its address, and a way to make it ping."""

    addr: str
    proc: subprocess.Popen[str]

    def ping(self) -> None:
        """Send one datagram to every address the server has heard from."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("ping\n")
        self.proc.stdin.flush()


@dataclass(frozen=True)
class PunchResult:
    """Mappings seen by the rendezvous, and the addresses each side heard the other from."""

    mapping_a: str
    mapping_b: str
    a_heard: list[str]
    b_heard: list[str]

    @property
    def connected(self) -> bool:
        return self.a_heard == [self.mapping_b] and self.b_heard == [self.mapping_a]


def stop_probe(proc: subprocess.Popen[str]) -> None:
    """Close the probe's stdin (echo servers exit on that) and reap it."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def read_doc(proc: subprocess.Popen[str], key: str) -> Any:
    """Read the probe's JSON lines until one holds ``key``; its value."""
    assert proc.stdout is not None
    for line in proc.stdout:
        doc = json.loads(line)
        if key in doc:
            return doc[key]
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"probe exited without {key!r}: {err}")


@contextmanager
def nat_topology(
    modes: Sequence[NatMode] = ("masquerade", "masquerade"), **kw: Any
) -> Iterator[NatTopology]:
    """Build a topology, yield it, and always tear it down."""
    topo = NatTopology((modes[0], modes[1]), **kw)
    try:
        topo.create()
        yield topo
    finally:
        topo.destroy()

"""The address a node tells others to dial, and its own bootstrap line.

Invariant: the advertised address is never a wildcard. Order of preference:
``[node] public_address`` (its port 0 meaning "the port actually bound"), else the
listen host if it is a specific address, else the local address of the interface
holding the default route (found by ``connect()``-ing a UDP socket, which sends no
packet), else loopback.
"""

from __future__ import annotations

import socket

from quic_transport.identity import NodeKey

from .address import HostPort, canonical_host
from .bootstrap import BootstrapList, ParamsLine, Seed
from .config import NodeConfig
from .grid_params import GridParams, effective_encoding

# RFC 5737 / RFC 3849 documentation addresses: routable-looking, never contacted.
_PROBE_V4 = ("192.0.2.1", 9)
_PROBE_V6 = ("2001:db8::1", 9)


def default_route_host(ipv6: bool = False) -> str | None:
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(_PROBE_V6 if ipv6 else _PROBE_V4)
            host: str = s.getsockname()[0]
    except OSError:
        return None
    return canonical_host(host.split("%")[0])


def advertised_address(config: NodeConfig, bound_port: int) -> HostPort:
    public = config.node.public_address
    if public is not None:
        return HostPort(public.host, public.port or bound_port)
    listen = config.node.listen
    if not listen.is_wildcard:
        return HostPort(listen.host, bound_port)
    host = default_route_host(ipv6=listen.is_ipv6)
    if host is None:
        host = "::1" if listen.is_ipv6 else "127.0.0.1"
    return HostPort(host, bound_port)


def own_seed(config: NodeConfig, key: NodeKey, bound_port: int) -> Seed:
    addr = advertised_address(config, bound_port)
    return Seed(key.node_id, addr.host, addr.port, config.node.nickname[:64])


def own_bootstrap_text(
    seed: Seed, own_list: BootstrapList, config: NodeConfig, key: NodeKey
) -> str:
    """This node's line, plus the vdrive line of its own list if it has one; on the
    vdrive node itself, also the grid's encoding (``p2ps-params``) signed with its
    key: what this node uploads with (docs/bootstrap.md, "Grid parameters")."""
    lines = [seed.to_line()]
    vdrive = own_list.vdrive
    if vdrive is not None:
        lines.append(vdrive.to_line())
        if vdrive.public_key == key.public_key:
            enc = effective_encoding(config, own_list.params)
            params = GridParams.signed(enc.k, enc.n, enc.happy, key)
            lines.append(ParamsLine(params).to_line())
    return "".join(line + "\n" for line in lines)

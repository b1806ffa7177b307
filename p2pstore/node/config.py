"""The node config file ``p2pstore.toml``: typed, validated, and written as commented text.

Invariants:
- :func:`load_config` either returns a fully validated, frozen :class:`NodeConfig` or
  raises :class:`ConfigError` naming the file, the key (``[section] name``) and the
  problem, e.g. ``p2pstore.toml: [node] listen: port 70000 is out of range 0..65535``.
- Unknown sections and keys are errors (a typo must not silently fall back to a
  default).
- :func:`render_config` writes TOML by templating text (``tomllib`` only reads) with
  a comment above every key; ``load_config`` of its output gives back the values
  it was given (tested).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pstore.nat.relay.limits import RelayLimits

from .address import HostPort, parse_host_port
from .config_table import Section as _Section
from .config_table import node_ids
from .errors import ConfigError
from .files import CONFIG_FILE as CONFIG_FILE  # re-exported: the name lives in files.py
from .helper_config import HelperSection, helper_section
from .sftp_config import SftpSection, sftp_section
from .size import parse_duration, parse_size

MAX_CONFIG_BYTES = 256 * 1024
MAX_NICKNAME_CHARS = 64
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: ``[limits] profile`` -> how many times slower periodic background work runs
#: (DHT refresh and republish, lease renewal, crawler, status; docs/limits.md)
PROFILE_FACTORS: dict[str, int] = {"normal": 1, "low-power": 4}
#: a bandwidth cap below this would starve handshakes and DHT traffic
MIN_RATE = 10_000


@dataclass(frozen=True, slots=True)
class NodeSection:
    nickname: str = "p2pstore-node"
    listen: HostPort = field(default_factory=lambda: HostPort("0.0.0.0", 0))
    public_address: HostPort | None = None
    web_port: int = 0
    introducer: bool = False
    bootstrap_file: str = "bootstrap.txt"
    shutdown_timeout: int = 20
    status_interval: int = 15


@dataclass(frozen=True, slots=True)
class StorageSection:
    enabled: bool = True
    quota: int | None = None  # None: no quota
    reserved_space: int = 1_000_000_000
    lease_duration: int = 31 * 86400


#: the three [client] keys that, set in a node's config, override the grid's encoding
ENCODING_KEYS = ("shares_needed", "shares_total", "shares_happy")


@dataclass(frozen=True, slots=True)
class ClientSection:
    """Encoding of files this node uploads: k-of-N shares, success needs ``happy``
    distinct storage peers (docs/grid.md, Placement rules)."""

    shares_needed: int = 3
    shares_total: int = 10
    shares_happy: int = 7
    #: keep the files this node uploads alive by renewing their leases (docs/node.md)
    renew_leases: bool = True
    #: how often the lease renewer wakes up (jittered)
    renew_interval: int = 3600
    #: the encoding keys the config file sets (any of them overrides the grid's)
    explicit: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DhtSection:
    k: int = 20
    alpha: int = 3
    remember_peers: int = 512


@dataclass(frozen=True, slots=True)
class LoggingSection:
    level: str = "INFO"
    max_bytes: int = 10_000_000
    backup_count: int = 5


@dataclass(frozen=True, slots=True)
class VdriveSection:
    """docs/vdrive.md: ``serve`` (None = serve iff introducer), who may write."""

    serve: bool | None = None
    writers: tuple[str, ...] = ()  # node IDs (base32) allowed to change the shared drive
    open: bool = False  # anyone may change it (small friendly grids)


@dataclass(frozen=True, slots=True)
class NetworkSection:
    """NAT traversal (docs/nat.md): ``reachability`` "auto" (decide from dial-backs),
    "public" or "private"; ``hole_punching`` and ``use_relays`` for reaching and being
    reached behind NAT; ``relays``: how many reachable peers a private node keeps as
    relays/rendezvous; ``keepalive``: how often it pings them (under the 30 s UDP
    conntrack timeout); ``recheck_interval``: how often reachability is re-checked."""

    reachability: str = "auto"
    hole_punching: bool = True
    use_relays: bool = True
    relays: int = 2
    keepalive: int = 15
    recheck_interval: int = 900


@dataclass(frozen=True, slots=True)
class RelaySection:
    """docs/relay.md: relay service for NATed peers. ``serve`` None = "auto": serve
    when this node is publicly reachable (GridService.set_relay_reachable)."""

    serve: bool | None = None
    max_reservations: int = 16
    max_reservations_per_peer: int = 2
    max_circuits: int = 16  # distinct remote sources per reservation
    max_bytes: int = 1 << 30  # per reservation, both directions; 0 = unlimited
    max_rate: int = 1_000_000  # bytes per second per reservation; 0 = unlimited
    lifetime: int = 600  # seconds granted by each reserve/renew
    max_duration: int = 86400  # total age of a reservation; 0 = unlimited
    circuit_idle: int = 120  # a silent remote source is forgotten after this
    work_bits: int = 18  # proof of work a reservation must carry (relay/work.py); 0 = none

    def limits(self) -> RelayLimits:
        return RelayLimits(
            max_reservations=self.max_reservations,
            max_reservations_per_peer=self.max_reservations_per_peer,
            max_circuits=self.max_circuits,
            max_bytes=self.max_bytes,
            max_rate=self.max_rate,
            lifetime=float(self.lifetime),
            max_duration=float(self.max_duration),
            circuit_idle=float(self.circuit_idle),
            work_bits=self.work_bits,
        )


@dataclass(frozen=True, slots=True)
class LimitsSection:
    """Resource limits for home machines (docs/limits.md). Rates are bytes per
    second of UDP datagrams for the whole node, 0 meaning unlimited."""

    max_connections: int = 256
    upload_rate: int = 0
    download_rate: int = 0
    # the uplink's queue (docs/limits.md): paced below the link when the queueing
    # delay passes this many milliseconds; 0 = each connection on its own
    uplink_queue_ms: int = 100
    profile: str = "normal"

    @property
    def background_factor(self) -> int:
        """How many times slower periodic background work runs under ``profile``."""
        return PROFILE_FACTORS[self.profile]


@dataclass(frozen=True, slots=True)
class PortmapSection:
    """docs/portmap.md: ask the home router (PCP, NAT-PMP, UPnP IGD) to forward the
    node's UDP port; ``lifetime`` is the mapping lifetime requested (renewed at half)."""

    enabled: bool = True
    lifetime: int = 7200


PORTMAP_LIFETIME_RANGE = (120, 86400)


@dataclass(frozen=True, slots=True)
class MaintenanceSection:
    """docs/maintenance.md: what a storage node does for the files it holds shares of
    (check, repair as custodian, move shares nearer, scrub) and for the files its
    drives and pins reference (keep their leases)."""

    enabled: bool = True
    check_interval: int = 86400
    min_shares: int = 0  # repair below this many distinct shares; 0: N-1
    min_holders: int = 0  # repair below this many distinct holders; 0: [client] shares_happy
    pace: int = 2  # seconds between the start of two checks, at least
    verify_interval: int = 30 * 86400
    keep_references: bool = True  # renew leases of what the drives and pins reference
    keep_interval: int = 0  # between two rounds of keeping them; 0: lease_duration / 3


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A validated node config. ``node_dir`` is the directory holding the file."""

    path: Path
    node: NodeSection = field(default_factory=NodeSection)
    storage: StorageSection = field(default_factory=StorageSection)
    dht: DhtSection = field(default_factory=DhtSection)
    client: ClientSection = field(default_factory=ClientSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    vdrive: VdriveSection = field(default_factory=VdriveSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    relay: RelaySection = field(default_factory=RelaySection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    portmap: PortmapSection = field(default_factory=PortmapSection)
    maintenance: MaintenanceSection = field(default_factory=MaintenanceSection)
    sftp: SftpSection = field(default_factory=SftpSection)
    helper: HelperSection = field(default_factory=HelperSection)

    @property
    def node_dir(self) -> Path:
        return self.path.parent

    @property
    def bootstrap_path(self) -> Path:
        return self.node_dir / self.node.bootstrap_file


def _host_port(value: Any) -> HostPort:
    if not isinstance(value, str):
        raise ValueError(f'expected a string like "0.0.0.0:3456", got {value!r}')
    return parse_host_port(value)


def _nickname(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    if not 1 <= len(value) <= MAX_NICKNAME_CHARS:
        raise ValueError(f"must be 1 to {MAX_NICKNAME_CHARS} characters, got {len(value)}")
    if not value.isprintable() or value != value.strip():
        raise ValueError("must be printable text without surrounding spaces")
    return value


def _quota(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    return parse_size(value)


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _bootstrap_file(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a file name (relative to the node directory)")
    if "\x00" in value:
        raise ValueError("file name contains a NUL character")
    return value


def _rate(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return 0
    rate = parse_size(value)
    if 0 < rate < MIN_RATE:
        raise ValueError(f"{value!r} is below the minimum of 10kB per second (0 = unlimited)")
    return rate


def _queue_ms(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (value == 0 or 10 <= value <= 2000)
    ):
        raise ValueError(f"{value!r} is not 0 (off) or a whole number of milliseconds, 10 to 2000")
    return value


def _profile(value: Any) -> str:
    if not isinstance(value, str) or value not in PROFILE_FACTORS:
        raise ValueError(f"{value!r} is not one of {', '.join(map(repr, PROFILE_FACTORS))}")
    return value


def _duration_at_least(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        seconds = parse_duration(value)
        if seconds < minimum:
            raise ValueError(f"{value!r} is shorter than the minimum of {minimum} s")
        if maximum is not None and seconds > maximum:
            raise ValueError(f"{value!r} is longer than the maximum of {maximum} s")
        return seconds

    return parse


def _reachability(value: Any) -> str:
    if value not in ("auto", "public", "private"):
        raise ValueError(f'{value!r} is not one of "auto", "public", "private"')
    return str(value)


def _duration_between(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        seconds = parse_duration(value)
        if not lo <= seconds <= hi:
            raise ValueError(f"{value!r} is out of range {lo} s .. {hi} s")
        return seconds

    return parse


def config_from_dict(data: Mapping[str, Any], path: Path) -> NodeConfig:
    """Validate parsed TOML; ``path`` is only used in messages and for ``node_dir``."""
    known_sections = {
        *("node", "storage", "dht", "client", "logging", "vdrive"),
        *("limits", "portmap", "relay", "network", "maintenance", "sftp", "helper"),
    }
    for name, value in data.items():
        if name not in known_sections:
            raise ConfigError(
                path, f"[{name}]", f"unknown section (known: {', '.join(sorted(known_sections))})"
            )
        if not isinstance(value, dict):
            raise ConfigError(path, name, "expected a [section] table")

    def section(name: str) -> _Section:
        return _Section(path, name, data.get(name, {}))

    node = _node_section(section("node"))
    storage = _storage_section(section("storage"))
    return NodeConfig(
        path=path,
        node=node,
        storage=storage,
        dht=_dht_section(section("dht")),
        client=_client_section(section("client")),
        logging=_logging_section(section("logging"), path),
        vdrive=_vdrive_section(section("vdrive"), node),
        network=_network_section(section("network")),
        relay=_relay_section(section("relay")),
        limits=_limits_section(section("limits")),
        portmap=_portmap_section(section("portmap")),
        maintenance=_maintenance_section(section("maintenance"), storage),
        sftp=sftp_section(section("sftp")),
        helper=helper_section(section("helper")),
    )


def _node_section(s: _Section) -> NodeSection:
    d_node = NodeSection()
    node = NodeSection(
        nickname=s.convert("nickname", d_node.nickname, _nickname),
        listen=s.convert("listen", d_node.listen, _host_port),
        public_address=s.convert("public_address", None, _host_port),
        web_port=s.int_range("web_port", d_node.web_port, 0, 65535),
        introducer=s.get("introducer", bool, d_node.introducer),
        bootstrap_file=s.convert("bootstrap_file", d_node.bootstrap_file, _bootstrap_file),
        shutdown_timeout=s.convert(
            "shutdown_timeout", d_node.shutdown_timeout, _duration_at_least(1)
        ),
        status_interval=s.convert("status_interval", d_node.status_interval, _duration_at_least(1)),
    )
    s.finish()
    if node.public_address is not None and node.public_address.is_wildcard:
        raise s.error("public_address", "must be an address others can dial, not a wildcard")
    return node


def _storage_section(s: _Section) -> StorageSection:
    d_storage = StorageSection()
    storage = StorageSection(
        enabled=s.get("enabled", bool, d_storage.enabled),
        quota=s.convert("quota", d_storage.quota, _quota),
        reserved_space=s.convert("reserved_space", d_storage.reserved_space, parse_size),
        lease_duration=s.convert(
            "lease_duration", d_storage.lease_duration, _duration_at_least(3600)
        ),
    )
    s.finish()
    return storage


def _dht_section(s: _Section) -> DhtSection:
    d_dht = DhtSection()
    k = s.int_range("k", d_dht.k, 1, 64)
    dht = DhtSection(
        k=k,
        alpha=s.int_range("alpha", d_dht.alpha, 1, k),
        remember_peers=s.int_range("remember_peers", d_dht.remember_peers, 1, 100_000),
    )
    s.finish()
    return dht


def _client_section(s: _Section) -> ClientSection:
    d_client = ClientSection()
    needed = s.int_range("shares_needed", d_client.shares_needed, 1, 256)
    total = s.int_range("shares_total", d_client.shares_total, needed, 256)
    client = ClientSection(
        shares_needed=needed,
        shares_total=total,
        shares_happy=s.int_range("shares_happy", min(d_client.shares_happy, total), needed, total),
        renew_leases=s.get("renew_leases", bool, d_client.renew_leases),
        renew_interval=s.convert("renew_interval", d_client.renew_interval, _duration_at_least(60)),
        explicit=frozenset(k for k in ENCODING_KEYS if k in s.table),
    )
    s.finish()
    return client


def _logging_section(s: _Section, path: Path) -> LoggingSection:
    d_log = LoggingSection()
    logging_ = LoggingSection(
        level=s.convert("level", d_log.level, _level),
        max_bytes=s.convert("max_bytes", d_log.max_bytes, parse_size),
        backup_count=s.int_range("backup_count", d_log.backup_count, 0, 100),
    )
    s.finish()
    if logging_.max_bytes < 10_000:
        raise ConfigError(path, "[logging] max_bytes", "must be at least 10kB")
    return logging_


def _vdrive_section(s: _Section, node: NodeSection) -> VdriveSection:
    vdrive = VdriveSection(
        serve=s.get("serve", bool, node.introducer),
        writers=s.convert("writers", (), node_ids),
        open=s.get("open", bool, False),
    )
    s.finish()
    return vdrive


def _network_section(s: _Section) -> NetworkSection:
    d_net = NetworkSection()
    network = NetworkSection(
        reachability=s.convert("reachability", d_net.reachability, _reachability),
        hole_punching=s.get("hole_punching", bool, d_net.hole_punching),
        use_relays=s.get("use_relays", bool, d_net.use_relays),
        relays=s.int_range("relays", d_net.relays, 1, 4),
        keepalive=s.convert("keepalive", d_net.keepalive, _duration_between(5, 25)),
        recheck_interval=s.convert(
            "recheck_interval", d_net.recheck_interval, _duration_at_least(60)
        ),
    )
    s.finish()
    return network


def _limits_section(s: _Section) -> LimitsSection:
    d_limits = LimitsSection()
    limits = LimitsSection(
        max_connections=s.int_range("max_connections", d_limits.max_connections, 8, 65536),
        upload_rate=s.convert("upload_rate", d_limits.upload_rate, _rate),
        download_rate=s.convert("download_rate", d_limits.download_rate, _rate),
        uplink_queue_ms=s.convert("uplink_queue_ms", d_limits.uplink_queue_ms, _queue_ms),
        profile=s.convert("profile", d_limits.profile, _profile),
    )
    s.finish()
    return limits


def _portmap_section(s: _Section) -> PortmapSection:
    d_portmap = PortmapSection()
    portmap = PortmapSection(
        enabled=s.get("enabled", bool, d_portmap.enabled),
        lifetime=s.convert(
            "lifetime", d_portmap.lifetime, _duration_at_least(*PORTMAP_LIFETIME_RANGE)
        ),
    )
    s.finish()
    return portmap


def _maintenance_section(s: _Section, storage: StorageSection) -> MaintenanceSection:
    d = MaintenanceSection()
    out = MaintenanceSection(
        enabled=s.get("enabled", bool, d.enabled),
        check_interval=s.convert("check_interval", d.check_interval, _duration_at_least(1)),
        min_shares=s.int_range("min_shares", d.min_shares, 0, 256),
        min_holders=s.int_range("min_holders", d.min_holders, 0, 256),
        pace=s.convert("pace", d.pace, parse_duration),
        verify_interval=s.convert("verify_interval", d.verify_interval, _duration_at_least(60)),
        keep_references=s.get("keep_references", bool, d.keep_references),
        # at most a third of the lease: a file the lease book let go of that a walk
        # missed (a drive changing under it) is still renewed by the round after
        keep_interval=s.convert(
            "keep_interval", d.keep_interval, _duration_at_least(0, storage.lease_duration // 3)
        ),
    )
    s.finish()
    return out


def _serve(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if value == "auto":
        return None
    raise ValueError(f'expected "auto", true or false, got {value!r}')


def _relay_section(s: _Section) -> RelaySection:
    d = RelaySection()
    relay = RelaySection(
        serve=s.convert("serve", d.serve, _serve),
        max_reservations=s.int_range("max_reservations", d.max_reservations, 1, 10_000),
        max_reservations_per_peer=s.int_range(
            "max_reservations_per_peer", d.max_reservations_per_peer, 1, 100
        ),
        max_circuits=s.int_range("max_circuits", d.max_circuits, 1, 10_000),
        max_bytes=s.convert("max_bytes", d.max_bytes, parse_size),
        max_rate=s.convert("max_rate", d.max_rate, parse_size),
        lifetime=s.convert("lifetime", d.lifetime, _duration_at_least(10)),
        max_duration=s.convert("max_duration", d.max_duration, parse_duration),
        circuit_idle=s.convert("circuit_idle", d.circuit_idle, _duration_at_least(60)),
        work_bits=s.int_range("work_bits", d.work_bits, 0, 24),
    )
    s.finish()
    if relay.max_reservations_per_peer > relay.max_reservations:
        raise s.error("max_reservations_per_peer", "must not exceed max_reservations")
    if relay.max_duration and relay.max_duration < relay.lifetime:
        raise s.error("max_duration", "must be 0 (unlimited) or at least lifetime")
    return relay


def load_config(path: Path) -> NodeConfig:
    """Read and validate ``path``; every failure is a :class:`ConfigError`."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(path, "", f"cannot read config: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(path, "", f"config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None
    return config_from_dict(data, path)


def toml_string(value: str) -> str:
    """A TOML basic string literal for ``value`` (escapes quotes, backslash, controls)."""
    out = ['"']
    for c in value:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)

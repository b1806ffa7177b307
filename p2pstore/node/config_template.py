"""Writing ``p2pstore.toml``: the commented template filled with a node's values.

Invariant: ``load_config`` of :func:`render_config`'s output returns exactly the
sections it was given (tested). Comments are for people editing the file by hand,
so every key has one saying what it does and what values it takes.
"""

from __future__ import annotations

from .config import (
    PROFILE_FACTORS,
    ClientSection,
    DhtSection,
    LimitsSection,
    LoggingSection,
    MaintenanceSection,
    NodeSection,
    PortmapSection,
    RelaySection,
    StorageSection,
    toml_string,
)
from .size import format_duration_exact, format_size_exact


def _rate(rate: int) -> str:
    return "0" if rate == 0 else format_size_exact(rate)


def _enc(client: ClientSection, key: str) -> str:
    line = f"{key} = {getattr(client, key)}"
    return line if key in client.explicit else "# " + line


def render_config(
    node: NodeSection,
    storage: StorageSection,
    dht: DhtSection | None = None,
    logging: LoggingSection | None = None,
    client: ClientSection | None = None,
    limits: LimitsSection | None = None,
    portmap: PortmapSection | None = None,
    relay: RelaySection | None = None,
    maint: MaintenanceSection | None = None,
) -> str:
    # Longer than 80 lines because it is one commented TOML template: the file a
    # user reads top to bottom is easier to keep right as one literal.
    limits = limits or LimitsSection()
    slow = PROFILE_FACTORS["low-power"]
    relay = relay or RelaySection()
    serve = "auto" if relay.serve is None else ("true" if relay.serve else "false")
    serve_text = toml_string(serve) if relay.serve is None else serve
    dht = dht or DhtSection()
    portmap = portmap or PortmapSection()
    maint = maint or MaintenanceSection()
    client = client or ClientSection()
    logging = logging or LoggingSection()
    public = (
        f"public_address = {toml_string(str(node.public_address))}"
        if node.public_address
        else '# public_address = "my-home.example.org:3456"'
    )
    quota = "unlimited" if storage.quota is None else format_size_exact(storage.quota)
    role = "an introducer (a seed others join through)" if node.introducer else "a node"
    return f"""\
# p2pstore configuration for {role}.
# Read at every start; a bad value stops the node with a message naming the key.
# Sizes: a number and a unit, B kB MB GB TB (powers of 1000) or KiB MiB GiB TiB
# (powers of 1024), e.g. "10GB", "500MiB". Durations: "90s", "15m", "12h", "31d".
# Full reference: docs/node.md.

[node]
# A name shown to other people on status pages. Not unique and not secret.
nickname = {toml_string(node.nickname)}
# Where this node listens for QUIC (UDP), host:port. 0.0.0.0 means every IPv4
# interface; use [::] for IPv6. Keep the port fixed so peers can find you again.
listen = {toml_string(str(node.listen))}
# The address other nodes should dial, if it differs from the listen address
# (a router forwarding a port to this machine, a DNS name). When unset and
# listen is a wildcard, the address of the interface with the default route is used.
{public}
# Port of the local HTTP API and web UI on 127.0.0.1 (0: any free port).
web_port = {node.web_port}
# true: this node is an introducer. It prints its bootstrap line at start and
# writes it to bootstrap-self.txt for you to share.
introducer = {"true" if node.introducer else "false"}
# The bootstrap list (seeds to join through), relative to this directory.
bootstrap_file = {toml_string(node.bootstrap_file)}
# How long a clean shutdown may take before the node gives up and exits.
shutdown_timeout = {toml_string(format_duration_exact(node.shutdown_timeout))}
# How often run/status.json (read by `p2pstore status`) is refreshed.
status_interval = {toml_string(format_duration_exact(node.status_interval))}

[storage]
# true: hold shares for other people (encrypted; you cannot read them).
enabled = {"true" if storage.enabled else "false"}
# Most space shares may use, or "unlimited".
quota = {toml_string(quota)}
# Refuse new shares when less than this is free on the disk.
reserved_space = {toml_string(format_size_exact(storage.reserved_space))}
# How long a lease keeps a share alive unless renewed.
lease_duration = {toml_string(format_duration_exact(storage.lease_duration))}

[dht]
# Kademlia bucket size and replication factor (k) and lookup parallelism (alpha).
k = {dht.k}
alpha = {dht.alpha}
# How many peers to remember in state/known_peers.json, to rejoin without seeds.
remember_peers = {dht.remember_peers}

[client]
# Files you upload are cut into shares_total shares, any shares_needed of which
# rebuild the file; an upload succeeds only when at least shares_happy distinct
# storage peers hold shares (so shares_happy - shares_needed of them may vanish).
# Left commented, the node uses the grid's encoding (the p2ps-params line of its
# bootstrap list), else 3, 10 and 7; setting any of the three overrides the grid's.
{_enc(client, "shares_needed")}
{_enc(client, "shares_total")}
{_enc(client, "shares_happy")}
# Shares carry leases that expire ([storage] lease_duration on the servers); this
# node renews the leases of the files it uploaded (and of its vdrive directories)
# every renew_interval, so they outlive the lease duration. See docs/node.md, Leases.
renew_leases = {"true" if client.renew_leases else "false"}
renew_interval = {toml_string(format_duration_exact(client.renew_interval))}

[logging]
# DEBUG, INFO, WARNING or ERROR. Secrets are never logged at any level.
level = {toml_string(logging.level)}
# logs/node.log is rotated when it reaches max_bytes; backup_count old files kept.
max_bytes = {toml_string(format_size_exact(logging.max_bytes))}
backup_count = {logging.backup_count}

[limits]
# Resource limits for a home machine (docs/limits.md).
# Most QUIC connections open at once; when full, the least recently used idle one
# is closed to make room.
max_connections = {limits.max_connections}
# Bandwidth caps, bytes per second of all traffic (a size like "2MB" or "512KiB"
# per second; 0 = unlimited, otherwise at least 10kB). Uploads beyond the cap
# wait; downloads beyond it are read more slowly, so senders slow down.
upload_rate = {toml_string(_rate(limits.upload_rate))}
download_rate = {toml_string(_rate(limits.download_rate))}
# Keep the home router's upload queue short: when the queueing delay of uploads
# passes this many milliseconds, all connections together are paced just below
# the rate the link delivers, so a big upload to many peers does not overflow the
# router (0 = off; 10 to 2000).
uplink_queue_ms = {limits.uplink_queue_ms}
# "normal", or "low-power": background work (DHT refresh and republish, lease
# renewal, the lease crawler, the status file) runs {slow} times less often.
profile = {toml_string(limits.profile)}

[portmap]
# Ask the home router (PCP, NAT-PMP or UPnP IGD) to forward this node's UDP port,
# so others can dial it. Harmless when the router does none of them; never tried
# when listening on 127.0.0.1. See docs/portmap.md.
enabled = {"true" if portmap.enabled else "false"}
# How long each mapping is requested for (2m .. 1d); it is renewed at half that.
lifetime = {toml_string(format_duration_exact(portmap.lifetime))}

[maintenance]
# Files stay healthy without their uploader (docs/maintenance.md): a storage node
# checks the files it holds shares of; the holder nearest a file repairs it, shares
# held too far from a file move nearer, and each node hash-checks its own shares.
enabled = {"true" if maint.enabled else "false"}
# How often the files held here are checked (the nearest holder's period; other
# holders check 3 times less often). Shorter costs more lookups.
check_interval = {toml_string(format_duration_exact(maint.check_interval))}
# Repair when fewer distinct shares (0: shares_total - 1) or fewer distinct holders
# (0: [client] shares_happy) are found.
min_shares = {maint.min_shares}
min_holders = {maint.min_holders}
# At least this long between two checks (a node holding many files spreads them).
pace = {toml_string(format_duration_exact(maint.pace))}
# How often every byte of the shares held here is hash-checked (bit rot).
verify_interval = {toml_string(format_duration_exact(maint.verify_interval))}
# Renew the leases of every file reachable from the drives this node publishes and
# of every pinned file (`p2pstore pin`), so they outlive their uploader.
keep_references = {"true" if maint.keep_references else "false"}
# How often they are renewed ("0s": a third of [storage] lease_duration, the most).
# A round also lets the lease book go of this node's uploads that were linked from
# those drives and are not any more (docs/node.md, "Leases").
keep_interval = {toml_string(format_duration_exact(maint.keep_interval))}

# [vdrive]
# The grid's shared namespace (docs/vdrive.md). The node that serves it holds the
# shared drive's key (its own node key) and publishes the p2ps-vdrive line.
# serve = false          # default: true on an introducer, false elsewhere
# writers = []           # node IDs (base32) allowed to change the shared drive
# open = false           # true: any node may change it (small friendly grids)

# [sftp]
# An SFTP server on this node for sftp, sshfs and rclone (docs/sftp.md): each user
# of users_file logs in with their SSH key and sees one drive path (private:/,
# shared:/photos, ro:shared:/ read-only) or a read-only directory cap as "/".
# enabled = false
# listen = "127.0.0.1"   # add :PORT to fix the port; without one a free port is
#                        # picked once and kept (see `p2pstore status`)
# users_file = "sftp_users"

# [helper]
# Upload helpers for slow home uplinks (docs/helper.md). A node with a slow uplink
# sends a file's ciphertext once to a helper, which erasure codes it and places the
# shares; the helper never sees the key, and this node checks every placed share.
# enabled = false             # serve as a helper for others (a well-connected node)
# max_uploads = 4             # uploads in progress or waiting to resume
# max_bytes_per_day = "50GB"  # ciphertext accepted per day, all callers together
# accept = []                 # node IDs allowed to use it; empty: any peer
# keep_partial = "2d"         # an unfinished upload waits this long to be resumed
# use = "never"               # "always", or "slow": when this node's measured
#                             # upload rate is below slow_below (bytes per second)
# slow_below = "2.5MB"
# helpers = ["seeds"]         # node IDs to try; "seeds": the bootstrap seeds

# [network]
# Home machines behind NAT (docs/nat.md). "auto" asks peers to dial this node back
# and decides; "public"/"private" skip the guess (a private node runs the DHT as a
# client and is reached through hole punching or its relays).
# reachability = "auto"
# hole_punching = true   # coordinate UDP hole punching through a rendezvous peer
# use_relays = true      # when private, reserve relayed ports on reachable peers
# relays = 2             # how many reachable peers a private node keeps (1..4)
# keepalive = "15s"      # ping them this often (5s..25s, under NAT UDP timeouts)
# recheck_interval = "15m"

[relay]
# Relay datagrams for peers behind NAT that cannot be dialed (docs/relay.md). A
# relayed peer's traffic stays end-to-end encrypted; you only pass it along.
# "auto": serve when this node is publicly reachable; true / false: always / never.
serve = {serve_text}
# Reservations held at once, in total and per peer.
max_reservations = {relay.max_reservations}
max_reservations_per_peer = {relay.max_reservations_per_peer}
# Distinct remote addresses that may talk through one reservation.
max_circuits = {relay.max_circuits}
# Bytes one reservation may carry in total (both directions), and per second
# ("0" = unlimited). Over the cap a reservation ends; over the rate datagrams drop.
max_bytes = {toml_string(_rate(relay.max_bytes))}
max_rate = {toml_string(_rate(relay.max_rate))}
# A reservation lasts lifetime unless renewed (clients renew at half of it), and
# at most max_duration in total ("0s" = no limit).
lifetime = {toml_string(format_duration_exact(relay.lifetime))}
max_duration = {toml_string(format_duration_exact(relay.max_duration))}
# A remote address silent this long is forgotten (it may come back as new).
circuit_idle = {toml_string(format_duration_exact(relay.circuit_idle))}
"""

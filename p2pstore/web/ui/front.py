"""The web UI's front page, sans-I/O: node, bootstrap seeds, peers, DHT,
storage and transfers, from ``backend.status()`` and ``backend.peers()`` (as the
API's JSON shapes).

It reads the status tolerantly: every field may be missing (the memory backend
reports few) or odd, and renders as "not reported" instead of failing; where
backends put a value in different places (the documented key, or the grid
service's ``details``), :func:`_pick` takes the first present. The keys are
listed in docs/web-ui.md ("Status keys").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from p2pstore import __version__
from p2pstore.base.reports import helper_rows, maintenance_rows

from .html import (
    DASH,
    esc,
    fmt_bytes,
    fmt_duration,
    fmt_ms,
    fmt_time,
    kv_table,
    missing,
    table,
    yes_no,
)

MAX_PEER_ROWS: Final = 200


def _get(doc: Mapping[str, Any], *keys: str) -> Any:
    value: Any = doc
    for k in keys:
        if not isinstance(value, Mapping) or k not in value:
            return None
        value = value[k]
    return value


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _text(value: Any) -> str:
    return missing() if value is None or value == "" else esc(value)


def _mono(value: Any) -> str:
    return missing() if not value else f'<code class="id">{esc(value)}</code>'


def _int(value: Any) -> str:
    return esc(value) if isinstance(value, int) and not isinstance(value, bool) else missing()


# -- front page --------------------------------------------------------------------
def _node_section(status: Mapping[str, Any], now: float, ui_started: float) -> str:
    uptime = status.get("uptime")
    started = status.get("started_at")
    if isinstance(uptime, int | float) and not isinstance(uptime, bool):
        up = fmt_duration(uptime)
    elif isinstance(started, int | float) and not isinstance(started, bool):
        up = fmt_duration(now - started)
    else:
        up = fmt_duration(now - ui_started) + ' <span class="muted">(of the web server)</span>'
    host, port = status.get("listen_host"), status.get("listen_port")
    listen = f"{host}:{port}" if host is not None and port is not None else None
    role = status.get("introducer")
    rows = [
        ("Node ID", _mono(status.get("node_id"))),
        ("Nickname", _text(status.get("nickname"))),
        ("Version", esc(status.get("version") or __version__)),
        ("Uptime", up),
        ("Listen address", _text(_first(status.get("listen"), listen))),
        ("Advertised address", _text(status.get("advertised"))),
        ("Role", missing() if role is None else esc("introducer" if role else "node")),
        ("Backend", _text(status.get("backend"))),
        ("Virtual drive", yes_no(status.get("vdrive"), "available", "not available")),
    ]
    return (
        '<section aria-labelledby="h-node"><h2 id="h-node">Node</h2>'
        + kv_table(rows)
        + "</section>"
    )


def _seeds_section(status: Mapping[str, Any]) -> str:
    seeds = status.get("seeds")
    head = '<section aria-labelledby="h-seeds"><h2 id="h-seeds">Bootstrap seeds</h2>'
    if not isinstance(seeds, list):
        join = _get(status, "details", "join")
        if isinstance(join, Mapping):  # the grid service's join summary
            return (
                head + f"<p>Last join: {_int(join.get('reached'))} reached, "
                f"{_int(join.get('failed'))} failed (seeds and remembered peers), "
                f"at {fmt_time(join.get('joined_at'))}.</p></section>"
            )
        return (
            head
            + "<p>"
            + missing("This node's backend does not report its seeds.")
            + "</p></section>"
        )
    if not seeds:
        return (
            head
            + "<p>No bootstrap seeds are configured (an introducer, or a lone node).</p></section>"
        )
    rows = []
    for s in seeds:
        if not isinstance(s, Mapping):
            continue
        reach = s.get("reachable")
        state = (
            yes_no(reach, "reachable", "unreachable")
            if reach is not None
            else missing("not tried yet")
        )
        if s.get("error"):
            state += f' <span class="muted">{esc(str(s["error"])[:200])}</span>'
        rows.append(
            [
                _text(s.get("address")),
                _mono(s.get("node_id")),
                _text(s.get("nickname")),
                state,
                fmt_ms(s.get("rtt_ms")),
                fmt_time(s.get("last_contact")),
            ]
        )
    n_ok = sum(1 for s in seeds if isinstance(s, Mapping) and s.get("reachable") is True)
    summary = f"<p>{n_ok} of {len(rows)} reachable.</p>"
    headers = ["Address", "Node ID", "Nickname", "Status", "Round trip", "Last contact"]
    return head + summary + table(headers, rows) + "</section>"


def _peer_storage(details: Mapping[str, Any]) -> str:
    stores = details.get("storage")
    if not isinstance(stores, bool):
        return DASH
    out = yes_no(stores, "holds shares", "no storage")
    free = details.get("storage_available")
    if stores and isinstance(free, int) and not isinstance(free, bool):
        out += f" ({fmt_bytes(free)} free)"
    return out


def _peer_connection(details: Mapping[str, Any]) -> str:
    """How we reach the peer (direct/punched/relayed) and whether it relays for us."""
    kind = details.get("connection")
    out = esc(kind) if isinstance(kind, str) else DASH
    if details.get("our_relay") is True:
        out += " (our relay)"
    return out


def _nat_section(status: Mapping[str, Any]) -> str:
    """Reachability (docs/nat.md "Status"): verdict, observed address, DHT mode,
    relays, port mapping. Absent on backends without NAT support."""
    nat = status.get("nat")
    if not isinstance(nat, Mapping):
        return ""
    relays = nat.get("relays") if isinstance(nat.get("relays"), list) else []
    assert isinstance(relays, list)
    relay_text = (
        ", ".join(
            esc(
                f"{r.get('address')}"
                + (f" (relayed {r.get('relayed')})" if r.get("relayed") else "")
            )
            for r in relays
            if isinstance(r, Mapping)
        )
        or "none"
    )

    def val(key: str, none: str = "not checked yet") -> str:
        v = nat.get(key)
        return esc(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else none

    checks = f"{val('reached_by', '0')} of {val('answers', '0')} peers could dial us"
    rows = [
        ("Reachability", f"{val('reachability', 'unknown')} (mode {val('mode', 'auto')})"),
        ("Observed address", val("observed")),
        ("NAT type", val("nat_type", "unknown")),
        ("Dial-back checks", checks),
        ("DHT mode", val("dht_mode", "server")),
        ("Relays", relay_text),
        ("Port mapping", val("port_mapping", "none")),
        (
            "Hole punching / relays",
            yes_no(nat.get("hole_punching"), "punching on", "punching off")
            + ", "
            + yes_no(nat.get("use_relays"), "relays on", "relays off"),
        ),
    ]
    return (
        '<section aria-labelledby="h-nat"><h2 id="h-nat">Reachability</h2>'
        + kv_table(rows)
        + "</section>"
    )


def _peers_section(status: Mapping[str, Any], peers: Sequence[Mapping[str, Any]]) -> str:
    head = '<section aria-labelledby="h-peers"><h2 id="h-peers">Peers</h2>'
    connected = [p for p in peers if p.get("connected")]
    known = _first(status.get("peers_known"), len(peers))
    n_conn = _first(status.get("peers_connected"), len(connected))
    summary = f"<p>{esc(n_conn)} connected, {esc(known)} known.</p>"
    if not peers:
        return head + summary + "<p>No peers yet.</p></section>"
    ordered = sorted(
        peers, key=lambda p: (not p.get("connected"), -float(p.get("last_seen") or 0.0))
    )
    rows = []
    for p in ordered[:MAX_PEER_ROWS]:
        details = p.get("details") if isinstance(p.get("details"), Mapping) else {}
        assert isinstance(details, Mapping)
        rows.append(
            [
                _mono(p.get("node_id")),
                _text(details.get("nickname")),
                _text(p.get("address")),
                yes_no(p.get("connected"), "connected", "not connected"),
                fmt_ms(details.get("rtt_ms")),
                _peer_storage(details),
                _peer_connection(details),
                fmt_time(p.get("last_seen")),
            ]
        )
    more = ""
    if len(ordered) > MAX_PEER_ROWS:
        more = f"<p>… and {len(ordered) - MAX_PEER_ROWS} more (see <code>/?format=json</code>).</p>"
    headers = [
        "Node ID",
        "Nickname",
        "Address",
        "State",
        "Round trip",
        "Storage",
        "Connection",
        "Last seen",
    ]
    return head + summary + table(headers, rows) + more + "</section>"


def _pick(status: Mapping[str, Any], *paths: tuple[str, ...]) -> Any:
    """The first of several places a backend may report a value (see docs/web-ui.md)."""
    return _first(*(_get(status, *path) for path in paths))


def _dht_storage_section(status: Mapping[str, Any]) -> str:
    rt = _pick(
        status,
        ("dht", "routing_table_size"),
        ("routing_table_size",),
        ("details", "dht", "contacts"),
    )
    buckets = _pick(status, ("dht", "buckets"), ("details", "dht", "buckets"))
    if isinstance(buckets, Mapping):  # bucket index -> contacts: count the non-empty
        buckets = sum(1 for n in buckets.values() if n)
    records = _pick(status, ("dht", "records"), ("details", "dht", "records"))
    used = _pick(status, ("storage", "used"), ("storage_used",))
    quota = _pick(
        status, ("storage", "quota"), ("storage_quota",), ("details", "storage", "max_bytes")
    )
    shares = _pick(status, ("storage", "shares"), ("details", "storage", "shares"))
    enabled = _pick(status, ("storage", "enabled"), ("details", "storage_enabled"))
    has_storage = isinstance(status.get("storage"), Mapping) or isinstance(
        _get(status, "details", "storage"), Mapping
    )
    if isinstance(used, int) and isinstance(quota, int) and quota > 0:
        pct = min(100.0, 100.0 * used / quota)
        quota_html = (
            f'{fmt_bytes(quota)} <meter min="0" max="{quota}" value="{min(used, quota)}" '
            f'aria-label="storage used">{pct:.0f} %</meter> {pct:.1f} % used'
        )
    elif has_storage and quota is None:
        quota_html = "unlimited"
    else:
        quota_html = missing()
    if isinstance(buckets, int) and not isinstance(buckets, bool):
        rt_html = _int(rt) + f" contacts in {esc(buckets)} buckets"
    else:
        rt_html = _int(rt) + (" contacts" if isinstance(rt, int) else "")
    rows = [
        ("DHT routing table", rt_html),
        ("Storage used", fmt_bytes(used) if used is not None else missing()),
        ("Storage quota", quota_html),
    ]
    if records is not None:
        rows.append(("DHT records held", _int(records)))
    if shares is not None:
        rows.append(("Shares held", _int(shares)))
    if enabled is not None:
        rows.append(("Storage service", yes_no(enabled, "on", "off")))
    mem = status.get("memory_store")
    if isinstance(mem, Mapping):
        rows.append(
            (
                "In-memory store",
                f"{_int(mem.get('files'))} files, {fmt_bytes(mem.get('bytes_used'))} of "
                f"{fmt_bytes(mem.get('max_bytes'))}",
            )
        )
    return (
        '<section aria-labelledby="h-store"><h2 id="h-store">DHT and storage</h2>'
        + kv_table(rows)
        + "</section>"
    )


def _transfer_rows(items: Sequence[Any]) -> list[list[str]]:
    rows = []
    for t in items:
        if not isinstance(t, Mapping):
            continue
        size, done = t.get("size"), t.get("done")
        if isinstance(size, int) and size > 0 and isinstance(done, int):
            prog = (
                f'<progress max="{size}" value="{min(done, size)}">'
                f"{100 * done // size} %</progress> "
                f"{fmt_bytes(done)} of {fmt_bytes(size)}"
            )
        else:
            prog = fmt_bytes(done) if done is not None else missing()
        rows.append(
            [
                _text(t.get("kind")),
                _text(t.get("name")) if t.get("name") else missing("(by cap)"),
                prog,
                esc(t.get("status") or "running"),
                fmt_duration(t.get("seconds")),
            ]
        )
    return rows


def _transfers_section(status: Mapping[str, Any]) -> str:
    head = '<section aria-labelledby="h-xfer"><h2 id="h-xfer">Uploads and downloads</h2>'
    active = status.get("transfers") if isinstance(status.get("transfers"), list) else []
    recent = (
        status.get("recent_transfers") if isinstance(status.get("recent_transfers"), list) else []
    )
    assert isinstance(active, list) and isinstance(recent, list)
    headers = ["Kind", "Name", "Bytes", "Status", "Time"]
    out = head
    out += "<h3>In progress</h3>" + (
        table(headers, _transfer_rows(active)) if active else "<p>None.</p>"
    )
    out += "<h3>Recent</h3>" + (
        table(headers, _transfer_rows(recent)) if recent else "<p>None since the node started.</p>"
    )
    return out + "</section>"


def _maintenance_section(status: Mapping[str, Any]) -> str:
    """Maintenance figures (docs/maintenance.md, "Status"; absent without storage) and
    the upload helper's (docs/helper.md, "Status")."""
    rows = [*maintenance_rows(status), *helper_rows(status)]
    if not rows:
        return ""
    return (
        '<section aria-labelledby="h-maint"><h2 id="h-maint">Maintenance</h2>'
        + kv_table([(label.capitalize(), esc(text)) for label, text in rows])
        + "</section>"
    )


def front_page(
    status: Mapping[str, Any],
    peers: Sequence[Mapping[str, Any]],
    *,
    now: float,
    ui_started: float,
) -> str:
    return (
        _node_section(status, now, ui_started)
        + _seeds_section(status)
        + _nat_section(status)
        + _peers_section(status, peers)
        + _dht_storage_section(status)
        + _maintenance_section(status)
        + _transfers_section(status)
        + '<p><a href="/">Refresh</a></p>'
    )

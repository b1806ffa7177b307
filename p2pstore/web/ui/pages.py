"""The web UI's page bodies, sans-I/O: each function takes plain data (the same
JSON-shaped values the API returns) and gives back escaped HTML.

The front page reads the backend's ``status()`` tolerantly: every field may be
missing (the memory backend reports few), and a missing one renders as "not
reported" instead of failing. The keys it understands are listed in
docs/web-ui.md ("Status keys").
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from typing import Any, Final

from p2pstore import __version__

from ..vpath import VPath
from .html import (
    DASH,
    csrf_field,
    dir_url,
    entry_url,
    esc,
    file_url,
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
# Shown inline as text rather than rendered: active content, even sandboxed.
_TEXT_INSTEAD: Final = frozenset(
    {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"}
)
_INLINE_PREFIXES: Final = ("image/", "audio/", "video/", "text/")
_INLINE_TYPES: Final = frozenset({"application/pdf", "application/json"})


def guess_type(name: str) -> str:
    kind, _ = mimetypes.guess_type(name, strict=False)
    return kind or "application/octet-stream"


def inline_type(name: str) -> str | None:
    """The Content-Type to view ``name`` in the browser, or None (download only)."""
    kind = guess_type(name)
    if kind in _TEXT_INSTEAD:
        return "text/plain; charset=utf-8"
    if kind.startswith(_INLINE_PREFIXES) or kind in _INLINE_TYPES:
        return kind + ("; charset=utf-8" if kind.startswith("text/") else "")
    return None


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
                fmt_time(p.get("last_seen")),
            ]
        )
    more = ""
    if len(ordered) > MAX_PEER_ROWS:
        more = f"<p>… and {len(ordered) - MAX_PEER_ROWS} more (see <code>/?format=json</code>).</p>"
    headers = ["Node ID", "Nickname", "Address", "State", "Round trip", "Storage", "Last seen"]
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
        + _peers_section(status, peers)
        + _dht_storage_section(status)
        + _transfers_section(status)
        + '<p><a href="/">Refresh</a></p>'
    )


# -- directory pages -----------------------------------------------------------------
def breadcrumbs(path: VPath, *, link_last: bool = False) -> str:
    crumbs = [(f"{path.drive}:/", VPath(path.drive, ()))]
    crumbs += [(name, VPath(path.drive, path.parts[: i + 1])) for i, name in enumerate(path.parts)]
    items = []
    for i, (label, p) in enumerate(crumbs):
        last = i == len(crumbs) - 1
        if last and not link_last:
            items.append(
                f'<li><a aria-current="page" href="{esc(dir_url(p))}">{esc(label)}</a></li>'
            )
        else:
            items.append(f'<li><a href="{esc(dir_url(p))}">{esc(label)}</a></li>')
    return f'<nav aria-label="Breadcrumb" class="crumbs"><ol>{"".join(items)}</ol></nav>'


def _entry_row(path: VPath, e: Mapping[str, Any], csrf: str) -> list[str]:
    name = str(e.get("name", ""))
    child = VPath(path.drive, (*path.parts, name))
    if e.get("kind") == "dir":
        link = f'<a class="dir" href="{esc(dir_url(child))}">{esc(name)}/</a>'
        kind = "directory"
        actions = ""
    else:
        link = (
            f'<a class="file" href="{esc(file_url(child, download=True))}" download>{esc(name)}</a>'
        )
        kind = esc(guess_type(name))
        view = inline_type(name)
        actions = f'<a href="{esc(file_url(child))}">view</a> ' if view else ""
    actions += f'<a href="{esc(entry_url(child))}">details</a> '
    actions += (
        f'<form method="post" action="/op/delete" class="inline">{csrf_field(csrf)}'
        f'<input type="hidden" name="path" value="{esc(child)}">'
        f'<button type="submit" aria-label="delete {esc(name)}">delete</button></form>'
    )
    size = e.get("size")
    return [
        link,
        kind,
        f'<span class="num">{fmt_bytes(size)}</span>' if size is not None else DASH,
        fmt_time(e.get("mtime")),
        actions,
    ]


def directory_page(listing: Mapping[str, Any], path: VPath, *, csrf: str) -> str:
    entries = [e for e in listing.get("entries", []) if isinstance(e, Mapping)]
    entries.sort(key=lambda e: (e.get("kind") != "dir", str(e.get("name", "")).lower()))
    out = breadcrumbs(path)
    other = "private" if path.drive == "shared" else "shared"
    out += (
        f"<p>Drive: <strong>{esc(path.drive)}</strong> · "
        f'<a href="/drive/{other}/">switch to the {other} drive</a></p>'
    )
    if path.parts:
        out += f'<p><a href="{esc(dir_url(path.parent))}" rel="up">↑ Parent directory</a></p>'
    if entries:
        out += table(
            ["Name", "Type", "Size", "Modified", "Actions"],
            [_entry_row(path, e, csrf) for e in entries],
            caption=f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'} in {path}",
        )
    else:
        out += "<p>This directory is empty.</p>"
    here = esc(str(path))
    out += (
        '<section aria-labelledby="h-up"><h2 id="h-up">Upload files</h2>'
        '<form id="upload" method="post" action="/op/upload" enctype="multipart/form-data">'
        f'{csrf_field(csrf)}<input type="hidden" name="dir" value="{here}">'
        '<p><label for="up-mode">Key</label> <select id="up-mode" name="mode">'
        '<option value="convergent" selected>convergent (same file, same cap)</option>'
        '<option value="random">random</option></select></p>'
        '<p><input type="checkbox" id="up-replace" name="replace" value="1"> '
        '<label for="up-replace">replace files of the same name</label></p>'
        '<p><label for="up-file">Files</label> '
        '<input type="file" id="up-file" name="file" multiple required></p>'
        '<p><button type="submit">Upload</button></p>'
        '<p class="progress" hidden><progress id="up-progress" max="100" value="0"></progress> '
        '<span id="up-status" role="status" aria-live="polite"></span></p>'
        "</form></section>"
        '<section aria-labelledby="h-mk"><h2 id="h-mk">New directory</h2>'
        f'<form method="post" action="/op/mkdir">{csrf_field(csrf)}'
        f'<input type="hidden" name="dir" value="{here}">'
        '<p><label for="mk-name">Name</label> <input id="mk-name" name="name" required '
        'maxlength="255" autocomplete="off"> <button type="submit">Make directory</button></p>'
        "</form></section>"
    )
    return out


def entry_page(
    path: VPath,
    entry: Mapping[str, Any],
    *,
    csrf: str,
    show_caps: bool,
    check: Mapping[str, Any] | None = None,
) -> str:
    name = str(entry.get("name") or path.name)
    is_dir = entry.get("kind") == "dir"
    out = breadcrumbs(path, link_last=True)
    rows = [
        ("Name", esc(name)),
        ("Path", f"<code>{esc(path)}</code>"),
        ("Type", "directory" if is_dir else esc(guess_type(name))),
        ("Size", fmt_bytes(entry.get("size")) if entry.get("size") is not None else DASH),
        ("Modified", fmt_time(entry.get("mtime"))),
    ]
    if is_dir:
        rows.append(("Open", f'<a href="{esc(dir_url(path))}">list this directory</a>'))
    else:
        links = f'<a href="{esc(file_url(path, download=True))}" download>download</a>'
        if inline_type(name):
            links += f' · <a href="{esc(file_url(path))}">view in the browser</a>'
        rows.append(("Get", links))
    out += kv_table(rows)
    out += '<section aria-labelledby="h-caps"><h2 id="h-caps">Caps</h2>'
    if show_caps:
        out += (
            '<p class="warn">Anyone holding the read cap can read this file, forever. '
            "Share it only on purpose.</p>"
            + kv_table(
                [
                    ("Read cap", _mono(entry.get("cap")) if entry.get("cap") else missing("none")),
                    (
                        "Verify cap",
                        _mono(entry.get("verify_cap"))
                        if entry.get("verify_cap")
                        else missing("none"),
                    ),
                ]
            )
        )
    else:
        out += (
            f'<form method="get" action="{esc(entry_url(path))}">'
            '<input type="hidden" name="caps" value="1">'
            '<button type="submit">Show the read cap and verify cap</button></form>'
        )
    out += "</section>"
    if not is_dir and entry.get("cap"):
        out += '<section aria-labelledby="h-check"><h2 id="h-check">Health</h2>'
        if check is not None:
            out += kv_table(
                [
                    ("Healthy", yes_no(check.get("healthy"))),
                    ("Recoverable", yes_no(check.get("recoverable"))),
                    (
                        "Shares",
                        f"{_int(check.get('shares_good'))} good of "
                        f"{_int(check.get('shares_total'))} "
                        f"({_int(check.get('shares_needed'))} needed)",
                    ),
                    ("Every byte verified", yes_no(check.get("verified"))),
                    (
                        "Problems",
                        "<br>".join(esc(p) for p in check.get("problems", []) or []) or "none",
                    ),
                ]
            )
        out += (
            f'<form method="get" action="{esc(entry_url(path))}">'
            '<input type="hidden" name="check" value="1">'
            '<p><input type="checkbox" id="ck-verify" name="verify" value="1"> '
            '<label for="ck-verify">read and verify every share (slower)</label> '
            '<button type="submit">Check</button></p></form></section>'
        )
    if not path.is_root:
        out += (
            '<section aria-labelledby="h-mv"><h2 id="h-mv">Rename or move</h2>'
            f'<form method="post" action="/op/rename">{csrf_field(csrf)}'
            f'<input type="hidden" name="path" value="{esc(path)}">'
            '<p><label for="mv-dst">New name, or a path on the same drive</label> '
            f'<input id="mv-dst" name="dst" value="{esc(name)}" required maxlength="4096" '
            'autocomplete="off"></p>'
            '<p><input type="checkbox" id="mv-replace" name="replace" value="1"> '
            '<label for="mv-replace">replace a file of that name</label></p>'
            '<p><button type="submit">Rename</button></p></form></section>'
            + '<section aria-labelledby="h-rm"><h2 id="h-rm">Delete</h2>'
            + delete_form(path, is_dir=is_dir, csrf=csrf)
            + "</section>"
        )
    return out


def delete_form(path: VPath, *, is_dir: bool, csrf: str) -> str:
    recursive = (
        '<p><input type="checkbox" id="rm-rec" name="recursive" value="1"> '
        '<label for="rm-rec">also everything inside it</label></p>'
        if is_dir
        else ""
    )
    return (
        f'<form method="post" action="/op/delete">{csrf_field(csrf)}'
        f'<input type="hidden" name="path" value="{esc(path)}">'
        '<input type="hidden" name="confirm" value="yes">'
        f"<p>Remove <code>{esc(path)}</code> from the drive? The file itself stays in the "
        "grid for anyone holding its cap.</p>"
        f'{recursive}<p><button type="submit" class="danger">Yes, delete it</button></p></form>'
    )


def confirm_delete_page(path: VPath, *, is_dir: bool, csrf: str) -> str:
    return (
        breadcrumbs(path, link_last=True)
        + delete_form(path, is_dir=is_dir, csrf=csrf)
        + f'<p><a href="{esc(dir_url(path.parent))}">No, go back</a></p>'
    )


# -- login and errors ----------------------------------------------------------------
def login_page(next_path: str, *, failed: bool = False) -> str:
    why = (
        '<p class="flash bad" role="alert">That token is not this node\'s API token.</p>'
        if failed
        else ""
    )
    return (
        why + "<p>To open this node's web UI, run <code>p2pstore web-url</code> (add "
        "<code>--node DIR</code> for a node elsewhere) and open the one-time link it "
        "prints, or paste the node's API token (the file <code>private/api.token</code> in "
        "the node directory) below.</p>"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<p><label for="login-token">API token</label> '
        '<input id="login-token" name="token" type="password" required autocomplete="off" '
        'maxlength="200"></p><p><button type="submit">Log in</button></p></form>'
    )


def error_page(message: str, code: str, *, uploaded_cap: str | None = None) -> str:
    out = f'<p class="flash bad" role="alert">{esc(message)}</p><p class="muted">({esc(code)})</p>'
    if uploaded_cap:
        out += (
            "<p>The file was uploaded but not linked into the drive. Its read cap (keep it, "
            "or link it again from the command line): "
            f'<code class="id">{esc(uploaded_cap)}</code></p>'
        )
    return out + '<p>Use your browser\'s Back button, or go to the <a href="/">front page</a>.</p>'

"""The web UI's pages of mutable files (docs/web-ui.md, "Mutable files"), sans-I/O:
the index (open a cap, make a new file, the files this session opened), a mutable
file's page (what the cap is, the latest version, where the root is held, the
share panel, download, check, and with a write cap the form that publishes the
next version) and the conflict page.

Invariants: every value is escaped; caps appear only in page bodies (the share
panel), never in a URL (links use the session's handle); the write cap is shown
only on a page opened with the write cap, behind a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from .html import (
    DASH,
    csrf_field,
    esc,
    fmt_bytes,
    fmt_time,
    kv_table,
    missing,
    mutable_url,
    table,
    yes_no,
)

KIND_NAMES: Final = {"mut": "write cap", "mut-ro": "read cap", "mut-verify": "verify cap"}
KIND_POWERS: Final = {
    "mut": "read every version and publish new ones",
    "mut-ro": "read every version (not change it)",
    "mut-verify": "check and repair it (not read or change it)",
}


def _code(value: object) -> str:
    return f'<code class="id">{esc(value)}</code>'


def _what(doc: Mapping[str, Any]) -> str:
    return "live directory" if doc.get("directory") else "mutable file"


def index_page(opened: Iterable[tuple[str, str, str]], *, csrf: str) -> str:
    """``opened``: (handle, kind, label) of the caps this session opened."""
    rows = [
        [
            f'<a href="{esc(mutable_url(h))}">{esc(label) if label else "(no name)"}</a>',
            esc(KIND_NAMES.get(kind, kind)),
        ]
        for h, kind, label in opened
    ]
    out = (
        "<p>A mutable file keeps one name (its caps) for a series of versions: whoever "
        "holds its <strong>write cap</strong> publishes new versions, whoever holds its "
        "<strong>read cap</strong> reads the latest, a <strong>verify cap</strong> can only "
        "check it. Mutable files are not in the drives: keep their caps.</p>"
        '<section aria-labelledby="h-open"><h2 id="h-open">Open a mutable file</h2>'
        f'<form method="post" action="/op/mutable-open">{csrf_field(csrf)}'
        '<p><label for="mo-cap">Cap (write, read or verify)</label> '
        '<input id="mo-cap" name="cap" required size="60" maxlength="1000" autocomplete="off" '
        'spellcheck="false"> <button type="submit">Open</button></p></form></section>'
        '<section aria-labelledby="h-new"><h2 id="h-new">New mutable file</h2>'
        + upload_form(csrf, handle=None, expected=None)
        + "</section>"
        '<section aria-labelledby="h-live"><h2 id="h-live">New live directory</h2>'
        "<p>A directory that changes in place: whoever holds its write cap changes it, "
        "whoever holds its read cap sees every change.</p>"
        f'<form method="post" action="/op/live-new">{csrf_field(csrf)}'
        '<p><button type="submit">Make a live directory</button></p></form></section>'
        '<section aria-labelledby="h-opened"><h2 id="h-opened">Opened in this session</h2>'
    )
    if rows:
        out += table(["File", "Opened with"], rows)
    else:
        out += "<p>None yet. Caps are kept only while you are logged in.</p>"
    return out + "</section>"


def upload_form(csrf: str, *, handle: str | None, expected: int | None) -> str:
    """The form that makes a new mutable file (no handle) or publishes the next
    version of the file behind ``handle``, expecting version ``expected``."""
    if handle is None:
        hidden = '<input type="hidden" name="mutable" value="1">'
        label, button = "File (its first version)", "Make a mutable file"
    else:
        hidden = (
            f'<input type="hidden" name="handle" value="{esc(handle)}">'
            f'<input type="hidden" name="expected_sequence" value="{esc(expected)}">'
        )
        label, button = "File (the next version)", "Publish a new version"
    return (
        '<form id="upload" method="post" action="/op/upload" enctype="multipart/form-data">'
        f"{csrf_field(csrf)}{hidden}"
        f'<p><label for="up-file">{esc(label)}</label> '
        '<input type="file" id="up-file" name="file" required></p>'
        f'<p><button type="submit">{esc(button)}</button></p>'
        '<p class="progress" hidden><progress id="up-progress" max="100" value="0"></progress> '
        '<span id="up-status" role="status" aria-live="polite"></span></p></form>'
    )


def _storage_rows(storage: Mapping[str, Any]) -> list[tuple[str, str]]:
    held, asked = storage.get("holding_latest"), storage.get("peers_asked")
    rows = [
        ("Root held by", f"{esc(held)} of {esc(asked)} peers asked"),
        ("Storage index", _code(storage.get("storage_index")) if storage else missing()),
    ]
    for key, label in (
        ("stale", "Stale or missing"),
        ("bad", "Bad root"),
        ("unreachable", "Unreachable"),
    ):
        value = storage.get(key)
        if isinstance(value, Mapping):
            shown = "<br>".join(f"{esc(k)}: {esc(v)}" for k, v in sorted(value.items()))
        elif isinstance(value, list):
            shown = "<br>".join(esc(v) for v in value)
        else:
            shown = ""
        rows.append((label, shown or "none"))
    return rows


def share_panel(kind: str, caps: Mapping[str, str | None]) -> str:
    """The caps this page may show: read and verify; the write cap only to a page
    opened with it, behind a warning."""
    rows = []
    if caps.get("read"):
        rows.append(("Read cap", _code(caps["read"])))
    rows.append(("Verify cap", _code(caps.get("verify")) if caps.get("verify") else missing()))
    out = (
        '<section aria-labelledby="h-share"><h2 id="h-share">Share</h2>'
        "<p>Give the <strong>read cap</strong> to let someone read every version (they see "
        "your later changes); the <strong>verify cap</strong> lets someone check and repair "
        "the file without reading it.</p>" + kv_table(rows)
    )
    if kind == "mut" and caps.get("write"):
        out += (
            '<details id="write-cap"><summary>Show the write cap</summary>'
            '<p class="warn" role="note">The write cap grants changes: whoever holds it can '
            "publish new versions of this file, forever. Keep it secret; share it only with "
            "someone who should change the file.</p>"
            + kv_table([("Write cap", _code(caps["write"]))])
            + "</details>"
        )
    return out + "</section>"


def _health(handle: str, check: Mapping[str, Any] | None) -> str:
    out = '<section aria-labelledby="h-check"><h2 id="h-check">Health</h2>'
    if check is not None:
        problems = "<br>".join(esc(p) for p in check.get("problems", []) or []) or "none"
        out += kv_table(
            [
                ("Healthy", yes_no(check.get("healthy"))),
                (
                    "Shares of the latest version",
                    f"{esc(check.get('shares_good'))} good of {esc(check.get('shares_total'))}",
                ),
                ("Problems", problems),
            ]
        )
    return out + (
        f'<form method="get" action="{esc(mutable_url(handle))}">'
        '<input type="hidden" name="check" value="1">'
        '<p><input type="checkbox" id="ck-verify" name="verify" value="1"> '
        '<label for="ck-verify">read and verify every share (slower)</label> '
        '<button type="submit">Check</button></p></form></section>'
    )


def mutable_page(
    handle: str,
    doc: Mapping[str, Any],
    *,
    label: str,
    caps: Mapping[str, str | None],
    csrf: str,
    check: Mapping[str, Any] | None = None,
) -> str:
    """A mutable file's page; ``doc`` is the info doc (``GET /api/v1/info/<cap>``)."""
    kind = str(doc.get("kind", ""))
    readable = kind in ("mut", "mut-ro")
    size = doc.get("size")
    rows = [
        (
            "What",
            f"{esc(_what(doc))}, opened with its "
            f"<strong>{esc(KIND_NAMES.get(kind, kind))}</strong>",
        ),
        ("This cap can", esc(KIND_POWERS.get(kind, "?"))),
        ("Name", esc(label) if label else missing("none (a cap holds no name)")),
        ("Latest version", f'<span id="mut-seq">{esc(doc.get("sequence"))}</span>'),
        ("Size", fmt_bytes(size) if size is not None else missing("known to readers only")),
        (
            "Published",
            fmt_time(doc.get("published_at")) if readable else missing("known to readers only"),
        ),
    ]
    if readable:
        rows.append(
            (
                "Get",
                f'<a id="mut-download" href="{esc(mutable_url(handle, "download"))}" download>'
                "download the latest version</a>",
            )
        )
    if readable and doc.get("directory"):
        browse = f'<a id="live-browse" href="{esc(mutable_url(handle, "dir/"))}">its files</a>'
        rows.append(("Browse", browse))
    out = kv_table(rows)
    storage = doc.get("storage")
    out += (
        '<section aria-labelledby="h-root"><h2 id="h-root">Where the root is held</h2>'
        "<p>The root names the latest version; it is kept, signed, by the storage peers "
        "nearest its storage index.</p>"
        + kv_table(_storage_rows(storage if isinstance(storage, Mapping) else {}))
        + "</section>"
    )
    out += share_panel(kind, caps)
    if kind == "mut":
        out += (
            '<section aria-labelledby="h-pub"><h2 id="h-pub">Publish a new version</h2>'
            f"<p>Replaces version {esc(doc.get('sequence'))} for every reader. If someone "
            "else publishes first, this is refused as a conflict (nothing is overwritten): "
            "look at the latest and try again.</p>"
            + upload_form(csrf, handle=handle, expected=doc.get("sequence"))
            + "</section>"
        )
    return out + _health(handle, check)


def conflict_page(handle: str, message: str, latest: object) -> str:
    return (
        f'<p class="flash bad" role="alert">{esc(message)}</p>'
        '<p class="muted">(mutable-conflict)</p>'
        f"<p>Someone else published version {esc(latest)} while you were choosing; your "
        "file was not published as the latest. "
        f'<a href="{esc(mutable_url(handle))}">Look at the latest version</a>, then publish '
        "again if you still want to.</p>"
    )


def kind_of(cap: str) -> str:
    """``mut``, ``mut-ro`` or ``mut-verify`` from a cap's text (for the index)."""
    body = cap.removeprefix("p2ps:").removeprefix("dir:")
    for kind in ("mut-verify", "mut-ro", "mut"):
        if body.startswith(kind + ":"):
            return kind
    return DASH

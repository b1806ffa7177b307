"""The web UI's drive, details, confirmation, login and error page bodies,
sans-I/O: each function takes plain data (the same JSON-shaped values the API
returns) and gives back escaped HTML. The front page is :mod:`.front`; content
types for downloads are decided here (:func:`inline_type`).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any, Final

from p2pstore.app.vpath import VPath

from .html import (
    DASH,
    csrf_field,
    dir_url,
    entry_url,
    esc,
    file_url,
    fmt_bytes,
    fmt_time,
    kv_table,
    missing,
    table,
    yes_no,
)

# Shown inline as text rather than rendered: active content, even sandboxed.
_TEXT_INSTEAD: Final = frozenset(
    {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"}
)
_INLINE_PREFIXES: Final = ("image/", "audio/", "video/", "text/")
_INLINE_TYPES: Final = frozenset({"application/json"})  # PDF viewers refuse sandboxed documents


def guess_type(name: str) -> str:
    kind, _ = mimetypes.guess_type(name, strict=False)
    return kind or "application/octet-stream"


# Images, audio and video viewed in the browser: its own media viewer loads the
# file again (with Range, to play and seek) as a same-origin request that must
# carry the session cookie, so the document keeps our origin (no ``sandbox``,
# which would make it opaque); ``default-src 'none'`` still forbids any script.
MEDIA_VIEW_CSP: Final = (
    "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'"
)


def view_csp(content_type: str) -> str:
    """The CSP for viewing a file of ``content_type`` inline."""
    if content_type.startswith(("image/", "audio/", "video/")) and "svg" not in content_type:
        return MEDIA_VIEW_CSP
    return "sandbox; default-src 'none'"


def inline_type(name: str) -> str | None:
    """The Content-Type to view ``name`` in the browser, or None (download only)."""
    kind = guess_type(name)
    if kind in _TEXT_INSTEAD:
        return "text/plain; charset=utf-8"
    if kind.startswith(_INLINE_PREFIXES) or kind in _INLINE_TYPES:
        return kind + ("; charset=utf-8" if kind.startswith("text/") else "")
    return None


def _mono(value: Any) -> str:
    return missing() if not value else f'<code class="id">{esc(value)}</code>'


def _int(value: Any) -> str:
    return esc(value) if isinstance(value, int) and not isinstance(value, bool) else missing()


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
    out += change_forms(str(path), csrf) + (
        '<section aria-labelledby="h-ln"><h2 id="h-ln">Add a file by its cap</h2>'
        f'<form method="post" action="/op/link">{csrf_field(csrf)}'
        f'<input type="hidden" name="dir" value="{here}">'
        '<p><label for="ln-cap">Read cap</label> <input id="ln-cap" name="cap" required '
        'size="60" maxlength="1000" autocomplete="off" spellcheck="false"></p>'
        '<p><label for="ln-name">Name</label> <input id="ln-name" name="name" required '
        'maxlength="255" autocomplete="off"> <button type="submit">Add</button></p>'
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
    pinned: bool | None = None,
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
    out += _caps_section(path, entry, show_caps)
    if not is_dir and entry.get("cap"):
        out += _health_section(path, check)
        if pinned is not None:
            out += _pin_section(path, pinned, csrf)
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


def _caps_section(path: VPath, entry: Mapping[str, Any], show_caps: bool) -> str:
    out = '<section aria-labelledby="h-caps"><h2 id="h-caps">Caps</h2>'
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
    return out


def _health_section(path: VPath, check: Mapping[str, Any] | None) -> str:
    out = '<section aria-labelledby="h-check"><h2 id="h-check">Health</h2>'
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
    return out


def _pin_section(path: VPath, pinned: bool, csrf: str) -> str:
    """Pin or unpin (docs/maintenance.md, "Pins"): this node keeps the file alive."""
    state = (
        "This node keeps this file alive (pinned): it renews the file's lease wherever "
        "its shares are, even if the uploader is gone."
        if pinned
        else "Not pinned here. Pin it to keep it alive from this node, whoever uploaded it."
    )
    action, label = ("unpin", "Unpin") if pinned else ("pin", "Pin (keep alive)")
    return (
        '<section aria-labelledby="h-pin"><h2 id="h-pin">Keep alive</h2>'
        f"<p>{esc(state)}</p>"
        f'<form method="post" action="/op/{action}">{csrf_field(csrf)}'
        f'<input type="hidden" name="path" value="{esc(path)}">'
        f'<p><button type="submit">{esc(label)}</button></p></form></section>'
    )


def change_forms(here: str, csrf: str, *, drive_options: bool = True) -> str:
    """A directory page's upload and new-directory forms, posting ``dir=here`` (a drive
    path, or a live directory's ``CAP/path``). ``drive_options``: the upload's key
    choice and its "mutable" option (a drive's page has them, a live directory's not)."""

    def where() -> str:  # a fresh field each: every form carries its own op id
        return f'{csrf_field(csrf)}<input type="hidden" name="dir" value="{esc(here)}">'

    key = (
        '<p><label for="up-mode">Key</label> <select id="up-mode" name="mode">'
        '<option value="convergent" selected>convergent (same file, same cap)</option>'
        '<option value="random">random</option></select></p>'
    )
    mutable = (
        '<p><input type="checkbox" id="up-mutable" name="mutable" value="1"> '
        '<label for="up-mutable">mutable: make each file a mutable file (not added to this '
        "directory; its page shows the caps to keep, and publishes new versions)</label></p>"
    )
    return (
        '<section aria-labelledby="h-up"><h2 id="h-up">Upload files</h2>'
        '<form id="upload" method="post" action="/op/upload" enctype="multipart/form-data">'
        f"{where()}{key if drive_options else ''}"
        '<p><input type="checkbox" id="up-replace" name="replace" value="1"> '
        '<label for="up-replace">replace files of the same name</label></p>'
        f"{mutable if drive_options else ''}"
        '<p><label for="up-file">Files</label> '
        '<input type="file" id="up-file" name="file" multiple required></p>'
        '<p><button type="submit">Upload</button></p>'
        '<p class="progress" hidden><progress id="up-progress" max="100" value="0"></progress> '
        '<span id="up-status" role="status" aria-live="polite"></span></p>'
        "</form></section>"
        '<section aria-labelledby="h-mk"><h2 id="h-mk">New directory</h2>'
        f'<form method="post" action="/op/mkdir">{where()}'
        '<p><label for="mk-name">Name</label> <input id="mk-name" name="name" required '
        'maxlength="255" autocomplete="off"> <button type="submit">Make directory</button></p>'
        "</form></section>"
    )


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

"""HTML building blocks for the web UI, sans-I/O: escaping, the page frame, URL
helpers for vdrive paths, and the small value formatters pages share.

Invariants:
- every piece of text that did not come from this module goes through
  :func:`esc` (names, messages, status values): nothing from the grid, the user
  or the backend is ever inserted raw;
- pages reference only this node's own ``/static/`` files (no external
  resources, no inline script or style: the CSP is ``default-src 'self'``);
- caps never appear in a URL this module builds: vdrive links name paths only,
  a mutable file's links its session handle (:func:`mutable_url`).
"""

from __future__ import annotations

import html
import math
import secrets
import time
import urllib.parse
from collections.abc import Iterable
from typing import Final

from p2pstore import __version__
from p2pstore.app.vpath import VPath
from p2pstore.base.progress import human_bytes

PAGE_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
DASH: Final = "—"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def missing(what: str = "not reported") -> str:
    return f'<span class="muted">{esc(what)}</span>'


# -- URLs --------------------------------------------------------------------------
def _quoted(parts: Iterable[str]) -> str:
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)


def dir_url(path: VPath) -> str:
    """The directory page (trailing slash)."""
    tail = _quoted(path.parts)
    return f"/drive/{path.drive}/" + (tail + "/" if tail else "")


def file_url(path: VPath, *, download: bool = False) -> str:
    """A file's bytes: viewed inline, or ``download`` as an attachment."""
    url = f"/drive/{path.drive}/" + _quoted(path.parts)
    return url + "?download=1" if download else url


def entry_url(path: VPath, query: str = "") -> str:
    """The details page of an entry (caps on request, rename, delete)."""
    url = f"/entry/{path.drive}/" + _quoted(path.parts)
    return f"{url}?{query}" if query else url


def mutable_url(handle: str, tail: str = "") -> str:
    """A mutable file's page (``tail``: ``download``), by the session's handle of its
    cap: never the cap itself."""
    return f"/mutable/{urllib.parse.quote(handle, safe='')}" + (f"/{tail}" if tail else "")


def login_url(next_path: str | None = None) -> str:
    return "/login" + ("?" + urllib.parse.urlencode({"next": next_path}) if next_path else "")


def safe_next(value: str | None) -> str:
    """A post-login destination: a local absolute path only (no scheme, no //host)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x20 for c in value) or len(value) > 2048:
        return "/"
    return value


# -- formatting --------------------------------------------------------------------
def fmt_bytes(n: object) -> str:
    if isinstance(n, bool) or not isinstance(n, int | float) or n < 0 or not math.isfinite(n):
        return missing()
    return human_bytes(n) if n >= 1024 else f"{int(n)} B"


def fmt_time(t: object) -> str:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        return DASH
    if t < 1e9:  # not a unix time (e.g. a monotonic clock reading)
        return DASH
    try:
        text = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return DASH
    return (
        f'<time datetime="{esc(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)))}">{text}</time>'
    )


def fmt_duration(seconds: object) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return missing()
    if not math.isfinite(seconds) or seconds < 0:
        return missing()
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {s} s"
    return f"{s} s"


def fmt_ms(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return DASH
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def yes_no(value: object, yes: str = "yes", no: str = "no") -> str:
    if value is True:
        return f'<span class="ok">{esc(yes)}</span>'
    if value is False:
        return f'<span class="bad">{esc(no)}</span>'
    return missing("unknown")


# -- the frame ---------------------------------------------------------------------
def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, caption: str = "") -> str:
    """A table; ``rows`` hold already-escaped HTML cells."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(rows: Iterable[tuple[str, str]], *, caption: str = "") -> str:
    """A two-column fact table; values are already-escaped HTML."""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    body = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<table class="facts">{cap}<tbody>{body}</tbody></table>'


def csrf_field(csrf: str) -> str:
    """The form's CSRF token, and a fresh ``op_id`` for the change it makes: the
    same form sent twice (a reload after a lost answer) makes the change once."""
    return (
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'<input type="hidden" name="op_id" value="{secrets.token_hex(16)}">'
    )


def page(
    title: str,
    body: str,
    *,
    csrf: str | None = None,
    nickname: str | None = None,
    flash: Iterable[str] = (),
    current: str = "",
    refresh: str | None = None,
) -> str:
    """A whole document. ``csrf`` set: the visitor is logged in (nav + logout)."""
    site = f"p2pstore · {nickname}" if nickname else "p2pstore"
    nav = ""
    if csrf is not None:
        links = [("/", "Status", "status"), ("/drive/shared/", "Shared drive", "shared")]
        links.append(("/drive/private/", "Private drive", "private"))
        links.append(("/mutable/", "Mutable files", "mutable"))
        here = ' aria-current="page"'
        items = "".join(
            f'<li><a href="{u}"{here if key == current else ""}>{esc(t)}</a></li>'
            for u, t, key in links
        )
        nav = (
            f'<nav aria-label="Main"><ul>{items}</ul>'
            f'<form method="post" action="/logout" class="inline">{csrf_field(csrf)}'
            '<button type="submit">Log out</button></form></nav>'
        )
    notes = "".join(f'<p class="flash" role="status">{esc(m)}</p>' for m in flash)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)} — {esc(site)}</title>"
        + (f'<meta http-equiv="refresh" content="0; url={esc(refresh)}">' if refresh else "")
        + '<link rel="stylesheet" href="/static/ui.css">'
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<script src="/static/ui.js" defer></script>'
        '</head><body><a class="skip" href="#main">Skip to content</a>'
        f'<header><p class="site"><a href="/">{esc(site)}</a></p>{nav}</header>'
        f'<main id="main"><h1>{esc(title)}</h1>{notes}{body}</main>'
        f"<footer><p>p2pstore {esc(__version__)} · local web UI · "
        "JSON: add <code>?format=json</code></p></footer></body></html>\n"
    )

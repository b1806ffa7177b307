"""Text the shell shows, sans-I/O: listings, reports, help, the prompt, the
progress line, pages, error lines. Every function takes data (the API's JSON
shapes, docs/http-api.md) and returns strings; nothing here writes anywhere.

Invariants: no line ever contains a traceback; a line never contains a cap unless
the command's purpose is to show it (``info``, ``bootstrap`` show what the user
asked for); control characters in names from the node are shown escaped, so a
hostile file name cannot move the cursor or change the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from p2pstore.api_client import ApiCallError, ClientError, NodeUnreachable
from p2pstore.app.vpath import VPath
from p2pstore.base.progress import format_progress, human_bytes
from p2pstore.base.reports import helper_rows, maintenance_rows, nat_rows, safe

from .errors import ShellError, UsageError
from .parse import ALIASES, COMMAND_LIST, CommandSpec
from .paths import hide_live_caps, show_remote


def prompt_text(node: str, path: VPath) -> str:
    """E.g. ``p2ps alice shared:/docs> ``."""
    return f"p2ps {safe(node)} {show_remote(path)}> "


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _name(entry: Mapping[str, Any]) -> str:
    return safe(str(entry.get("name", "?"))) + ("/" if entry.get("kind") == "dir" else "")


#: what ``ls`` shows for a directory with nothing in it (ls(1) shows nothing, which
#: reads like a hang or an error to someone new)
EMPTY_DIR = "(empty directory)"


def sort_entries(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Directories first, then files, each by name."""
    return sorted(entries, key=lambda e: (e.get("kind") != "dir", str(e.get("name", ""))))


def ls_short(entries: Sequence[Mapping[str, Any]], width: int = 80) -> list[str]:
    """Names in columns (down, then across), like ls(1)."""
    names = [_name(e) for e in sort_entries(entries)]
    if not names:
        return []
    col = max(len(n) for n in names) + 2
    ncols = max(1, min(len(names), (max(width, 1) + 2) // col))
    nrows = -(-len(names) // ncols)
    lines = []
    for r in range(nrows):
        row = [names[c * nrows + r] for c in range(ncols) if c * nrows + r < len(names)]
        lines.append("".join(n.ljust(col) for n in row[:-1]) + row[-1])
    return lines


def ls_long(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """``kind  size  time  name`` per entry, then a total line."""
    lines = []
    total = 0
    for e in sort_entries(entries):
        size = e.get("size")
        total += size if isinstance(size, int) else 0
        shown = "-" if size is None else human_bytes(size)
        lines.append(f"{e.get('kind', '?'):<4} {shown:>10}  {when(e.get('mtime'))}  {_name(e)}")
    noun = "entry" if len(entries) == 1 else "entries"
    lines.append(f"{len(entries)} {noun}, {human_bytes(total)} in files")
    return lines


_STATUS_KEYS = (
    ("nickname", "nickname"),
    ("node_id", "node ID"),
    ("version", "version"),
    ("backend", "backend"),
    ("listen_host", "listen host"),
    ("listen_port", "listen port"),
    ("peers_known", "peers known"),
    ("peers_connected", "connected"),
    ("storage_used", "storage used"),
    ("encoding_source", "encoding"),
)


def status_lines(doc: Mapping[str, Any], api_url: str) -> list[str]:
    lines = [f"{'API:':<15}{api_url}"]
    for key, label in _STATUS_KEYS:
        if key in doc:
            value = doc[key]
            shown = (
                human_bytes(value) if key == "storage_used" and isinstance(value, int) else value
            )
            lines.append(f"{label + ':':<15}{safe(str(shown))}")
    seeds = doc.get("seeds")
    if isinstance(seeds, list) and seeds:
        up = sum(1 for s in seeds if isinstance(s, Mapping) and s.get("reachable") is True)
        lines.append(f"{'seeds:':<15}{up} of {len(seeds)} reachable")
    lines.append(f"{'vdrive:':<15}{'available' if doc.get('vdrive') else 'not available'}")
    nat = doc.get("nat")
    for label, text in nat_rows(nat) if isinstance(nat, Mapping) else []:
        lines.append(f"{label + ':':<15}{text}")
    for label, text in [*maintenance_rows(doc), *helper_rows(doc)]:
        lines.append(f"{label + ':':<15}{text}")
    for t in doc.get("transfers") or []:
        size = t.get("size")
        of = f" of {human_bytes(size)}" if isinstance(size, int) else ""
        lines.append(f"{'transfer:':<15}{t.get('kind')} {human_bytes(t.get('done', 0))}{of}")
    return lines


def bootstrap_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = []
    own = doc.get("self")
    if own:
        lines.append("# this node (an introducer): give these lines to people who join")
        lines.extend(str(own).splitlines())
    text = doc.get("bootstrap")
    seeds = [
        ln for ln in str(text or "").splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if seeds:
        lines.append("# this node's bootstrap list (others can join with it too)")
        lines.extend(seeds)
    if not lines:
        lines.append("this node has no bootstrap list (and is not an introducer)")
    return [safe(line) for line in lines]


def help_lines(spec: CommandSpec | None = None) -> list[str]:
    if spec is not None:
        lines = [f"usage: {spec.usage}", f"  {spec.summary}"]
        if spec.aliases:
            lines.append(f"  also: {', '.join(spec.aliases)}")
        for o in spec.options:
            lines.append(f"  {', '.join(o.names):<18}{o.help}")
        if spec.details:
            lines.append(f"  {spec.details}")
        return lines
    width = max(len(c.name) for c in COMMAND_LIST) + 2
    lines = [f"  {c.name:<{width}}{c.summary}" for c in COMMAND_LIST]
    aliases = ", ".join(f"{a} = {c}" for a, c in sorted(ALIASES.items()))
    return [
        "commands (help CMD for details):",
        *lines,
        f"aliases: {aliases}",
        "paths: relative, /abs (current drive), shared:/..., private:/...; caps p2ps:...",
        "keys: Tab completes, Up/Down history, Right accepts a suggestion, "
        "Ctrl-C cancels, Ctrl-D exits",
    ]


def progress_line(label: str, done: int, total: int | None, elapsed: float, width: int) -> str:
    """``label [#####.....] 1.0 MiB / 2.0 MiB  50%  1.0 MiB/s  ETA 1s``, cut to ``width``."""
    facts = format_progress(done, total, elapsed)
    if total:
        cells = 20
        filled = min(cells, done * cells // total)
        bar = "[" + "#" * filled + "." * (cells - filled) + "] "
    else:
        bar = ""
    line = f"{label} {bar}{facts}"
    return line[: max(width - 1, 10)]


def paginate(lines: Sequence[str], height: int) -> list[list[str]]:
    """Pages of at most ``height - 1`` lines (one row is left for the prompt)."""
    per = max(1, height - 1)
    return [list(lines[i : i + per]) for i in range(0, len(lines), per)]


def error_line(e: BaseException) -> str:
    """The one line shown for a failed command."""
    if isinstance(e, NodeUnreachable):
        return f"node unreachable: {e} (the next command tries again)"
    if isinstance(e, ApiCallError):
        return f"error: {safe(hide_live_caps(e.message))} ({e.code})"
    if isinstance(e, UsageError | ShellError | ClientError):
        return f"error: {safe(hide_live_caps(str(e)))}"
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"error: {e.strerror or e}{where}"
    return f"internal error: {type(e).__name__}: {safe(str(e))} (run with --debug for details)"

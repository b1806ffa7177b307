"""Tab completion, sans-I/O: from the text before the cursor to candidates.

What is completed depends on the word's place (:func:`shell.parse.arg_for`): the
first word is a command name; an option word (``-...``) an option of that command;
an option's value one of its choices; a positional word by its
:class:`~shell.parse.ArgKind`: remote paths (from ``list_remote``, which the shell
backs with a short-lived cache), local paths (``list_local``), drive names or
command names. Caps are never completed.

A candidate replaces the whole current word (from its first character, opening
quote included) with a correctly quoted word: a word begun with a quote keeps that
quote (closed after a file name, left open after a directory so typing goes on
inside it); otherwise :func:`shell.parse.quote_word` is used. Names beginning with
``.`` are offered only when the typed prefix begins with ``.``. Listing failures
give no candidates, never an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pstore.app.vpath import DRIVES, VPath

from .parse import ArgKind, Token, arg_for, command_names, lookup, quote_word, tokenize
from .paths import drive_prefix, is_cap, resolve_local, resolve_remote

ListRemote = Callable[[VPath], Iterable[Mapping[str, Any]]]
ListLocal = Callable[[Path], Iterable[tuple[str, bool]]]  # (name, is_dir)


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str  # replaces the current word
    start: int  # where the word starts, relative to the cursor (<= 0)
    display: str


def list_local_dir(path: Path) -> list[tuple[str, bool]]:
    out = []
    with os.scandir(path) as it:
        for e in it:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            out.append((e.name, is_dir))
    return out


def _requote(token_text: str, value: str, is_dir: bool) -> str:
    q = token_text[:1]
    if q == "'":
        return "'" + value.replace("'", "'\\''") + ("" if is_dir else "'")
    if q == '"':
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + ("" if is_dir else '"')
    return quote_word(value)


def complete(
    line: str,
    *,
    cwd: VPath,
    local_cwd: Path,
    list_remote: ListRemote,
    list_local: ListLocal = list_local_dir,
) -> list[Candidate]:
    """Candidates for the word being typed at the end of ``line``."""
    tokens = tokenize(line)
    if not tokens or (line[-1:].isspace() and tokens[-1].complete):
        current = Token("", len(line), len(line))
        before = tokens
    else:
        current, before = tokens[-1], tokens[:-1]
    start = current.start - len(line)
    raw = line[current.start :]

    def simple(words: Iterable[str], end: str = " ") -> list[Candidate]:
        """Whole words; a space after each (the next word follows, as in bash)."""
        return [Candidate(w + end, start, w) for w in words if w.startswith(current.value)]

    if not before:
        return simple(command_names())
    spec = lookup(before[0].value)
    if spec is None:
        return []
    # Walk the words typed so far: options, option values, positional words.
    positional = 0
    pending_value = None
    for tok in before[1:]:
        if pending_value is not None:
            pending_value = None
            continue
        opt = spec.option(tok.value.partition("=")[0]) if tok.value.startswith("-") else None
        if opt is not None:
            if opt.takes_value and "=" not in tok.value:
                pending_value = opt
            continue
        if not tok.value.startswith("-") or tok.value == "-":
            positional += 1
    if pending_value is not None:
        return simple(pending_value.choices)
    if current.value.startswith("-") and current.value != "-":
        return simple(n for o in spec.options for n in o.names)
    arg = arg_for(spec, positional)
    if arg is None:
        return []
    kind = arg.kind
    if kind is ArgKind.COMMAND:
        return simple(command_names())
    if kind is ArgKind.DRIVE:
        return simple(DRIVES)
    if kind in (ArgKind.LOCAL, ArgKind.LOCAL_DIR):
        return _local(current.value, raw, start, local_cwd, list_local, kind is ArgKind.LOCAL_DIR)
    if kind is ArgKind.CAP or is_cap(current.value):
        return []
    dirs_only = kind is ArgKind.REMOTE_DIR
    return _remote(current.value, raw, start, cwd, list_remote, dirs_only)


def _split(value: str) -> tuple[str, str]:
    """(directory part including its trailing '/' or 'drive:', name prefix)."""
    cut = value.rfind("/")
    if cut >= 0:
        return value[: cut + 1], value[cut + 1 :]
    named = drive_prefix(value)
    if named is not None:
        head = value[: len(value) - len(named[1])]
        return head, named[1]
    return "", value


def _matches(
    names: Iterable[tuple[str, bool]], prefix: str, dirs_only: bool
) -> list[tuple[str, bool]]:
    show_hidden = prefix.startswith(".")
    out = [
        (n, d)
        for n, d in names
        if n.startswith(prefix) and (show_hidden or not n.startswith(".")) and (d or not dirs_only)
    ]
    return sorted(out)


def _remote(
    value: str, raw: str, start: int, cwd: VPath, list_remote: ListRemote, dirs_only: bool
) -> list[Candidate]:
    head, prefix = _split(value)
    out: list[Candidate] = []
    if not head:
        for d in DRIVES:
            if (d + ":/").startswith(value) and value:
                out.append(Candidate(d + ":/", start, d + ":/"))
    try:
        where = resolve_remote(head or ".", cwd)
        entries = list(list_remote(where))
    except Exception:  # a listing problem only means no candidates
        return out
    names = [(str(e.get("name", "")), e.get("kind") == "dir") for e in entries]
    for name, is_dir in _matches(names, prefix, dirs_only):
        word = head + name + ("/" if is_dir else "")
        out.append(Candidate(_requote(raw, word, is_dir), start, name + ("/" if is_dir else "")))
    return out


def _local(
    value: str, raw: str, start: int, cwd: Path, list_local: ListLocal, dirs_only: bool
) -> list[Candidate]:
    cut = value.rfind("/")
    head, prefix = (value[: cut + 1], value[cut + 1 :]) if cut >= 0 else ("", value)
    try:
        names = list(list_local(resolve_local(head or ".", cwd)))
    except OSError:
        return []
    out = []
    for name, is_dir in _matches(names, prefix, dirs_only):
        word = head + name + ("/" if is_dir else "")
        out.append(Candidate(_requote(raw, word, is_dir), start, name + ("/" if is_dir else "")))
    return out

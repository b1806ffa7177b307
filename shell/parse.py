"""Command-line parsing for the shell, sans-I/O: a quoting-aware lexer and the
command table.

The lexer follows POSIX shell quoting, the part people type: whitespace separates
words; ``'...'`` is literal; ``"..."`` is literal except ``\\"`` and ``\\\\``; a
backslash outside quotes escapes the next character; quoted and unquoted pieces
join into one word (``'my dir'/a`` is ``my dir/a``). It also lexes an unfinished
line (an open quote, a trailing backslash), which completion needs; parsing such
a line is a :class:`~shell.errors.UsageError`.

:func:`parse_line` turns a line into an :class:`Invocation` (command name, flags,
option values, positional words) checked against :data:`COMMANDS`: unknown
commands and options, missing or extra arguments and bad choices are refused with
a one-line message. Nothing here touches the node, the terminal or the disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from .errors import UsageError


# -- lexer -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Token:
    """One word: its value after quote removal, where it starts and ends in the line,
    the quote still open at its end (``""`` if none) and whether it ends in a lone
    backslash."""

    value: str
    start: int
    end: int
    open_quote: str = ""
    dangling_escape: bool = False

    @property
    def complete(self) -> bool:
        return not self.open_quote and not self.dangling_escape


def tokenize(line: str) -> list[Token]:
    """Split ``line`` into words (never raises; see :class:`Token`)."""
    tokens: list[Token] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        start = i
        buf: list[str] = []
        quote = ""
        escape = False
        while i < n:
            c = line[i]
            if escape:
                buf.append(c)
                escape = False
            elif quote == "'":
                if c == "'":
                    quote = ""
                else:
                    buf.append(c)
            elif quote == '"':
                if c == '"':
                    quote = ""
                elif c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    buf.append(line[i + 1])
                    i += 1
                elif c == "\\" and i + 1 == n:
                    escape = True
                else:
                    buf.append(c)
            elif c in "'\"":
                quote = c
            elif c == "\\":
                escape = True
            elif c.isspace():
                break
            else:
                buf.append(c)
            i += 1
        tokens.append(Token("".join(buf), start, i, quote, escape))
    return tokens


_SAFE: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_~"
)


def quote_word(value: str) -> str:
    """``value`` written so :func:`tokenize` reads it back as one word."""
    if value and all(c in _SAFE or (ord(c) > 127 and c.isprintable()) for c in value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


# -- command table ---------------------------------------------------------------
class ArgKind(Enum):
    """What a positional argument names (completion uses it)."""

    REMOTE = "remote"  # a vdrive path
    REMOTE_OR_CAP = "remote-or-cap"
    REMOTE_DIR = "remote-dir"
    LOCAL = "local"
    LOCAL_DIR = "local-dir"
    CAP = "cap"
    DRIVE = "drive"
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    kind: ArgKind
    optional: bool = False
    repeat: bool = False  # one or more (zero or more if optional)


@dataclass(frozen=True, slots=True)
class Option:
    """``names`` like ``("-l", "--long")``; ``dest`` the key in the invocation;
    ``choices`` non-empty for an option that takes one of them; ``metavar`` for one
    that takes any text, as often as it is given (``Invocation.lists``)."""

    names: tuple[str, ...]
    dest: str
    help: str
    choices: tuple[str, ...] = ()
    metavar: str = ""

    @property
    def takes_value(self) -> bool:
        return bool(self.choices or self.metavar)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    summary: str
    args: tuple[Arg, ...] = ()
    options: tuple[Option, ...] = ()
    aliases: tuple[str, ...] = ()
    details: str = ""

    @property
    def usage(self) -> str:
        parts = [self.name]
        for o in self.options:
            flag = o.names[0] + (" " + ("|".join(o.choices) or o.metavar) if o.takes_value else "")
            parts.append(f"[{flag}]")
        for a in self.args:
            word = a.name + ("..." if a.repeat else "")
            parts.append(f"[{word}]" if a.optional else word)
        return " ".join(parts)

    def option(self, word: str) -> Option | None:
        for o in self.options:
            if word in o.names:
                return o
        return None


_R, _RC, _RD = ArgKind.REMOTE, ArgKind.REMOTE_OR_CAP, ArgKind.REMOTE_DIR
_L, _LD = ArgKind.LOCAL, ArgKind.LOCAL_DIR
_LONG = Option(("-l", "--long"), "long", "kind, size, time")
_MODE = Option(
    ("--mode",),
    "mode",
    "encryption key: convergent (same file, same cap) or random",
    ("convergent", "random"),
)

COMMAND_LIST: Final[tuple[CommandSpec, ...]] = (
    CommandSpec(
        "ls",
        "list a remote directory",
        (Arg("PATH", _R, optional=True),),
        (_LONG,),
        aliases=("dir",),
        details="Directories end in '/'. Long listings page when they fill the screen.",
    ),
    CommandSpec(
        "cd",
        "change the remote directory",
        (Arg("PATH", _RD, optional=True),),
        (),
        details="Without PATH: the drive's root. 'cd -': the previous directory. "
        "'cd private:/' switches drive. 'cd CAP' (or CAP/dir) enters a live directory "
        "(its write or read cap): a drive of its own, shown as live:... in the prompt.",
    ),
    CommandSpec("pwd", "show the remote directory"),
    CommandSpec(
        "drive",
        "show or switch the drive (shared, private, or a live directory's live:...)",
        (Arg("DRIVE", ArgKind.DRIVE, optional=True),),
        details="Each drive remembers its own current directory.",
    ),
    CommandSpec(
        "mkdir",
        "make remote directories (or a new live directory)",
        (Arg("PATH", _RD, optional=True, repeat=True),),
        (
            Option(("-p", "--parents"), "parents", "make parents; ok if it exists"),
            Option(("--live",), "live", "a new live directory: prints its write and read caps"),
        ),
        details="'mkdir --live' makes a live directory, a drive of its own shared by "
        "its caps (keep the write cap: it is the key to change it); enter it with 'cd CAP'.",
    ),
    CommandSpec(
        "put",
        "upload a local file (or a mutable file's new version)",
        (Arg("LOCAL", _L), Arg("REMOTE|WRITECAP", _R, optional=True)),
        (
            Option(("-n", "--no-replace"), "no_replace", "fail if REMOTE exists"),
            _MODE,
            Option(("--mutable",), "mutable", "a new mutable file: prints its write and read caps"),
            Option(
                ("--expect-sequence",),
                "expect_sequence",
                "with WRITECAP: publish only if the latest version is N",
                metavar="N",
            ),
        ),
        details="REMOTE defaults to the file's name in the current directory; a "
        "directory puts the file inside it. Ctrl-C cancels (nothing is linked). "
        "'put --mutable LOCAL' makes a mutable file (not linked in a drive; keep its write "
        "cap: it is the key to change it); 'put LOCAL WRITECAP' publishes its next version.",
    ),
    CommandSpec(
        "get",
        "download a remote file (path, or a read or write cap)",
        (Arg("REMOTE", _RC), Arg("LOCAL", _L, optional=True)),
        (Option(("-f", "--force"), "force", "replace an existing local file"),),
        details="LOCAL defaults to the remote name in the local directory (see lcd); a "
        "directory gets the file inside it. An existing file is kept unless -f. "
        "Ctrl-C cancels (no partial file is left).",
    ),
    CommandSpec(
        "cat",
        "print a remote file (path or cap)",
        (Arg("REMOTE", _RC),),
        details="For text files up to 1 MiB; use get for others.",
    ),
    CommandSpec(
        "rm",
        "remove remote names (the files stay in the grid)",
        (Arg("PATH", _R, repeat=True),),
        (Option(("-r", "--recursive"), "recursive", "remove non-empty directories"),),
    ),
    CommandSpec(
        "mv",
        "rename or move a remote entry",
        (Arg("SRC", _R), Arg("DST", _R)),
        (Option(("-f", "--force"), "force", "replace an existing file at DST"),),
        details="A directory DST moves SRC inside it. Between drives, files are linked "
        "there and unlinked here.",
    ),
    CommandSpec(
        "ln",
        "link a cap at a remote path",
        (Arg("CAP", ArgKind.CAP), Arg("PATH", _R)),
        (Option(("-f", "--force"), "force", "replace an existing file at PATH"),),
    ),
    CommandSpec(
        "info",
        "size, caps and where the shares are",
        (Arg("PATH|CAP", _RC),),
        details="Shows the read cap: it is a secret, share it only on purpose. Of a "
        "mutable cap: the latest version, when it was published, and who holds the root.",
    ),
    CommandSpec(
        "check",
        "check a file's health",
        (Arg("PATH|CAP", _RC),),
        (
            Option(("--verify",), "verify", "read and verify every share byte"),
            Option(("--repair",), "repair", "regenerate missing or bad shares"),
            Option(("--deep",), "deep", "every file below a directory (e.g. shared:/)"),
        ),
        details="A mutable cap (write, read or verify) checks who holds its root and the "
        "latest version's shares.",
    ),
    CommandSpec("verify", "check every byte of every share", (Arg("PATH|CAP", _RC),)),
    CommandSpec(
        "repair",
        "check a file and regenerate missing shares",
        (Arg("PATH|CAP", _RC),),
        (Option(("--verify",), "verify", "also verify every share byte"),),
    ),
    CommandSpec(
        "pin",
        "keep a file alive from this node (renew its lease)",
        (Arg("PATH|CAP", _RC),),
        details="The file outlives its uploader while pinned here; `unpin` stops that.",
    ),
    CommandSpec("unpin", "stop keeping a pinned file alive", (Arg("PATH|CAP", _RC),)),
    CommandSpec("pins", "the files this node keeps alive by pin"),
    CommandSpec("peers", "the peers the node knows"),
    CommandSpec("status", "the node's status"),
    CommandSpec("bootstrap", "this grid's bootstrap list, to share with people who join"),
    CommandSpec(
        "backup",
        "snapshot a local folder into REMOTE/Archives/<time> and REMOTE/Latest",
        (Arg("LOCAL", _LD), Arg("REMOTE", _RD)),
        (
            Option(("--exclude",), "exclude", "leave out matching names or paths", metavar="GLOB"),
            Option(("--exclude-from",), "exclude_from", "patterns from a file", metavar="FILE"),
            Option(("-n", "--dry-run"), "dry_run", "say what would be uploaded; change nothing"),
            Option(("-v", "--verbose"), "verbose", "name every file"),
            Option(("-j", "--jobs"), "jobs", "upload up to N files at once (4)", metavar="N"),
            Option(("--check-all",), "check_all", "check every unchanged file in the grid now"),
            Option(("--no-check",), "no_check", "check no unchanged file in the grid"),
        ),
        details="Unchanged files are not read again (the node's backup database). "
        "Symlinks and special files are skipped; failures are listed at the end.",
    ),
    CommandSpec(
        "restore",
        "bring a snapshot (or any remote folder) back to a local folder",
        (Arg("REMOTE", _RD), Arg("LOCAL", _L)),
        (
            Option(("-f", "--force"), "force", "restore into a non-empty folder, replacing files"),
            Option(("-j", "--jobs"), "jobs", "download up to N files at once (4)", metavar="N"),
        ),
    ),
    CommandSpec(
        "help",
        "list commands, or explain one",
        (Arg("CMD", ArgKind.COMMAND, optional=True),),
        aliases=("?",),
    ),
    CommandSpec("clear", "clear the screen (also Ctrl-L)"),
    CommandSpec("exit", "leave the shell (also Ctrl-D)", aliases=("quit",)),
    CommandSpec("lls", "list a local directory", (Arg("PATH", _L, optional=True),), (_LONG,)),
    CommandSpec(
        "lcd",
        "change the local directory",
        (Arg("PATH", _LD, optional=True),),
        details="Without PATH: your home directory.",
    ),
    CommandSpec("lpwd", "show the local directory"),
)

COMMANDS: Final[Mapping[str, CommandSpec]] = {c.name: c for c in COMMAND_LIST}
ALIASES: Final[Mapping[str, str]] = {a: c.name for c in COMMAND_LIST for a in c.aliases}


def command_names() -> list[str]:
    """Every name completion offers (commands, then aliases)."""
    return [c.name for c in COMMAND_LIST] + sorted(ALIASES)


def lookup(name: str) -> CommandSpec | None:
    return COMMANDS.get(ALIASES.get(name, name))


@dataclass(frozen=True, slots=True)
class Invocation:
    """A parsed, checked command line."""

    command: str
    args: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()
    values: Mapping[str, str] = field(default_factory=dict)
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def flag(self, dest: str) -> bool:
        return dest in self.flags


def parse_line(line: str) -> Invocation | None:
    """Parse one line; ``None`` for a blank line. Raises :class:`UsageError`."""
    tokens = tokenize(line)
    if not tokens:
        return None
    if any(not t.complete for t in tokens):
        last = tokens[-1]
        what = f"unclosed {last.open_quote} quote" if last.open_quote else "trailing backslash"
        raise UsageError(f"{what} in the command line")
    words = [t.value for t in tokens]
    return parse_words(words)


def parse_words(words: list[str]) -> Invocation:
    name = words[0]
    spec = lookup(name)
    if spec is None:
        raise UsageError(f"unknown command {name!r} (type 'help' for the list)")
    flags: set[str] = set()
    values: dict[str, str] = {}
    lists: dict[str, tuple[str, ...]] = {}
    positional: list[str] = []
    rest = iter(words[1:])
    only_positional = False
    for word in rest:
        if only_positional or word == "-" or not word.startswith("-"):
            positional.append(word)
            continue
        if word == "--":
            only_positional = True
            continue
        key, eq, inline = word.partition("=")
        opt = spec.option(key if word.startswith("--") else word)
        if opt is None and not word.startswith("--") and len(word) > 2:
            # combined short flags: -lr
            for ch in word[1:]:
                single = spec.option("-" + ch)
                if single is None or single.takes_value:
                    raise UsageError(f"{spec.name}: unknown option {word!r}", spec.name)
                flags.add(single.dest)
            continue
        if opt is None:
            raise UsageError(f"{spec.name}: unknown option {word!r}", spec.name)
        if not opt.takes_value:
            if eq:
                raise UsageError(f"{spec.name}: {key} takes no value", spec.name)
            flags.add(opt.dest)
            continue
        value = inline if eq else next(rest, None)
        if value is None:
            raise UsageError(f"{spec.name}: {key} needs a value", spec.name)
        if opt.metavar:
            lists[opt.dest] = (*lists.get(opt.dest, ()), value)
            continue
        if value not in opt.choices:
            raise UsageError(
                f"{spec.name}: {key} must be one of {', '.join(opt.choices)}", spec.name
            )
        values[opt.dest] = value
    _check_count(spec, positional)
    return Invocation(spec.name, tuple(positional), frozenset(flags), values, lists)


def _check_count(spec: CommandSpec, positional: list[str]) -> None:
    least = sum(1 for a in spec.args if not a.optional)
    most = None if any(a.repeat for a in spec.args) else len(spec.args)
    if len(positional) < least:
        missing = [a.name for a in spec.args if not a.optional][len(positional) :]
        raise UsageError(
            f"{spec.name}: missing {' '.join(missing)} (usage: {spec.usage})", spec.name
        )
    if most is not None and len(positional) > most:
        raise UsageError(f"{spec.name}: too many arguments (usage: {spec.usage})", spec.name)


def arg_for(spec: CommandSpec, index: int) -> Arg | None:
    """The argument spec of the ``index``-th positional word (repeats extend)."""
    if index < len(spec.args):
        return spec.args[index]
    if spec.args and spec.args[-1].repeat:
        return spec.args[-1]
    return None

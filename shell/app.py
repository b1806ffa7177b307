"""``p2pstore shell``: the prompt_toolkit loop around :class:`shell.commands.Shell`.

This module owns the terminal: the prompt (with history at
:func:`history_path`, auto-suggestion from history, threaded Tab completion of
commands and remote/local paths), the output (a "-- more --" pager for listings
longer than the screen, the progress line redrawn in place) and Ctrl-C/Ctrl-D at
the prompt. Everything else (parsing, commands, completion logic) is sans-terminal
and tested directly.

When stdin is not a terminal the shell reads one command per line from it, with
no prompt, pager or progress line (for scripts: ``p2pstore shell < cmds``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import (
    CompleteEvent,
    Completer,
    Completion,
    ThreadedCompleter,
)
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory

from p2pstore.api_client import ClientError, NodeClient, resolve_node_dir
from p2pstore.base.reports import safe

from . import render
from .commands import Shell
from .completion import complete
from .session import Connection, ShellState

ENV_HISTORY = "P2PSTORE_SHELL_HISTORY"


def history_path(env: dict[str, str] | None = None, home: Path | None = None) -> Path:
    """``$P2PSTORE_SHELL_HISTORY``, else ``$XDG_DATA_HOME/p2pstore/shell_history``
    (default ``~/.local/share/p2pstore/shell_history``)."""
    env = dict(os.environ) if env is None else env
    if env.get(ENV_HISTORY):
        return Path(env[ENV_HISTORY]).expanduser()
    home = Path.home() if home is None else home
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "p2pstore" / "shell_history"


def _open_history(path: Path) -> FileHistory | None:
    """The history file, made private (lines may hold caps); None if impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        return FileHistory(str(path))
    except OSError:
        return None


class TerminalOutput:
    """Writes to a terminal (or a pipe: then no pager and no progress line)."""

    def __init__(self, stream: TextIO | None = None, keys: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.keys = keys or sys.stdin
        self.tty = self.stream.isatty()
        self._progress_drawn = False

    @property
    def width(self) -> int:
        return shutil.get_terminal_size((80, 24)).columns

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Clear the screen and home the cursor (a terminal only; a pipe gets nothing)."""
        if self.tty:
            self.stream.write("\x1b[H\x1b[2J")
            self.stream.flush()

    def lines(self, lines: list[str], *, page: bool = False) -> None:
        height = shutil.get_terminal_size((80, 24)).lines
        if not (page and self.tty and self.keys.isatty()) or len(lines) < height:
            for text in lines:
                self.stream.write(text + "\n")
            self.stream.flush()
            return
        pages = render.paginate(lines, height)
        for i, chunk in enumerate(pages):
            for text in chunk:
                self.stream.write(text + "\n")
            if i + 1 < len(pages) and not self._more(i + 1, len(pages)):
                break
        self.stream.flush()

    def _more(self, shown: int, total: int) -> bool:
        """Ask to go on; True to show the next page."""
        self.stream.write(f"-- more -- ({shown}/{total}; Space/Enter: next page, q: quit)")
        self.stream.flush()
        try:
            key = _read_key(self.keys)
        finally:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        return key not in ("q", "Q", "\x1b")

    def progress(self, text: str) -> None:
        if not self.tty:
            return
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self._progress_drawn = True

    def progress_done(self) -> None:
        if self._progress_drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._progress_drawn = False


def _read_key(keys: TextIO) -> str:
    import termios
    import tty

    fd = keys.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        return os.read(fd, 1).decode("utf-8", "replace")
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


class ShellCompleter(Completer):
    """prompt_toolkit adapter over :func:`shell.completion.complete`."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        st = self.shell.state
        for c in complete(
            document.text_before_cursor,
            cwd=st.cwd,
            local_cwd=st.local_cwd,
            list_remote=self.shell.listing,
        ):
            yield Completion(c.text, start_position=c.start, display=c.display)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p2pstore shell", description="An interactive shell on a running node."
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node",
        metavar="DIR",
        help="node directory (default: $P2PSTORE_NODE, else ~/.local/share/p2pstore/node)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of failed commands")


def run(node: str | None, debug: bool) -> int:
    node_dir = resolve_node_dir(node)
    conn = Connection(lambda: NodeClient.for_node(node_dir), name=node_dir.name, node_dir=node_dir)
    out = TerminalOutput()
    shell = Shell(conn, out, ShellState(Path.cwd()), debug=debug)
    try:
        conn.client()
    except ClientError as e:  # the shell still opens; each command tries again
        out.line(render.error_line(e))
    if not sys.stdin.isatty():
        for line in sys.stdin:
            if not shell.run_line(line.rstrip("\n")):
                break
        return 0
    out.line(f"p2pstore shell on {safe(conn.name)}: type 'help' for commands, Ctrl-D exits")
    session: PromptSession[str] = PromptSession(
        history=_open_history(history_path()),
        auto_suggest=AutoSuggestFromHistory(),
        completer=ThreadedCompleter(ShellCompleter(shell)),
        complete_while_typing=False,
    )
    while True:
        try:
            line = session.prompt(shell.prompt)
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt clears the line
        except EOFError:
            break
        if not shell.run_line(line):
            break
    with contextlib.suppress(OSError):
        out.line("bye")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.node, args.debug)
